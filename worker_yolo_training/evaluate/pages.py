"""Page-level evaluation: what Teklia's YOLO segmenter will create on each element, scored against
the annotations.

Every step reproduces `teklia-yolo-worker==1.4.3` (`worker_yolo/worker.py`, `YOLOWorker.load_image`,
and `worker_yolo/segmenter.py`, `YOLOSegmenter.process_image`), cited where it happens:

1. the element image (oriented crop, longest side at most `thumbnail_size`) is written by Pillow
   as base-worker's `Element.open_image_tempfile` writes it, then goes through teklia-yolo's
   `preprocess_image` without contrast: `cv2.imread` then `cv2.imwrite`, two JPEG re-encodings
   (`segmenter_image`);
2. the model predicts with the checkpoint's `imgsz`, one image per call, `iou` and `max_det` as
   published (the segmenter passes `conf=0`; `PREDICTION_CONFIDENCE` is used here: see there);
3. each prediction gives the mask polygon for a class in `use_segment`, else its box (the oriented
   corners for obb models), the mask's minimum rotated rectangle in `minimum_rotated_rectangle`
   mode (`result_predictions`);
4. points are scaled back to the element's size and rounded, trimmed to the element, and invalid
   geometries are dropped (`to_element_pixels`); predictions under `confidence_threshold` are dropped.

Predictions are then matched one to one with the annotated objects (`match`), the confidence
threshold is calibrated on val (`calibrate`), and figures are computed per split, class and element
(`split_figures`, `score.py`). Pictures are drawn by `draw.py`.
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from shapely import minimum_rotated_rectangle
from shapely.geometry import Polygon

from worker_yolo_training.core import (
    SEGMENTER_IOU,
    ElementTruth,
    Points,
    Prediction,
    RunLayout,
    safe_name,
)
from worker_yolo_training.evaluate.draw import draw_element, picture_choice
from worker_yolo_training.evaluate.evaluation import COMPARED_SPLITS, ElementEvaluation, Kept
from worker_yolo_training.evaluate.score import (
    ElementScores,
    choose_threshold,
    page_table,
    score_element,
    split_figures,
    worst_elements_table,
)

logger = logging.getLogger(__name__)

# Predictions under this confidence are never kept by a calibrated threshold, and skipping them
# saves Ultralytics the masks of up to max_det useless candidates. It changes nothing above it:
# NMS is greedy by score, so a candidate under 0.001 only ever suppresses lower ones.
PREDICTION_CONFIDENCE = 0.001


def segmenter_image(path: Path) -> np.ndarray:
    """The BGR array the segmenter predicts on, from the image as the IIIF server sent it.

    Two JPEG re-encodings, as in the segmenter: base-worker's `Element.open_image_tempfile` opens
    the download with Pillow (`open_image`: converted to RGB) and saves it to a temporary file
    with `format="jpeg"`, i.e. Pillow's default quality 75; teklia-yolo's `preprocess_image`
    (contrast off, no rotation) reads that with `cv2.imread` and writes it with `cv2.imwrite` to a
    `.jpg` file (OpenCV's default quality 95), which Ultralytics reads back. Skipping the first
    one moves confidences by up to 0.015 and mask edges by a pixel (benchmarks/README.md)."""
    import cv2

    try:
        with Image.open(path) as image:
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="jpeg")
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot read the element image {path} ({error})") from error
    decoded = cv2.imdecode(np.frombuffer(buffer.getvalue(), np.uint8), cv2.IMREAD_COLOR)
    encoded = cv2.imencode(".jpg", decoded)[1]
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)


def result_predictions(
    result: Any, use_segment: Collection[str], min_rectangle: bool = False
) -> list[Prediction]:
    """The predictions of one Ultralytics `Results`, in the predicted image's pixels, taken as
    `YOLOSegmenter.process_image` takes them: `results.boxes or results.obb`; the box as 4 corners
    (`xyxyxyxy` for oriented boxes); `results.masks.xy[i]` as segment; then `get_polygon`: the box
    when the segment is empty, the segment's minimum rotated rectangle in that mode, else the
    segment for classes in `use_segment` and the box for the others."""
    boxes = result.boxes or result.obb
    if not boxes:
        return []
    segments = result.masks.xy if result.masks else None
    corners = boxes.xyxyxyxy.cpu().tolist() if hasattr(boxes, "xyxyxyxy") else None
    predictions = []
    for index, (min_x, min_y, max_x, max_y) in enumerate(boxes.xyxy.cpu().tolist()):
        rectangle = [[min_x, min_y], [max_x, min_y], [max_x, max_y], [min_x, max_y]]
        box_points = corners[index] if corners is not None else rectangle
        segment = segments[index].tolist() if segments is not None else None
        class_name = result.names[int(boxes.cls[index].item())]
        if not segment:
            polygon = box_points
        elif min_rectangle:
            # `minimum_rotated_rectangle_polygon`; Polygon() needs 3 points (else the segmenter fails)
            polygon = _min_rectangle(segment) if len(segment) >= 3 else segment
        else:
            polygon = segment if class_name in use_segment else box_points
        predictions.append(
            Prediction(class_name, float(boxes.conf[index].item()), tuple(map(tuple, polygon)))
        )
    return predictions


def _min_rectangle(segment: list) -> list:
    rectangle = minimum_rotated_rectangle(Polygon(segment)).normalize()
    # A segment without area has no rectangle (the segmenter fails); `to_element_pixels` drops it
    return list(rectangle.exterior.coords) if isinstance(rectangle, Polygon) else segment


def scale_ratios(truth: ElementTruth, image_width: int, image_height: int) -> tuple[float, float]:
    """`load_image`: element size over the size of the image predicted on."""
    return truth.width / image_width, truth.height / image_height


def to_element_pixels(
    polygon: Sequence[Sequence[float]], ratios: tuple[float, float], width: int, height: int
) -> Points | None:
    """A predicted polygon in element pixels as `process_image` makes it; None when it drops it.

    `[round(x * width_ratio), round(y * height_ratio)]` (Python's rounding), then base-worker's
    `trim_polygon` clamps each point to [0, width] × [0, height], then `Zone.is_valid` drops an
    invalid polygon. `trim_polygon` raises (and the segmenter fails) for fewer than 3 points or a
    polygon wholly beyond the element; such a prediction is dropped here instead.
    """
    width_ratio, height_ratio = ratios
    points = [(round(x * width_ratio), round(y * height_ratio)) for x, y in polygon]
    if len(points) < 3 or not any(x <= width and y <= height for x, y in points):
        return None
    trimmed = tuple((min(width, max(0, x)), min(height, max(0, y))) for x, y in points)
    return trimmed if Polygon(trimmed).is_valid else None


def prediction_line(truth: ElementTruth, predictions: Sequence[Prediction]) -> str:
    """One line of `predictions.jsonl`: the element and what the segmenter would create on it."""
    return json.dumps(
        {
            "element": truth.element_id,
            "width": truth.width,
            "height": truth.height,
            "predictions": [
                {
                    "class": p.class_name,
                    "confidence": round(p.confidence, 5),
                    "polygon": [list(point) for point in p.polygon],
                }
                for p in predictions
            ],
        }
    )


def read_predictions(path: Path) -> Iterator[tuple[str, list[Prediction]]]:
    """The lines of a predictions file: element id and its predictions."""
    with path.open() as lines:
        for line in lines:
            data = json.loads(line)
            yield (
                data["element"],
                [
                    Prediction(p["class"], p["confidence"], tuple(map(tuple, p["polygon"])))
                    for p in data["predictions"]
                ],
            )


def predict_elements(
    model: Any,
    elements: Iterable[ElementTruth],
    use_segment: Collection[str],
    prediction: dict,
    min_rectangle: bool = False,
) -> Iterator[tuple[ElementTruth, list[Prediction], int]]:
    """Each element with its predictions in element pixels and the number dropped as invalid
    geometries. One image per call, as the segmenter predicts: with several images of different
    shapes in one batch, Ultralytics would pad them all to a square and predict differently."""
    for truth in elements:
        image = segmenter_image(truth.image)
        result = model.predict(image, verbose=False, **prediction)[0]
        ratios = scale_ratios(truth, image.shape[1], image.shape[0])
        kept, dropped = [], 0
        for found in result_predictions(result, use_segment, min_rectangle):
            polygon = to_element_pixels(found.polygon, ratios, truth.width, truth.height)
            if polygon is None:
                dropped += 1
            else:
                kept.append(replace(found, polygon=polygon))
        yield truth, kept, dropped


def evaluate_pages(
    weights: Path,
    splits: dict[str, list[ElementTruth]],
    class_names: Sequence[str],
    use_segment: Collection[str],
    oriented: bool,
    layout: RunLayout,
    max_det: int,
    iou: float = SEGMENTER_IOU,
    fixed_threshold: float | None = None,
    device: str = "cpu",
    min_rectangle: bool = False,
    pictures: bool = True,
) -> ElementEvaluation:
    """The `pages` section of `metrics.json` (per non-empty split, figures at one confidence
    threshold: `fixed_threshold`, else calibrated on val), that threshold and the tables. Writes
    each split's `pages` folder of `layout`: its predictions (what the segmenter would create, in
    element pixels) and pictures.

    `iou` and `max_det` are the segmenter's `iou` and `max_detection`; `oriented` says the model
    is an obb model (checked); `min_rectangle` is the segmenter's `minimum_rotated_rectangle` mode.
    Predictions of classes not in `class_names` (a baseline's other classes) are left out, counted.
    `pictures: False` draws none (a baseline's evaluation: the comparison draws its own).
    """
    from ultralytics import YOLO

    model = YOLO(str(weights))
    if (model.task == "obb") != oriented:
        raise ValueError(
            f"{weights} is a {model.task} model, expected {'obb' if oriented else 'a non-obb one'}"
        )
    prediction = {
        # Not `imgsz`: like the segmenter, predict at the size stored in the checkpoint
        "conf": min(PREDICTION_CONFIDENCE, fixed_threshold or 1.0),
        "iou": iou,
        "max_det": max_det,
        "device": device,
    }
    scores: dict[str, list[ElementScores]] = {}
    for split, elements in splits.items():
        if elements:
            scores[split] = _predict_split(
                model, split, elements, class_names, use_segment, prediction, layout,
                min_rectangle,
            )  # fmt: skip
    threshold = choose_threshold(scores.get("val", []), fixed_threshold)
    pages, kept = {}, {}
    for split, scored in scores.items():
        pages[split] = split_figures(scored, threshold, class_names)
        overall = pages[split]["all"]
        logger.info(
            f"Page-level {split}: {overall['matches']} matches of {overall['instances']} objects "
            f"and {overall['predictions']} predictions at confidence {threshold}: "
            f"precision {overall['precision']:.3f}, recall {overall['recall']:.3f}, "
            f"F1 {overall['f1']:.3f}"
        )
        found = _write_split(
            layout, split, splits[split], scored, pages[split], class_names, pictures
        )
        if split in COMPARED_SPLITS:
            kept[split] = found
    table = page_table(pages, threshold, fixed=fixed_threshold is not None)
    overall = {
        split: {key: result["all"][key] for key in ("precision", "recall", "f1")}
        for split, result in pages.items()
    }
    return ElementEvaluation(
        pages, threshold, table, worst_elements_table(pages), overall=overall, kept=kept
    )


def _predict_split(
    model, split, elements, class_names, use_segment, prediction, layout, min_rectangle
):
    layout.pages(split).mkdir(parents=True, exist_ok=True)
    scored, dropped, foreign = [], 0, Counter()
    with layout.all_predictions(split).open("w") as output:
        for truth, predictions, invalid in predict_elements(
            model, elements, use_segment, prediction, min_rectangle
        ):
            foreign.update(p.class_name for p in predictions if p.class_name not in class_names)
            predictions = [p for p in predictions if p.class_name in class_names]
            output.write(prediction_line(truth, predictions) + "\n")
            scored.append(score_element(truth, predictions))
            dropped += invalid
    if dropped:
        logger.warning(
            f"{split}: {dropped} predictions dropped as invalid geometries, as the segmenter does"
        )
    if foreign:
        logger.warning(
            f"{split}: predictions of classes this dataset does not annotate left out: "
            + ", ".join(f"{name}: {count}" for name, count in sorted(foreign.items()))
        )
    return scored


def _write_split(
    layout: RunLayout,
    split: str,
    elements: Sequence[ElementTruth],
    scored: Sequence[ElementScores],
    result: dict,
    class_names: Sequence[str],
    pictures: bool = True,
) -> dict[str, Kept]:
    """`predictions.jsonl` at the threshold, and the pictures; the all-confidence file goes.
    Returns what each element of a compared split got at the threshold."""
    threshold = result["confidence_threshold"]
    folder = layout.pages(split)
    names = {
        element_id: folder / f"{rank:02d}_{safe_name(element_id)}.jpg"
        for rank, element_id in enumerate(picture_choice(result["elements"]), start=1)
        if pictures
    }
    truths = {truth.element_id: truth for truth in elements}
    matched = {element.element_id: element.predictions for element in scored}
    found: dict[str, Kept] = {}
    with layout.predictions(split).open("w") as output:
        for element_id, predictions in read_predictions(layout.all_predictions(split)):
            truth = truths[element_id]
            # The confidences scored (not the file's rounded ones) decide, as in the figures
            kept = [
                (prediction, scores.iou is not None)
                for prediction, scores in zip(predictions, matched[element_id], strict=True)
                if scores.confidence >= threshold
            ]
            output.write(prediction_line(truth, [item for item, _ in kept]) + "\n")
            if split in COMPARED_SPLITS:
                found[element_id] = tuple(kept)
            if element_id in names:
                draw_element(truth, kept, class_names, names[element_id])
    layout.all_predictions(split).unlink()
    return found
