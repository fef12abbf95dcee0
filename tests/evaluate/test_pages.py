"""Page-level evaluation: the segmenter's steps, matching, calibration, figures, tables, pictures."""

from __future__ import annotations

import json
from dataclasses import replace
from urllib.request import urlopen

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import SAMPLE, box_points, element_truth
from tests.iiif_server import IIIFServer
from worker_yolo_training.core import DEFAULT_THRESHOLD, Box, Frame, Prediction, RunLayout
from worker_yolo_training.evaluate import (
    PREDICTION_COLOUR,
    TRUTH_COLOUR,
    ElementScores,
    Scored,
    calibrate,
    choose_threshold,
    draw_element,
    evaluate_pages,
    figures,
    page_table,
    picture_choice,
    prediction_label,
    result_predictions,
    scale_ratios,
    score_element,
    segmenter_image,
    split_figures,
    to_element_pixels,
    worst_elements_table,
)
from worker_yolo_training.images import fetch_size

NAMES = ["text_line", "illustration"]
LINES = [box_points(0, 100 * row, 400, 40) for row in range(3)]  # three lines, 60 px apart
ZONE = box_points(500, 0, 300, 300)


def page(*objects, **options):
    return element_truth("page", objects, **options)


def line(index: int) -> tuple:
    return ("text_line", LINES[index])


def found(class_name: str, confidence: float, points) -> Prediction:
    return Prediction(class_name, confidence, tuple(points))


def at(elements, threshold: float = 0.25) -> dict:
    return split_figures(elements, threshold, NAMES)


def test_perfect_page():
    truth = page(line(0), line(1), ("illustration", ZONE))
    predictions = [found(name, 0.9, points) for name, points in truth.objects]
    result = at([score_element(truth, predictions)])
    assert result["all"] == {
        "instances": 3, "predictions": 3, "matches": 3,
        "precision": 1.0, "recall": 1.0, "f1": 1.0, "mean_iou": 1.0,
    }  # fmt: skip
    assert result["elements"] == [
        {"element": "page", "instances": 3, "predictions": 3, "matches": 3, "f1": 1.0}
    ]
    assert set(result) == {"confidence_threshold", "iou_threshold", "all", "classes", "elements"}
    assert result["iou_threshold"] == 0.5 and result["confidence_threshold"] == 0.25


def test_missed_line():
    truth = page(line(0), line(1), line(2))
    scores = score_element(
        truth, [found("text_line", 0.8, LINES[0]), found("text_line", 0.7, LINES[2])]
    )
    lines = at([scores])["classes"]["text_line"]
    assert (lines["instances"], lines["predictions"], lines["matches"]) == (3, 2, 2)
    assert lines["precision"] == 1.0 and lines["recall"] == pytest.approx(2 / 3, abs=1e-5)
    assert lines["f1"] == 0.8


def test_false_zone():
    truth = page(line(0))
    scores = score_element(
        truth, [found("text_line", 0.9, LINES[0]), found("illustration", 0.6, ZONE)]
    )
    result = at([scores])
    assert result["classes"]["illustration"] == {
        "instances": 0, "predictions": 1, "matches": 0,
        "precision": 0.0, "recall": 1.0, "f1": 0.0, "mean_iou": None,
    }  # fmt: skip
    assert result["all"]["precision"] == 0.5 and result["all"]["recall"] == 1.0


def test_line_predicted_as_two_pieces_gives_one_match_and_one_false():
    truth = page(line(0))  # 400 × 40
    pieces = [
        found("text_line", 0.9, box_points(0, 0, 300, 40)),
        found("text_line", 0.8, box_points(300, 0, 100, 40)),
    ]
    scores = score_element(truth, pieces)
    assert [p.iou for p in scores.predictions] == [0.75, None]
    assert at([scores])["all"]["matches"] == 1 and at([scores])["all"]["predictions"] == 2


def test_two_lines_predicted_as_one():
    # A prediction over a line of 40 px and a line of 15 px: IoU 40/60 with the first only
    truth = page(
        ("text_line", box_points(0, 0, 400, 40)), ("text_line", box_points(0, 45, 400, 15))
    )
    scores = score_element(truth, [found("text_line", 0.9, box_points(0, 0, 400, 60))])
    assert [p.iou for p in scores.predictions] == [pytest.approx(2 / 3)]
    assert at([scores])["all"]["recall"] == 0.5
    # Two equal lines: the merged prediction reaches neither
    merged = score_element(
        page(line(0), line(1)), [found("text_line", 0.9, box_points(0, 0, 400, 140))]
    )
    assert merged.predictions[0].iou is None


