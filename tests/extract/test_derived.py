"""Settings derived from the dataset, on hand-built pages: thin objects, dense pages, nesting, and
the user's `advanced.training_kwargs` winning over each."""

import math
import time

import numpy as np
import pytest
import shapely

from worker_yolo_training.config import TrainingConfig
from worker_yolo_training.core import Label, Mode
from worker_yolo_training.extract import (
    DatasetShape,
    Histogram,
    derive,
    measure_elements,
    sizes_table,
)
from worker_yolo_training.extract.shape import INSIDE_SHARE, PENDING_VALUES


def box(cx, cy, w, h) -> Label:
    return Label((cx, cy, w, h))


def polygon(*points) -> Label:
    return Label(tuple(value for point in points for value in point))


def square(x, y, side, size=1000) -> Label:
    """A square in a size×size image, normalised."""
    x0, y0, x1, y1 = x / size, y / size, (x + side) / size, (y + side) / size
    return polygon((x0, y0), (x1, y0), (x1, y1), (x0, y1))


def thin_lines_page() -> list[tuple[str, Label]]:
    """A 1000×500 page (longest side 1000): 30 lines 2.078 px high at image_size 640, 70 lines
    20 px high, all 320 px wide."""
    lines = []
    for index in range(100):
        pixels = 640 * 4 / (32 * 38.5) if index < 30 else 20.0
        # pixels at 640 → a fraction of the longest side → a fraction of the 500 px height
        lines.append(("text_line", box(0.5, 0.5, 0.5, pixels / 640 * 1000 / 500)))
    return lines


def test_thin_objects_are_reported_with_their_figures_and_the_image_size_that_fits():
    shape = DatasetShape(Mode.BBox, ["text_line"])
    shape.add_element("train", "page", thin_lines_page(), (1000, 500))
    derivation = derive(shape, 640, {})
    figures = shape.figures(640)["sizes"]["train"]["text_line"]
    assert figures["objects"] == 100
    # the 2.078 px lines are the 5th percentile, the 20 px ones the median and the 95th
    assert figures["thickness_px"]["p5"] == pytest.approx(2.078, rel=0.02)
    assert figures["thickness_px"]["p50"] == pytest.approx(20, rel=0.02)
    assert figures["height_px"] == figures["thickness_px"]
    assert figures["width_px"]["p50"] == pytest.approx(320, rel=0.02)
    assert figures["share_under_4_px"] == pytest.approx(0.3, abs=0.01)
    assert "share_under_2_mask_px" not in figures  # bbox mode has no mask
    [warning] = derivation.warnings
    # 90 % above 4 px: 640 × 4 / 2.078 = 1232 = 38.5 × 32, rounded up to a multiple of 32
    assert "30% of the 100 text_line objects of the train split" in warning
    assert "under 4 image pixels thick at image_size 640" in warning
    assert "`image_size` 1248 would bring 90% of them above it" in warning
    assert "Nothing is changed" in warning
    # a warning, not a setting: no argument changes
    assert "imgsz" not in derivation.train
    # at 1248 the same lines are above the limit: no warning
    assert derive(shape, 1248, {}).warnings == []


def test_thin_slanted_lines_are_measured_across_and_checked_in_mask_pixels():
    """A line slanted at 45° has a large box but is 3 px thick: 0.75 mask px at mask_ratio 4."""
    shape = DatasetShape(Mode.Segment, ["text_line"])
    d = 3 / math.sqrt(2) / 640  # a 3 px offset across a 45° line, normalised on a 640 px page
    line = polygon((0.1, 0.2), (0.4, 0.5), (0.4 - d, 0.5 + d), (0.1 - d, 0.2 + d))
    shape.add_element("train", "page", [("text_line", line)] * 10, (640, 640))
    figures = shape.figures(640)["sizes"]["train"]["text_line"]
    assert figures["thickness_px"]["p50"] == pytest.approx(3, rel=0.02)
    assert figures["width_px"]["p50"] == pytest.approx(0.3 * 640 + 3 / math.sqrt(2), rel=0.02)
    assert figures["thickness_mask_px"]["p50"] == pytest.approx(0.75, rel=0.02)
    assert figures["share_under_4_px"] == figures["share_under_2_mask_px"] == 1.0
    image, mask = derive(shape, 640, {}).warnings
    # 640 × 4 / 3 = 853 → 864; in mask pixels 640 × 2 × 4 / 3 = 1707 → 1728, or mask_ratio 1
    assert "under 4 image pixels" in image and "`image_size` 864 would" in image
    assert "under 2 mask pixels (mask_ratio 4)" in mask and "`image_size` 1728 would" in mask
    assert "`advanced.training_kwargs` mask_ratio: 1" in mask
    # the user's mask_ratio is the one checked
    [image_only] = derive(shape, 640, {"mask_ratio": 1}).warnings
    assert "image pixels" in image_only


