"""Geometry on hand-computed cases: crop boxes, orientation, clipping and every mode."""

import pytest
from arkindex_worker.image import revert_orientation
from arkindex_worker.models import Element
from PIL import Image
from shapely.geometry import Polygon

from worker_yolo_training.config import Mode
from worker_yolo_training.geometry import (
    Box,
    Frame,
    Label,
    Skip,
    crop_box,
    label_line,
    object_label,
    object_labels,
)
from worker_yolo_training.images import orient


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
    assert label.dropped_parts == 0


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
# right triangle (48,48) (60,60) (60,40), area 120.
BOW_TIE = [[0, 0], [60, 60], [60, 40], [0, 80]]
LARGEST_PART = {
    Mode.Segment: {(0.0, 0.0), (0.48, 0.48), (0.0, 0.8)},
    Mode.BBox: {(0.24, 0.4), (0.48, 0.8)},
}


@pytest.mark.parametrize("mode", list(Mode))
def test_self_intersecting_polygon_keeps_its_largest_part_in_every_mode(mode):
    label = object_label(BOW_TIE, Frame(Box(0, 0, 100, 100)), mode)
    assert label.dropped_parts == 1
    if mode is Mode.OBB:
        # the minimum rotated rectangle of the left triangle has twice its area
        assert Polygon(
            list(zip(label.coordinates[0::2], label.coordinates[1::2], strict=False))
        ).area == (pytest.approx(2 * 0.1920, abs=1e-4))
    else:
        assert points(label) == LARGEST_PART[mode]


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