def test_class_mismatch_is_no_match():
    scores = score_element(page(line(0)), [found("illustration", 0.9, LINES[0])])
    assert scores.predictions[0].iou is None
    assert at([scores])["all"]["matches"] == 0


def test_element_without_objects():
    empty = page()
    quiet = score_element(empty, [])
    assert at([quiet])["elements"][0]["f1"] == 1.0  # nothing to find, nothing made: right
    assert at([quiet])["all"] == {
        "instances": 0, "predictions": 0, "matches": 0,
        "precision": 1.0, "recall": 1.0, "f1": 1.0, "mean_iou": None,
    }  # fmt: skip
    noisy = score_element(empty, [found("text_line", 0.9, LINES[0])])
    assert at([noisy])["elements"][0]["f1"] == 0.0


def test_matching_is_greedy_by_confidence_and_one_to_one():
    truth = page(line(0))
    # The more confident prediction takes the line although the other overlaps it better
    scores = score_element(
        truth,
        [found("text_line", 0.6, LINES[0]), found("text_line", 0.9, box_points(0, 0, 300, 40))],
    )
    assert [p.iou for p in scores.predictions] == [None, 0.75]
    # Above 0.7 the matching is what the 0.9 prediction alone gets; below, the 0.6 one stays false
    assert at([scores], 0.7)["all"]["matches"] == 1 and at([scores], 0.5)["all"]["matches"] == 1


def test_invalid_annotation_is_repaired_and_clipped_to_the_element():
    bow_tie = ((0, 0), (100, 40), (100, 0), (0, 40))  # two triangles of 1000 px² each
    scores = score_element(
        page(("text_line", bow_tie)), [found("text_line", 0.9, box_points(0, 0, 100, 40))]
    )
    assert scores.predictions[0].iou == 0.5
    overflowing = page(("text_line", box_points(-100, 0, 200, 40)), width=1000)
    assert (
        score_element(overflowing, [found("text_line", 0.9, box_points(0, 0, 100, 40))])
        .predictions[0]
        .iou
        == 1.0
    )


def scored(truth: int, *predictions: tuple[float, bool]) -> ElementScores:
    return ElementScores(
        "e", ("text_line",) * truth,
        tuple(Scored("text_line", c, 0.9 if ok else None) for c, ok in predictions),
    )  # fmt: skip


def test_calibration_maximises_f1_on_known_scores():
    # 4 objects; F1 at each threshold: 0.9 → 0.4, 0.8 → 0.667, 0.7 → 0.571, 0.6123 → 0.75,
    # 0.3 → 0.667, 0.2 → 0.6
    val = [
        scored(3, (0.9, True), (0.8, True), (0.7, False)),
        scored(1, (0.61237, True), (0.3, False), (0.2, False)),
    ]
    assert calibrate(val) == 0.6123  # rounded down: the 0.61237 prediction stays kept
    assert at(val, 0.6123)["all"]["f1"] == 0.75


def test_calibration_ties_and_equal_confidences():
    # 3 objects: F1 0.5 at 0.8 (1 match of 1) and at 0.4 (2 of 5): the highest threshold wins
    tie = scored(3, (0.8, True), (0.7, False), (0.6, False), (0.5, False), (0.4, True))
    assert calibrate([tie]) == 0.8
    # Equal confidences are kept or dropped together: at 0.5, 1 match of 5 (F1 2/7), not 1 of 2
    # (F1 0.5, reached only at 0.4 with 2 of 6)
    grouped = scored(
        2, (0.9, False), (0.5, True), (0.5, False), (0.5, False), (0.5, False), (0.4, True)
    )
    assert calibrate([grouped]) == 0.4


def test_threshold_without_calibration():
    assert calibrate([]) is None and calibrate([scored(3)]) is None
    assert calibrate([scored(2, (0.9, False))]) is None  # nothing matched
    assert choose_threshold([scored(2, (0.9, False))], None) == DEFAULT_THRESHOLD == 0.25
    assert choose_threshold([scored(1, (0.9, True))], 0.42) == 0.42


def test_zero_denominators():
    assert figures(0, 0, []) == {
        "instances": 0, "predictions": 0, "matches": 0,
        "precision": 1.0, "recall": 1.0, "f1": 1.0, "mean_iou": None,
    }  # fmt: skip
    assert figures(5, 0, [])["precision"] == 1.0 and figures(5, 0, [])["f1"] == 0.0