def test_a_page_of_more_than_300_objects_raises_max_det_to_the_next_hundred():
    shape = DatasetShape(Mode.BBox, ["text_line"])
    shape.add_element("train", "small", [("text_line", box(0.5, 0.5, 0.1, 0.1))] * 20, (100, 100))
    assert derive(shape, 640, {}).val == {"max_det": 300}
    shape.add_element("val", "dense", [("text_line", box(0.5, 0.5, 0.1, 0.1))] * 412, (100, 100))
    derivation = derive(shape, 640, {})
    assert derivation.train == {"max_det": 500}
    assert derivation.val == {"max_det": 500}
    [setting] = derivation.settings
    assert setting.name == "max_det" and setting.value == 500 and not setting.overridden
    assert "element dense holds 412 objects" in setting.evidence
    assert setting.override == "`advanced.training_kwargs` max_det: 500"
    assert shape.figures(640)["densest_element"]["val"] == {"objects": 412, "element": "dense"}


def zone_and_lines() -> list[tuple[str, Label]]:
    return [
        ("main_zone", square(100, 100, 500)),
        # inside the zone
        ("text_line", square(150, 150, 40)),
        ("text_line", square(300, 300, 40)),
        # half inside: not nested
        ("text_line", square(580, 300, 40)),
        # outside
        ("text_line", square(800, 800, 40)),
    ]


def test_nested_classes_switch_overlap_mask_off_with_the_evidence():
    shape = DatasetShape(Mode.Segment, ["main_zone", "text_line"])
    shape.add_element("train", "page", zone_and_lines(), (1000, 1000))
    derivation = derive(shape, 640, {})
    assert derivation.train["overlap_mask"] is False
    assert derivation.val["overlap_mask"] is False
    setting = next(s for s in derivation.settings if s.name == "overlap_mask")
    assert "2 of 4 text_line inside main_zone" in setting.evidence
    assert setting.override == "`advanced.training_kwargs` overlap_mask: false"
    assert shape.figures(640)["nested"] == [
        {"inner": "text_line", "outer": "main_zone", "objects": 2}
    ]


def test_without_nesting_overlap_mask_stays_on_and_only_segment_mode_has_it():
    lines = [entry for entry in zone_and_lines() if entry[0] == "text_line"]
    segment = DatasetShape(Mode.Segment, ["text_line"])
    segment.add_element("train", "page", lines, (1000, 1000))
    assert derive(segment, 640, {}).train["overlap_mask"] is True
    boxes = DatasetShape(Mode.BBox, ["main_zone", "text_line"])
    boxes.add_element("train", "page", [(n, box(0.5, 0.5, 0.2, 0.2)) for n in "ab"], (100, 100))
    assert "overlap_mask" not in derive(boxes, 640, {}).train


def test_training_kwargs_override_every_derived_setting():
    shape = DatasetShape(Mode.Segment, ["main_zone", "text_line"])
    shape.add_element("train", "page", zone_and_lines() * 80, (1000, 1000))
    derived = derive(shape, 640, {})
    assert derived.val == {"max_det": 400, "overlap_mask": False}
    user = {"max_det": 1000, "overlap_mask": True, "lr0": 0.02}
    derivation = derive(shape, 640, user)
    assert derivation.train == user
    assert derivation.val == {"max_det": 1000, "overlap_mask": True}
    for setting in derivation.settings:
        assert setting.overridden and setting.value == user[setting.name]
        assert setting.derived == derived.val[setting.name]
        assert "overridden" in str(setting)
        assert setting.as_dict()["derived"] == derived.val[setting.name]


def test_memory_stays_bounded_and_time_linear_on_100k_objects():
    shape = DatasetShape(Mode.BBox, ["text_line", "zone"])
    page = [("text_line", box(0.5, 0.5, 0.3, 0.01 + i / 10_000)) for i in range(500)]
    start = time.perf_counter()
    for index in range(200):
        shape.add_element("train", f"page{index}", page, (1000, 700))
    elapsed = time.perf_counter() - start
    assert shape.pending_count < PENDING_VALUES  # elements sorted by class in batches
    sizes = shape.sizes["train"]["text_line"]
    assert sizes.pending_count < 20_000  # binned in batches
    sizes.flush()
    assert sizes.thickness.total == 100_000
    # the same fixed bins after 100,000 objects as after one
    assert sizes.thickness.counts.size == Histogram().counts.size
    assert elapsed < 5, elapsed


