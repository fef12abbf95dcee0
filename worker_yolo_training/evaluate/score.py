"""Page-level scores: predictions matched one to one with the annotated objects, a confidence
threshold calibrated on val, figures per split, class and element, and their Markdown tables.

Pure functions over the values `pages` produces; nothing here runs a model."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from shapely import make_valid
from shapely.geometry import Polygon, box

from worker_yolo_training.config import key_of
from worker_yolo_training.core import (
    DEFAULT_THRESHOLD,
    ElementTruth,
    Points,
    Prediction,
    escape,
    markdown_table,
)

logger = logging.getLogger(__name__)

# A prediction matches an annotated object of its class when their polygons' IoU is at least this
MATCH_IOU = 0.5
ELEMENT_KEYS = ("instances", "predictions", "matches", "f1")
FIGURE_KEYS = ("instances", "predictions", "matches", "precision", "recall", "f1", "mean_iou")
PAGE_COLUMNS = ("Split", "Class", "Instances", "Predictions", "Matches", "Precision", "Recall")
PAGE_COLUMNS += ("F1", "Mean IoU")


@dataclass(frozen=True)
class Scored:
    """A prediction reduced to what the figures need: the IoU of its match, None if unmatched."""

    class_name: str
    confidence: float
    iou: float | None


@dataclass(frozen=True)
class ElementScores:
    """One element's annotated classes and scored predictions, at every confidence at once."""

    element_id: str
    truth: tuple[str, ...]
    predictions: tuple[Scored, ...]


def _truth_geometry(points: Points, width: int, height: int):
    # An annotation may be invalid (self-intersecting): repair it. The segmenter's zones are
    # trimmed to the element, so the annotation is compared inside the element too.
    geometry = Polygon(points) if len(points) >= 3 else Polygon()
    if not geometry.is_valid:
        geometry = make_valid(geometry)
    return geometry.intersection(box(0, 0, width, height))


def iou_matrix(predictions: Sequence[Prediction], truth: ElementTruth) -> np.ndarray:
    """IoU of every prediction (rows) with every annotated object (columns) of the same class;
    0 between different classes. Only pairs whose boxes meet are intersected (STRtree)."""
    ious = np.zeros((len(predictions), len(truth.objects)))
    if not len(predictions) or not truth.objects:
        return ious
    found = np.array([Polygon(p.polygon) for p in predictions], dtype=object)
    expected = np.array(
        [_truth_geometry(points, truth.width, truth.height) for _, points in truth.objects],
        dtype=object,
    )
    rows, columns = shapely.STRtree(expected).query(found, predicate="intersects")
    found_classes = np.array([p.class_name for p in predictions])
    expected_classes = np.array([name for name, _ in truth.objects])
    same = found_classes[rows] == expected_classes[columns]
    rows, columns = rows[same], columns[same]
    if len(rows):
        common = shapely.area(shapely.intersection(found[rows], expected[columns]))
        union = shapely.area(found[rows]) + shapely.area(expected[columns]) - common
        ious[rows, columns] = np.where(union > 0, common / np.maximum(union, 1e-12), 0)
    return ious


def match(ious: np.ndarray, confidences: Sequence[float], threshold: float = MATCH_IOU) -> list:
    """The IoU of each prediction's match, None when it has none: one to one, greedy by
    decreasing confidence (as COCO), each prediction taking the free object of its class with the
    highest IoU, at least `threshold`.

    Greedy by confidence, the matches of the predictions above any confidence are exactly the
    matches that those predictions alone would get: one matching serves every threshold, so
    calibration and the figures at the chosen threshold need no re-matching. (An optimal
    assignment would have to be recomputed per threshold, and scipy is not installed.)
    """
    matched: list[float | None] = [None] * len(confidences)
    free = np.ones(ious.shape[1], dtype=bool)
    for row in sorted(range(len(confidences)), key=lambda r: -confidences[r]):
        candidates = np.where(free & (ious[row] >= threshold), ious[row], -1.0)
        if ious.shape[1] and candidates.max() >= threshold:
            column = int(candidates.argmax())
            free[column] = False
            matched[row] = float(ious[row, column])
    return matched


def score_element(truth: ElementTruth, predictions: Sequence[Prediction]) -> ElementScores:
    """One element's predictions matched with its objects (all confidences)."""
    ious = match(iou_matrix(predictions, truth), [p.confidence for p in predictions])
    return ElementScores(
        truth.element_id,
        tuple(name for name, _ in truth.objects),
        tuple(
            Scored(p.class_name, p.confidence, iou)
            for p, iou in zip(predictions, ious, strict=True)
        ),
    )


def calibrate(elements: Sequence[ElementScores]) -> float | None:
    """The confidence threshold that maximises F1 over all classes (micro: every object and
    prediction pooled); None when no threshold finds anything (no prediction, or none matched).

    Candidates are the predictions' confidences (the segmenter keeps `confidence >= threshold`);
    on a tie the highest wins (as good, with fewer predictions). The result is rounded down to 4
    decimals, so that the prediction it was taken from is still kept.
    """
    scored = sorted(
        ((p.confidence, p.iou is not None) for e in elements for p in e.predictions), reverse=True
    )
    instances = sum(len(e.truth) for e in elements)
    best_f1, best = 0.0, None
    matches = 0
    for index, (confidence, matched) in enumerate(scored):
        matches += matched
        if index + 1 < len(scored) and scored[index + 1][0] == confidence:
            continue  # a threshold keeps every prediction of equal confidence
        f1 = 2 * matches / (index + 1 + instances)
        if f1 > best_f1:
            best_f1, best = f1, confidence
    return None if best is None else math.floor(best * 1e4) / 1e4