def results(image_shape, boxes=None, masks=None, obb=None):
    from ultralytics.engine.results import Results

    return Results(
        np.zeros((*image_shape, 3), dtype=np.uint8), "x.jpg", dict(enumerate(NAMES)),
        boxes=boxes, masks=masks, obb=obb,
    )  # fmt: skip


def test_scaling_back_from_a_thumbnail_to_element_pixels():
    # A 100 × 50 thumbnail of a 1000 × 500 element; a line box and an illustration mask
    mask = torch.zeros((2, 50, 100))
    mask[1, 10:30, 40:80] = 1
    result = results(
        (50, 100),
        boxes=torch.tensor([[10.04, 5.06, 30.0, 20.0, 0.9, 0], [40, 10, 80, 30, 0.8, 1]]),
        masks=mask,
    )
    predictions = result_predictions(result, use_segment=["illustration"])
    assert [(p.class_name, round(p.confidence, 2)) for p in predictions] == [
        ("text_line", 0.9), ("illustration", 0.8),
    ]  # fmt: skip
    # text_line is not in use_segment: its box, whatever the mask
    corners = [value for point in predictions[0].polygon for value in point]
    assert corners == pytest.approx([10.04, 5.06, 30, 5.06, 30, 20, 10.04, 20])
    ratios = scale_ratios(page(width=1000, height=500), 100, 50)
    assert ratios == (10.0, 10.0)
    assert to_element_pixels(predictions[0].polygon, ratios, 1000, 500) == (
        (100, 51), (300, 51), (300, 200), (100, 200),
    )  # fmt: skip
    mask_polygon = to_element_pixels(predictions[1].polygon, ratios, 1000, 500)
    xs, ys = zip(*mask_polygon, strict=True)
    assert (min(xs), min(ys), max(xs), max(ys)) == (400, 100, 790, 290)  # the mask's contour


def test_scaling_rounds_like_python_trims_and_drops_invalid():
    ratios = (10.0, 10.0)
    # round(2.5) == 2, round(3.5) == 4: Python's rounding, as the segmenter's `round`
    assert to_element_pixels([(0.25, 0.35), (5, 0.35), (5, 3)], ratios, 100, 100) == (
        (2, 4), (50, 4), (50, 30),
    )  # fmt: skip
    # Points beyond the element are trimmed to it
    assert to_element_pixels([(-1, 0), (12, 0), (12, 5)], ratios, 100, 100) == (
        (0, 0), (100, 0), (100, 50),
    )  # fmt: skip
    assert to_element_pixels([(0, 0), (5, 5), (5, 0), (0, 5)], ratios, 100, 100) is None  # bow tie
    assert to_element_pixels([(0, 0), (5, 5)], ratios, 100, 100) is None  # too few points
    assert to_element_pixels([(20, 20), (30, 20), (30, 30)], ratios, 100, 100) is None  # beyond


def test_oriented_boxes_give_their_corners_and_min_rectangle_mode():
    obb = torch.tensor([[50.0, 25.0, 40.0, 10.0, 0.5, 0.7, 0]])  # cx cy w h angle conf class
    (rotated,) = result_predictions(results((50, 100), obb=obb), use_segment=[])
    assert len(rotated.polygon) == 4 and rotated.confidence == pytest.approx(0.7)
    xs = [x for x, _ in rotated.polygon]
    assert len({round(x, 3) for x in xs}) == 4  # a rotated box, not an axis-aligned one
    mask = torch.zeros((1, 50, 100))
    mask[0, 10:20, 10:60] = 1
    boxes = torch.tensor([[0.0, 0.0, 100.0, 50.0, 0.9, 0]])
    (rectangle,) = result_predictions(
        results((50, 100), boxes=boxes, masks=mask), use_segment=[], min_rectangle=True
    )
    # The mask's minimum rotated rectangle (closed ring, as shapely gives it), not the box
    assert len(rectangle.polygon) == 5 and max(x for x, _ in rectangle.polygon) < 100
    flat = torch.zeros((1, 50, 100))
    flat[0, 10, 10:60] = 1  # a one-pixel-high mask: a contour without area, no rectangle
    (degenerate,) = result_predictions(
        results((50, 100), boxes=boxes, masks=flat), use_segment=[], min_rectangle=True
    )
    assert to_element_pixels(degenerate.polygon, (1.0, 1.0), 100, 50) is None


def test_no_result_gives_no_prediction():
    assert result_predictions(results((50, 100), boxes=torch.zeros((0, 6))), ["text_line"]) == []