def test_segment_pages_of_hundreds_of_objects_are_measured_quickly():
    """Crowded elements go through an STRtree: 2 zones and 400 lines in well under a second."""
    objects = [("main_zone", square(0, 0, 1000)), ("margin", square(900, 0, 100))]
    objects += [
        ("text_line", square(20 * (i % 40) + 5, 50 * (i // 40) + 5, 10)) for i in range(400)
    ]
    shape = DatasetShape(Mode.Segment, ["main_zone", "margin", "text_line"])
    start = time.perf_counter()
    shape.add_element("train", "page", objects, (1000, 1000))
    assert time.perf_counter() - start < 1
    assert shape.nested == {("text_line", "main_zone"): 400, ("margin", "main_zone"): 1}


def test_sizes_table_has_a_row_per_split_and_class():
    shape = DatasetShape(Mode.Segment, ["main_zone", "text_line"])
    shape.add_element("train", "page", zone_and_lines(), (1000, 1000))
    shape.add_element("val", "page2", zone_and_lines()[:2], (1000, 1000))
    table = sizes_table(derive(shape, 640, {}).figures).splitlines()
    assert table[0] == (
        "| split | class | objects | thickness px (5/50/95 %) | under 4 px "
        "| thickness mask px (5/50/95 %) | under 2 mask px |"
    )
    # a 40 px square of a 1000 px page is 25.6 px at 640, 6.4 mask px
    assert table[3].startswith("| train | text_line | 4 | 25.")
    assert "| 0.0% | 6." in table[3]
    assert [row.split(" | ")[:2] for row in table[2:]] == [
        ["| train", "main_zone"], ["| train", "text_line"],
        ["| val", "main_zone"], ["| val", "text_line"],
    ]  # fmt: skip


def test_a_dense_page_raises_the_published_max_detection(tmp_path):
    """The derived max_det is what the model version publishes as the segmenter's max_detection."""
    import json

    from worker_yolo_training.core import RunLayout
    from worker_yolo_training.evaluate import ElementEvaluation, Evaluation
    from worker_yolo_training.extract import ExtractedDataset, SplitReport
    from worker_yolo_training.pipeline import RunInputs, model_version

    config = TrainingConfig(class_names=("text_line",), mode=Mode.BBox)
    shape = DatasetShape(config.mode, config.class_names)
    dense = [("text_line", box(0.5, (i + 0.5) / 412, 0.9, 0.5 / 412)) for i in range(412)]
    shape.add_element("train", "dense-page", dense, (640, 640))
    derivation = derive(shape, config.image_size, config.training_kwargs)
    reports = {split: SplitReport(elements=1, images=1) for split in ("train", "val", "test")}
    dataset = ExtractedDataset(tmp_path, tmp_path / "data.yaml", reports, derivation)
    elements = ElementEvaluation({"val": {}}, 0.4, "page table")
    evaluation = Evaluation(tmp_path / "best.pt", {}, "map table", elements)
    inputs = RunInputs(config, (), {})
    version = model_version(inputs, "yolov8m.pt", dataset, evaluation, RunLayout(tmp_path))
    assert version.configuration["max_detection"] == 500 == derivation.val["max_det"]
    assert version.configuration["confidence_threshold"] == 0.4
    assert "dense-page holds 412 objects" in version.description
    written = json.loads((tmp_path / "model_version.json").read_text())
    assert written == {"configuration": version.configuration, "description": version.description}


def test_objects_of_different_elements_are_never_nested():
    # Elements are measured together: a line of one element at the place of another element's
    # zone is not inside it; lines inside their own element's zone are, on every one
    elements = []
    for index in range(50):
        objects = [("main_zone", square(0, 0, 1000))] if index % 2 else []
        objects += [("text_line", square(100 + index, 100, 20))]
        elements.append((objects, (1000, 1000)))
    shape = DatasetShape(Mode.Segment, ["main_zone", "text_line"])
    for index, measured in enumerate(measure_elements(Mode.Segment, elements)):
        assert measured.nested == ({("text_line", "main_zone"): 1} if index % 2 else {})
        shape.add_shape("train", f"page{index}", measured)
    assert shape.nested == {("text_line", "main_zone"): 25}


def random_convex_rings(rng, count: int) -> list[np.ndarray]:
    """Triangles and convex quadrilaterals of every shape and size (in [0, 1]): thin slanted
    lines, rectangles, and irregular ones, whose minimum-area rectangle is often tied between two
    of their edges."""
    rings = []
    for index in range(count):
        corners = 3 + index % 2
        angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
        radii = rng.uniform(0.5, 1.5, corners) * 10 ** rng.uniform(-3, -1)
        ring = np.stack(
            [np.cos(angles) * radii * 10 ** rng.uniform(-2, 0), np.sin(angles) * radii], 1
        )
        turn = rng.uniform(0, np.pi)
        ring = ring @ [[np.cos(turn), np.sin(turn)], [-np.sin(turn), np.cos(turn)]]
        rings.append(ring + rng.uniform(0.2, 0.8, 2))
    for index in range(count // 4):  # rectangles, some axis-aligned, some on a 1/1024 grid
        x, y, width, height = (int(value) for value in rng.integers(1, 500, 4))
        ring = np.array([[x, y], [x + width, y], [x + width, y + height], [x, y + height]]) / 1024
        rings.append(ring[::-1] if index % 2 else ring)
    return rings


def test_object_sizes_fall_in_the_bins_of_geos_own_measure():
    # Trivially simple rings are measured with numpy, not GEOS: each thickness must count in the
    # histogram bin of GEOS's minimum rotated rectangle, each box be GEOS's, whatever the ties
    rng = np.random.default_rng(5)
    rings = random_convex_rings(rng, 4000)
    objects = [("line", Label(tuple(ring.ravel().tolist()))) for ring in rings]
    (measured,) = measure_elements(Mode.Segment, [(objects, (1000, 1000))])
    shapes = shapely.polygons([shapely.linearrings(ring) for ring in rings])
    rectangles = shapely.get_coordinates(shapely.minimum_rotated_rectangle(shapes)).reshape(
        -1, 5, 2
    )
    sides = np.diff(rectangles[:, :3], axis=1)
    geos = np.hypot(sides[..., 0], sides[..., 1]).min(axis=1)
    ours, theirs = Histogram(), Histogram()
    ours.add(measured.thickness)
    theirs.add(geos)
    assert (ours.counts == theirs.counts).all()
    minx, miny, maxx, maxy = shapely.bounds(shapes).T
    assert (measured.width == maxx - minx).all() and (measured.height == maxy - miny).all()


@pytest.mark.parametrize("shift", [0.0, 1e-9, -1e-9, 1.0, -1.0])
def test_an_object_at_the_nesting_share_is_told_as_geos_tells_it(shift):
    # A 10×10 square about 90 % in a zone: at the share itself, GEOS's areas decide, not the
    # estimate that rules out the other pairs
    zone = square(0, 0, 500)
    line = square(491 + shift, 100, 10)
    shape = DatasetShape(Mode.Segment, ["zone", "line"])
    shape.add_element("train", "page", [("zone", zone), ("line", line)], (1000, 1000))
    inner, outer = (
        shapely.Polygon(np.reshape(label.coordinates, (-1, 2))) for label in (line, zone)
    )
    inside = shapely.area(shapely.intersection(inner, outer)) >= INSIDE_SHARE * inner.area
    assert shape.nested == ({("line", "zone"): 1} if inside else {})


def test_sizes_gathered_in_batches_are_those_of_each_element_alone():
    """Elements wait to be sorted by class in batches: the figures, and the order of splits and
    classes, are those of sizes sorted after each element, whatever the batches."""
    rng = np.random.default_rng(3)
    elements = []
    for index in range(300):
        names = rng.choice(["text_line", "zone", "figure"], size=int(rng.integers(0, 80)))
        objects = [(str(name), box(*rng.uniform(0.05, 0.5, 4))) for name in names]
        elements.append((["train", "val", "test"][index % 3], f"page{index}", objects))
    batched = DatasetShape(Mode.BBox, ["zone", "text_line", "figure"])
    alone = DatasetShape(Mode.BBox, ["zone", "text_line", "figure"])
    for split, element, objects in elements:
        batched.add_element(split, element, objects, (1000, 700))
        alone.add_element(split, element, objects, (1000, 700))
        alone.flush()
        assert alone.pending_count == 0
    assert batched.pending_count > 0  # some still waiting
    assert batched.figures(640) == alone.figures(640)
    for split in alone.sizes:
        assert list(batched.sizes[split]) == list(alone.sizes[split])
        for name, sizes in alone.sizes[split].items():
            sizes.flush()
            batched.sizes[split][name].flush()
            assert (sizes.thickness.counts == batched.sizes[split][name].thickness.counts).all()
    assert list(batched.sizes) == list(alone.sizes)