def choose_threshold(val: Sequence[ElementScores], fixed: float | None) -> float:
    """`fixed` when given (advanced.confidence_threshold), else calibrated on val, else the
    segmenter's default."""
    if fixed is not None:
        logger.info(f"Page-level evaluation at the configured confidence threshold {fixed}")
        return fixed
    calibrated = calibrate(val)
    if calibrated is None:
        logger.warning(
            "No prediction on val matches an object: the confidence threshold stays at the "
            f"segmenter's default, {DEFAULT_THRESHOLD}"
        )
        return DEFAULT_THRESHOLD
    logger.info(f"Confidence threshold calibrated on val (best F1): {calibrated}")
    return calibrated


def figures(instances: int, predictions: int, ious: Sequence[float]) -> dict:
    """Counts and rates. With nothing to find, recall is 1 (nothing was missed); with nothing
    predicted, precision is 1 (nothing false was made); F1 = 2·matches / (instances + predictions)
    is 1 when both are 0: an element without objects where nothing is predicted is right, and
    must not rank among the failures. `mean_iou` is None without matches."""
    matches = len(ious)
    return {
        "instances": instances,
        "predictions": predictions,
        "matches": matches,
        "precision": round(matches / predictions, 5) if predictions else 1.0,
        "recall": round(matches / instances, 5) if instances else 1.0,
        "f1": round(2 * matches / (instances + predictions), 5) if instances + predictions else 1.0,
        "mean_iou": round(float(np.mean(ious)), 5) if ious else None,
    }


def _kept(element: ElementScores, threshold: float, class_name: str | None = None) -> list:
    return [
        p
        for p in element.predictions
        if p.confidence >= threshold and class_name in (None, p.class_name)
    ]


def split_figures(
    elements: Sequence[ElementScores], threshold: float, class_names: Sequence[str]
) -> dict:
    """One split's `pages` entry at a threshold: all classes, each class, each element."""

    def pooled(class_name: str | None) -> dict:
        kept = [p for e in elements for p in _kept(e, threshold, class_name)]
        instances = sum(class_name in (None, name) for e in elements for name in e.truth)
        return figures(instances, len(kept), [p.iou for p in kept if p.iou is not None])

    rows = []
    for element in elements:
        kept = _kept(element, threshold)
        row = figures(len(element.truth), len(kept), [p.iou for p in kept if p.iou is not None])
        rows.append({"element": element.element_id, **{key: row[key] for key in ELEMENT_KEYS}})
    return {
        "confidence_threshold": threshold,
        "iou_threshold": MATCH_IOU,
        "all": pooled(None),
        "classes": {name: pooled(name) for name in class_names},
        "elements": rows,
    }


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def page_table(pages: dict[str, dict], threshold: float, fixed: bool = False) -> str:
    """The page-level figures at `threshold` as Markdown: a sentence on how they are counted, then
    one row per split and class, then the split's `all` row."""
    if not pages:
        return ""
    origin = (
        f"set by `{key_of('confidence_threshold')}`"
        if fixed
        else f"the F1-maximising one on val, {DEFAULT_THRESHOLD} when val has no matched prediction"
    )
    rows = [
        [split, name, *(row[key] for key in FIGURE_KEYS[:3])]
        + [_cell(row[key]) for key in FIGURE_KEYS[3:]]
        for split, result in pages.items()
        for name, row in [*result["classes"].items(), ("all", result["all"])]
    ]
    sentence = (
        f"Page-level evaluation, as the YOLO segmenter will predict: confidence threshold "
        f"{threshold} ({origin}); a prediction matches an annotated object of its class when "
        f"their polygons' IoU is at least {MATCH_IOU} (one to one, greedy by confidence)."
    )
    return f"{sentence}\n\n" + markdown_table(PAGE_COLUMNS, rows)


def worst_elements(elements: Sequence[dict], count: int) -> list[dict]:
    """The `count` elements with the lowest F1, those with the most errors first on a tie."""
    return sorted(
        elements,
        key=lambda e: (e["f1"], -(e["instances"] + e["predictions"] - 2 * e["matches"])),
    )[:count]


def _worst_row(split: str, element: dict) -> list:
    counts = [element[key] for key in ELEMENT_KEYS[:-1]]
    return [split, f"`{escape(element['element'])}`", *counts, f"{element['f1']:.3f}"]


def worst_elements_table(
    pages: dict[str, dict], splits: Sequence[str] = ("val", "test"), count: int = 10
) -> str:
    """The worst `count` elements of each of `splits` by F1, as Markdown."""
    rows = [
        _worst_row(split, element)
        for split in splits
        if split in pages
        for element in worst_elements(pages[split]["elements"], count)
    ]
    if not rows:
        return ""
    header = ["Split", "Element", "Instances", "Predictions", "Matches", "F1"]
    return f"Worst {count} elements by F1 ({', '.join(splits)}):\n\n" + markdown_table(header, rows)