def test_segmenter_image_is_the_jpeg_reencoding(tmp_path):
    source = tmp_path / "e.jpg"
    Image.new("L", (30, 20), 128).save(source)  # grayscale: OpenCV reads it as 3 channels
    image = segmenter_image(source)
    assert image.shape == (20, 30, 3)
    with pytest.raises(ValueError, match=r"missing\.jpg"):
        segmenter_image(tmp_path / "missing.jpg")


def test_segmenter_image_is_what_base_worker_and_teklia_yolo_make_of_the_download(tmp_path):
    """The segmenter's image: base-worker's real `open_image_tempfile` on a loopback IIIF server
    (Pillow re-encodes the download), then teklia-yolo's `preprocess_image` (cv2 read and write);
    ours starts from the server's bytes of the same rendering."""
    import cv2
    from arkindex_worker.models import Element

    served = tmp_path / "served"
    served.mkdir()
    page = Image.open(next((SAMPLE / "images").glob("*.jpg")))
    page.save(served / "page.jpg", quality=95)
    with IIIFServer(images_dir=served, version=2) as iiif:
        url = iiif.url_for("page")
        image = {"id": "page", "url": url, "width": page.width, "height": page.height,
                 "server": {"url": iiif.base_url, "version": 2, "max_width": None,
                            "max_height": None}}  # fmt: skip
        crop = Box(10, 12, page.width - 40, page.height - 40)
        right, bottom = crop.x + crop.width, crop.y + crop.height
        polygon = [[crop.x, crop.y], [crop.x, bottom], [right, bottom], [right, crop.y]]
        region = f"{crop.x},{crop.y},{crop.width},{crop.height}"
        zone = {"polygon": polygon, "url": f"{url}/{region}/full/0/default.jpg", "image": image}
        element = Element({"id": "e", "zone": zone, "rotation_angle": 0, "mirrored": False})
        with element.open_image_tempfile(max_width=320, max_height=320) as downloaded:
            preprocessed = str(tmp_path / "preprocessed.jpg")
            cv2.imwrite(preprocessed, cv2.imread(downloaded.name))
            expected = cv2.imread(preprocessed)
        # What our worker downloads and keeps as received: the same rendering, asked by size
        ours = tmp_path / "ours.jpg"
        width, height = fetch_size(Frame(crop), 320)
        ours.write_bytes(urlopen(f"{url}/{region}/{width},{height}/0/default.jpg").read())
    assert expected.shape == (height, width, 3) and max(width, height) == 320
    assert np.array_equal(segmenter_image(ours), expected)


def split_result() -> dict:
    rows = [
        {"element": f"e{i}", "instances": 4, "predictions": 4, "matches": i % 5, "f1": (i % 5) / 4}
        for i in range(20)
    ]
    return {"confidence_threshold": 0.3, "iou_threshold": 0.5, "all": figures(80, 80, [0.8] * 40),
            "classes": {"text_line": figures(80, 80, [0.8] * 40), "illustration": figures(0, 0, [])},
            "elements": rows}  # fmt: skip


def test_markdown_tables():
    pages = {"val": split_result(), "test": split_result()}
    table = page_table(pages, 0.3).splitlines()
    assert "confidence threshold 0.3" in table[0]
    assert table[2].startswith("| Split | Class | Instances | Predictions | Matches | Precision")
    assert table[4:7] == [
        "| val | text_line | 80 | 80 | 40 | 0.500 | 0.500 | 0.500 | 0.800 |",
        "| val | illustration | 0 | 0 | 0 | 1.000 | 1.000 | 1.000 | – |",
        "| val | all | 80 | 80 | 40 | 0.500 | 0.500 | 0.500 | 0.800 |",
    ]
    assert "advanced.confidence_threshold" in page_table(pages, 0.3, fixed=True)
    worst = worst_elements_table(pages).splitlines()
    assert len(worst) == 4 + 20
    assert worst[4] == "| val | `e0` | 4 | 4 | 0 | 0.000 |"
    assert worst_elements_table({"train": split_result()}) == ""


def test_picture_choice_takes_the_worst_then_others():
    chosen = picture_choice(split_result()["elements"])
    assert len(chosen) == 12
    assert set(chosen[:8]) == {"e0", "e5", "e10", "e15", "e1", "e6", "e11", "e16"}
    assert {"e4", "e9"} & set(chosen[8:])  # some of the best too
    assert picture_choice(split_result()["elements"][:3]) == ["e0", "e1", "e2"]


