"""Geometry on hand-computed cases: crop boxes, orientation, clipping and every mode."""

import numpy as np
import pytest
import shapely
from arkindex_worker.image import revert_orientation
from arkindex_worker.models import Element
from PIL import Image, ImageDraw
from shapely import make_valid
from shapely.geometry import MultiPolygon, Polygon

from worker_yolo_training.core import (
    Box,
    Frame,
    Label,
    Mode,
    Skip,
    crop_box,
    label_line,
    object_label,
    object_labels,
    oriented_labels,
    pages_labels,
    simple_rings,
)
from worker_yolo_training.images import orient

# The modes whose labels are objects (classify labels whole elements)
DETECTION_MODES = (Mode.Segment, Mode.BBox, Mode.OBB)


def rect(x, y, w, h):
    return [[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]


def points(label: Label) -> set[tuple[float, float]]:
    values = label.coordinates
    return {(round(values[i], 6), round(values[i + 1], 6)) for i in range(0, len(values), 2)}


def test_crop_box_grows_fractional_bounds_and_clamps_to_the_image():
    assert crop_box(rect(10.4, 20.6, 100, 50), 1000, 1000) == Box(10, 20, 101, 51)
    assert crop_box(rect(-5, -5, 50, 50), 30, 40) == Box(0, 0, 30, 40)
    assert crop_box(rect(200, 200, 10, 10), 100, 100) is None


def test_segment_label_is_relative_to_a_crop_with_offset():
    frame = Frame(Box(100, 50, 200, 100))
    label = object_label(rect(120, 60, 100, 50), frame, Mode.Segment)
    # x: (120-100)/200 = 0.1 .. (220-100)/200 = 0.6 ; y: (60-50)/100 = 0.1 .. 0.6
    assert points(label) == {(0.1, 0.1), (0.6, 0.1), (0.6, 0.6), (0.1, 0.6)}
    assert label.parts == 1


def test_bbox_of_an_object_crossing_the_crop_edge_is_clipped_inside_the_image():
    frame = Frame(Box(100, 50, 200, 100))
    label = object_label(rect(250, 120, 100, 100), frame, Mode.BBox)
    # clipped to x 150..200, y 70..100 in crop pixels: centre (175, 85), size (50, 30)
    assert label.coordinates == pytest.approx((0.875, 0.85, 0.25, 0.3))
    cx, cy, w, h = label.coordinates
    assert cx - w / 2 >= 0 and cx + w / 2 <= 1 and cy - h / 2 >= 0 and cy + h / 2 <= 1


def test_obb_of_a_diamond_is_the_diamond():
    frame = Frame(Box(0, 0, 100, 100))
    diamond = [[50, 10], [90, 50], [50, 90], [10, 50]]
    label = object_label(diamond, frame, Mode.OBB)
    assert points(label) == {(0.5, 0.1), (0.9, 0.5), (0.5, 0.9), (0.1, 0.5)}


def test_object_wholly_outside_the_crop_is_skipped():
    frame = Frame(Box(0, 0, 100, 100))
    assert object_label(rect(150, 150, 10, 10), frame, Mode.Segment) is Skip.OutsideCrop


@pytest.mark.parametrize(
    "polygon",
    [rect(10, 10, 0, 20), [[1, 1], [5, 5], [9, 9]], [[1, 1], [2, 2]], []],
    ids=["zero-width", "collinear", "two-points", "empty"],
)
def test_zero_area_polygons_are_degenerate(polygon):
    assert object_label(polygon, Frame(Box(0, 0, 100, 100)), Mode.Segment) is Skip.Degenerate


# A bow tie whose edges cross at (48, 48): left triangle (0,0) (48,48) (0,80), area 1920;
# right triangle (48,48) (60,60) (60,40), area 120. Together: x 0..60, y 0..80, and their convex
# hull (0,0) (60,40) (60,60) (0,80) has its smallest rectangle upright (60×80 = 4800, against
# 5280 and 5538 along its slanted edges).
BOW_TIE = [[0, 0], [60, 60], [60, 40], [0, 80]]
BOW_TIE_PARTS = [[(0, 0), (48, 48), (0, 80)], [(48, 48), (60, 60), (60, 40)]]
# A U whose base is above a 100×100 crop: the crop edge cuts it into its two arms, x 10..30 ×
# y 0..40 (800) and x 70..90 × y 0..50 (1000). Together: x 10..90, y 0..50; their hull's smallest
# rectangle is upright (80×50).
U_SHAPE = [[10, -20], [90, -20], [90, 50], [70, 50], [70, -10], [30, -10], [30, 40], [10, 40]]
U_PARTS = [[(10, 0), (30, 0), (30, 40), (10, 40)], [(70, 0), (90, 0), (90, 50), (70, 50)]]
MULTI_PART = {
    "bow-tie": (
        BOW_TIE,
        BOW_TIE_PARTS,
        {
            Mode.BBox: (0.3, 0.4, 0.6, 0.8),
            Mode.OBB: {(0.0, 0.0), (0.6, 0.0), (0.6, 0.8), (0.0, 0.8)},
        },
    ),
    "crop-cut": (
        U_SHAPE,
        U_PARTS,
        {
            Mode.BBox: (0.5, 0.25, 0.8, 0.5),
            Mode.OBB: {(0.1, 0.0), (0.9, 0.0), (0.9, 0.5), (0.1, 0.5)},
        },
    ),
}


def normalised(parts, size=100):
    return [[(x / size, y / size) for x, y in part] for part in parts]


@pytest.mark.parametrize("mode", DETECTION_MODES)
@pytest.mark.parametrize("case", list(MULTI_PART))
def test_an_object_with_several_parts_is_one_label_covering_every_part(case, mode):
    polygon, parts, expected = MULTI_PART[case]
    label = object_label(polygon, Frame(Box(0, 0, 100, 100)), mode)
    assert label.parts == 2
    if mode is Mode.BBox:
        assert label.coordinates == pytest.approx(expected[mode])
    elif mode is Mode.OBB:
        assert points(label) == expected[mode]
    else:
        # one ring through the vertices of every part, and of nothing else
        assert points(label) == {point for part in normalised(parts) for point in part}
        ring = list(zip(label.coordinates[0::2], label.coordinates[1::2], strict=True))
        whole = make_valid(Polygon(ring))
        union = MultiPolygon([Polygon(part) for part in normalised(parts)])
        # the parts joined by zero-width cuts: exactly the parts' area, and no more
        assert whole.area == pytest.approx(union.area)
        assert whole.symmetric_difference(union).area == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize("case", list(MULTI_PART))
def test_the_mask_ultralytics_draws_for_a_joined_segment_covers_every_part(case):
    from ultralytics.data.utils import polygon2mask

    polygon, parts, _ = MULTI_PART[case]
    label = object_label(polygon, Frame(Box(0, 0, 100, 100)), Mode.Segment)
    ring = np.array(label.coordinates).reshape(-1, 2) * 100
    mask = polygon2mask((100, 100), [ring.reshape(-1)], color=1, downsample_ratio=1)
    expected = np.zeros((100, 100), dtype=np.uint8)
    for part in parts:
        drawn = Image.new("L", (100, 100))
        ImageDraw.Draw(drawn).polygon(part, fill=1)
        expected |= np.asarray(drawn)
    # every pixel of every part is in the mask; outside them only the cuts' pixels (one thin line)
    assert (mask[expected == 1] == 1).all()
    assert (mask & ~expected.astype(bool)).sum() <= 100


def test_float_coordinates_with_fractional_page_offset_stay_exact():
    page = rect(10.5, 20.25, 300, 200)
    crop = crop_box(page, 1000, 1000)  # Box(10, 20, 301, 201)
    label = object_label(rect(60.75, 70.5, 100.5, 30.25), Frame(crop), Mode.Segment)
    assert points(label) == {
        (round(50.75 / 301, 6), round(50.5 / 201, 6)),
        (round(151.25 / 301, 6), round(50.5 / 201, 6)),
        (round(151.25 / 301, 6), round(80.75 / 201, 6)),
        (round(50.75 / 301, 6), round(80.75 / 201, 6)),
    }


# A 200×100 crop at (0, 0); the object is its 20×10 top-left corner.
ORIENTED = {
    # angle, mirrored → expected corner in the oriented frame, normalised
    (0, False): {(0.0, 0.0), (0.1, 0.0), (0.1, 0.1), (0.0, 0.1)},
    (90, False): {(0.9, 0.0), (1.0, 0.0), (1.0, 0.1), (0.9, 0.1)},  # frame 100×200
    (180, False): {(0.9, 0.9), (1.0, 0.9), (1.0, 1.0), (0.9, 1.0)},
    (270, False): {(0.0, 0.9), (0.1, 0.9), (0.1, 1.0), (0.0, 1.0)},  # frame 100×200
    (0, True): {(0.9, 0.0), (1.0, 0.0), (1.0, 0.1), (0.9, 0.1)},
    (90, True): {(0.9, 0.9), (1.0, 0.9), (1.0, 1.0), (0.9, 1.0)},
}


@pytest.mark.parametrize(("angle", "mirrored"), list(ORIENTED))
def test_orientation_on_hand_computed_corners(angle, mirrored):
    frame = Frame(Box(0, 0, 200, 100), angle, mirrored)
    assert frame.size == ((100, 200) if angle % 180 else (200, 100))
    assert (
        points(object_label(rect(0, 0, 20, 10), frame, Mode.Segment)) == ORIENTED[angle, mirrored]
    )


@pytest.mark.parametrize(
    ("angle", "mirrored"), [(0, False), (90, False), (180, True), (270, False), (30, False)]
)
def test_orientation_matches_the_pixels_pillow_produces(angle, mirrored):
    """The labels and the image are oriented by two code paths: they must agree."""
    frame = Frame(Box(40, 30, 200, 100), angle, mirrored)
    image = Image.new("L", (200, 100), 0)
    image.paste(255, (20, 10, 60, 30))  # the object, in crop pixels
    oriented = orient(image, frame)
    assert oriented.size == frame.size
    label = object_label(rect(60, 40, 40, 20), frame, Mode.BBox)
    cx, cy, w, h = label.coordinates
    width, height = frame.size
    x0, y0, x1, y1 = oriented.point(lambda v: 255 if v > 127 else 0).getbbox()
    assert abs(x0 - (cx - w / 2) * width) <= 1.5 and abs(x1 - (cx + w / 2) * width) <= 1.5
    assert abs(y0 - (cy - h / 2) * height) <= 1.5 and abs(y1 - (cy + h / 2) * height) <= 1.5


@pytest.mark.parametrize(("angle", "mirrored"), [(90, False), (180, False), (270, True), (0, True)])
def test_orientation_agrees_with_base_worker_revert_orientation(angle, mirrored):
    page = rect(40, 30, 200, 100)
    element = Element(id="page", rotation_angle=angle, mirrored=mirrored, zone={"polygon": page})
    child = rect(60, 40, 40, 20)
    expected = revert_orientation(element, child, reverse=True)
    frame = Frame(Box(40, 30, 200, 100), angle, mirrored)
    ours = frame.orient(Polygon(child))
    assert ours.symmetric_difference(Polygon(expected)).area <= 0.02 * Polygon(child).area + 80


def test_label_line_format():
    assert label_line(2, Label((0.1, 0.25, 1.0, 0.0))) == "2 0.100000 0.250000 1.000000 0.000000"


@pytest.mark.parametrize(
    "polygon",
    [
        [[1, 1], [None, 2], [3, 3]],
        [[1, 1], ["a", 2], [3, 3]],
        [[1, 1], [float("nan"), 2], [5, 9]],
        "oops",
    ],
    ids=["null", "text", "nan", "not-a-list"],
)
def test_malformed_polygons_are_skipped_not_fatal(polygon):
    assert object_label(polygon, Frame(Box(0, 0, 100, 100)), Mode.Segment) is Skip.Malformed


def test_objects_of_a_page_are_labelled_together_in_order():
    frame = Frame(Box(0, 0, 100, 100))
    labels = object_labels(
        [rect(10, 10, 10, 10), [[1, 1], [2, 2]], rect(200, 200, 5, 5), rect(50, 50, 50, 50)],
        frame,
        Mode.BBox,
    )
    assert labels[0].coordinates == pytest.approx((0.15, 0.15, 0.1, 0.1))
    assert labels[1:3] == [Skip.Degenerate, Skip.OutsideCrop]
    assert labels[3].coordinates == pytest.approx((0.75, 0.75, 0.5, 0.5))


@pytest.mark.parametrize("mode", DETECTION_MODES)
@pytest.mark.parametrize(("angle", "mirrored"), [(0, False), (90, True), (180, False), (33, True)])
def test_a_page_of_well_formed_objects_gets_the_labels_of_the_one_by_one_path(
    mode, angle, mirrored
):
    # Pages whose objects are all lists of [x, y] numbers are labelled with numpy in one go; any
    # other page object by object: both must give the same floats (labels, truth, summaries are
    # byte-identical whichever path a page takes). A malformed object sends a page one by one.
    rng = np.random.default_rng(7)
    frame = Frame(Box(40, 30, 300, 200), angle, mirrored)
    polygons = [
        rect(60.25, 50.5, 100, 20),  # inside, closed
        [[100, 80], [200, 80], [200, 120]],  # inside, open, integers
        rect(20, 20, 100, 50),  # cut by the crop
        [[50, 50], [150, 150], [150, 50], [50, 150], [50, 50]],  # bow-tie
        [[500, 500], [600, 500], [600, 600]],  # outside
        [[60, 60], [70, 70], [80, 80]],  # no area
        [[True, 40], [90, 40.5], [90, 90]],  # a boolean is a number, as in Python
        *(rng.uniform(0, 400, size=(int(rng.integers(3, 9)), 2)).tolist() for _ in range(40)),
    ]
    together, points = oriented_labels(polygons, frame, mode)
    *one_by_one, malformed = object_labels([*polygons, "oops"], frame, mode)
    assert malformed is Skip.Malformed
    assert together == one_by_one
    for label, object_points, polygon in zip(together, points, polygons, strict=True):
        if isinstance(label, Label):
            assert [tuple(xy) for xy in object_points] == frame.orient_points(polygon)


@pytest.mark.parametrize("mode", DETECTION_MODES)
def test_pages_labelled_together_get_the_labels_of_each_page_alone(mode):
    # A chunk's pages go through numpy and shapely together, each object in its own page's frame
    # (size, rotation, mirror): the same labels and points as each page alone. A page with a
    # malformed object, or none, does not change the others'.
    rng = np.random.default_rng(11)
    pages = []
    for index in range(12):
        width, height = (int(value) for value in rng.integers(50, 400, 2))
        frame = Frame(
            Box(int(rng.integers(0, 50)), 7, width, height), 90 * (index % 4), index % 3 == 0
        )
        polygons = [
            rng.uniform(-20, 450, size=(int(rng.integers(3, 7)), 2)).tolist() for _ in range(15)
        ]
        polygons += [rect(10, 10, 30, 5), [[30, 30], [40, 30], [40, 40]]]
        pages.append((polygons, frame))
    pages[3] = ([*pages[3][0], "oops"], pages[3][1])
    pages[5] = ([], pages[5][1])
    together = pages_labels(pages, mode)
    alone = [oriented_labels(polygons, frame, mode) for polygons, frame in pages]
    assert together == alone
    assert together[3][0][-1] is Skip.Malformed and together[5] == ([], [])
    assert all(isinstance(label, Label) for label in together[0][0][-2:])


def test_trivially_simple_rings_are_valid_polygons_with_an_area():
    # What skips GEOS must never let through a polygon GEOS finds invalid or empty: random
    # triangles and quadrilaterals (many bow-ties), near-collinear, repeated and closed ones
    rng = np.random.default_rng(3)
    rings = [rng.uniform(0, 10, size=(int(rng.integers(3, 5)), 2)) for _ in range(3000)]
    rings += [np.round(ring) for ring in rings[:1000]]  # integer points: collinear, repeated
    rings += [np.vstack([ring, ring[:1]]) for ring in rings[:1000]]  # closed
    rings += [
        np.array([[0, 0], [1, 1e-12], [2, 0]]),  # flat triangle
        np.array([[0, 0], [4, 0], [4, 4], [2, 2 + 1e-13]]),  # a corner barely turning
        np.array([[0, 0], [4, 0], [4, 0], [0, 4]]),  # a repeated point
        np.array([[0, 0], [4, 0], [0, 4], [4, 4]]),  # bow-tie
    ]
    lengths = np.array([len(ring) for ring in rings])
    points = np.concatenate(rings)
    simple = simple_rings(points, np.cumsum(lengths) - lengths, lengths)
    indices = np.repeat(np.arange(len(rings)), lengths)
    shapes = shapely.polygons(shapely.linearrings(points, indices=indices))
    assert (shapely.is_valid(shapes[simple]) & (shapely.area(shapes[simple]) > 0)).all()
    assert not simple[-4:].any()
    # most convex ones are told without GEOS
    convex = shapely.equals_exact(shapes, shapely.convex_hull(shapes), normalize=True)
    assert simple.sum() > 0.9 * (convex & shapely.is_valid(shapes)).sum() > 1000