def colour_near(region: Image.Image, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    pixels = np.asarray(region).reshape(-1, 3).astype(int)
    return bool((np.abs(pixels - colour).max(axis=1) < tolerance).any())


def test_picture_draws_truth_and_predictions_in_their_colours(tmp_path):
    image = tmp_path / "e.jpg"
    Image.new("RGB", (200, 100), "white").save(image)
    truth = element_truth(
        "e", [("text_line", box_points(40, 40, 300, 100))], image=image, width=800, height=400
    )
    prediction = found("illustration", 0.87, box_points(480, 200, 200, 100))
    target = draw_element(truth, [(prediction, False)], NAMES, tmp_path / "pages" / "01_e.jpg")
    picture = Image.open(target).convert("RGB")
    # The element image is enlarged to 800 px under a legend band; element pixels map 1:1
    band = picture.height - 400
    left = picture.crop((30, band + 30, 350, band + 150))
    right = picture.crop((470, band + 190, 690, band + 310))
    assert colour_near(left, TRUTH_COLOUR) and not colour_near(left, PREDICTION_COLOUR)
    assert colour_near(right, PREDICTION_COLOUR) and not colour_near(right, TRUTH_COLOUR)
    assert colour_near(picture.crop((0, 0, picture.width, band)), TRUTH_COLOUR)  # legend


def test_predictions_are_labelled_with_their_class_name():
    prediction = found("illustration", 0.2249, box_points(0, 0, 10, 10))
    assert prediction_label(prediction, is_match=True) == "illustration 0.22"
    assert prediction_label(prediction, is_match=False) == "illustration 0.22 ✗"


def test_evaluate_pages_with_a_real_model(tmp_path):
    """The thin wrapper on an untrained nano model: files written, predictions in element pixels."""
    from ultralytics.nn.tasks import SegmentationModel

    torch.manual_seed(0)
    network = SegmentationModel("yolov8n-seg.yaml", nc=2, verbose=False)
    network.names = dict(enumerate(NAMES))
    weights = tmp_path / "model.pt"
    # A checkpoint as training writes it: the prediction size comes from its train_args
    torch.save({"model": network, "train_args": {"imgsz": 64, "task": "segment"}}, weights)
    splits = {}
    for split, source in zip(
        ("val", "test"), sorted((SAMPLE / "images").glob("*.jpg"))[:2], strict=True
    ):
        image = tmp_path / f"{split}.jpg"
        with Image.open(source) as full:
            full.thumbnail((64, 64))
            full.save(image)
        splits[split] = [element_truth(split, [line(0)], image=image, width=640, height=900)]
    splits["train"] = []
    layout = RunLayout(tmp_path)
    evaluation = evaluate_pages(weights, splits, NAMES, NAMES, oriented=False, layout=layout,
                                max_det=5, fixed_threshold=0.001)  # fmt: skip
    pages = evaluation.pages
    assert set(pages) == {"val", "test"} and evaluation.confidence_threshold == 0.001
    for split in ("val", "test"):
        folder = tmp_path / f"eval_{split}" / "pages"
        (line_,) = (
            json.loads(text) for text in (folder / "predictions.jsonl").read_text().splitlines()
        )
        assert (line_["element"], line_["width"], line_["height"]) == (split, 640, 900)
        assert 0 < len(line_["predictions"]) <= 5  # untrained: low scores everywhere
        for prediction in line_["predictions"]:
            assert prediction["class"] in NAMES and prediction["confidence"] >= 0.001
            assert all(0 <= x <= 640 and 0 <= y <= 900 for x, y in prediction["polygon"])
        assert pages[split]["elements"][0]["predictions"] == len(line_["predictions"])
        assert (folder / f"01_{split}.jpg").is_file()
        assert not (folder / "all_predictions.jsonl").exists()
        # Its own predictions as annotations: every one matches itself, and calibration on val
        # keeps them all (F1 grows with each match)
        objects = [(p["class"], tuple(map(tuple, p["polygon"]))) for p in line_["predictions"]]
        splits[split] = [replace(splits[split][0], objects=tuple(objects))]
    again = evaluate_pages(weights, splits, NAMES, NAMES, oriented=False, layout=layout,
                           max_det=5).pages  # fmt: skip
    for split in ("val", "test"):
        assert again[split]["all"]["predictions"] == pages[split]["all"]["predictions"]
        assert again[split]["all"]["f1"] == 1.0 and again[split]["all"]["mean_iou"] == 1.0
    with pytest.raises(ValueError, match="segment model"):
        evaluate_pages(weights, splits, NAMES, NAMES, oriented=True, layout=layout, max_det=5)
