"""Classify mode's evaluation and its tables.

Two views of every non-empty split:
- Ultralytics' validation of the best weights: top-1 and top-5 accuracy and the confusion matrix
  (`ClassifyMetrics`, matrix[predicted][true]), with per-class precision, recall and F1 read from
  the matrix (`classification_metrics`);
- what Teklia's YOLO classifier (`teklia-yolo-worker` 1.4.3, `worker_yolo/classifier.py`) will create
  on each element (`evaluate_classifier`): the element image as it downloads it (at most
  `thumbnail_size`, no contrast, one JPEG re-encoding: `pages.segmenter_image`, the shared
  `YOLOWorker.load_image`), the top-1 class of `results.probs` with its confidence rounded to 3
  decimals, and no classification when that confidence is under `confidence_threshold`. The
  threshold is calibrated on val (best macro-F1) unless `advanced.confidence_threshold` fixes it.

Per class: precision = correct / predicted, recall = correct / elements, F1 = 2·correct /
(elements + predicted), 0 when a division has nothing to divide; a class neither present nor
predicted in a split is `absent` and left out of the macro averages.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worker_yolo_training.core import (
    CONFIDENCE_DECIMALS,
    DEFAULT_THRESHOLD,
    ElementTruth,
    Prediction,
    RunLayout,
    escape,
    markdown_table,
)
from worker_yolo_training.evaluate.evaluation import COMPARED_SPLITS, ElementEvaluation, Kept
from worker_yolo_training.evaluate.pages import segmenter_image

logger = logging.getLogger(__name__)

PREDICTION_BATCH = 32
RATES = ("precision", "recall", "f1")


@dataclass(frozen=True)
class ElementPrediction:
    """What the classifier predicts for one element, and the element's class."""

    element: str
    truth: str
    class_name: str
    confidence: float


def _rate(numerator: int, denominator: int) -> float:
    return round(numerator / denominator, 5) if denominator else 0.0


def per_class(
    class_names: Sequence[str], truth: Mapping[str, int], predicted: Mapping[str, int],
    correct: Mapping[str, int],
) -> tuple[dict[str, dict], dict[str, float | None]]:  # fmt: skip
    """Per class: elements, predicted, correct, precision, recall, F1 (or `absent`); and the
    macro averages over the classes that are not absent (None when all are)."""
    classes, present = {}, []
    for name in class_names:
        found, made, right = (
            int(truth.get(name, 0)),
            int(predicted.get(name, 0)),
            int(correct.get(name, 0)),
        )
        row: dict[str, Any] = {"elements": found, "predicted": made, "correct": right}
        if found + made:
            row.update(
                precision=_rate(right, made),
                recall=_rate(right, found),
                f1=_rate(2 * right, found + made),
            )
            present.append(row)
        else:
            row["absent"] = True
        classes[name] = row
    macro = {
        f"macro_{rate}": round(float(np.mean([row[rate] for row in present])), 5)
        if present
        else None
        for rate in RATES
    }
    return classes, macro


def classification_metrics(results: Any, class_names: Sequence[str], images: int) -> dict:
    """One split's Ultralytics validation (`ClassifyMetrics`): top-1 and top-5 accuracy (top-5 is
    top-n with fewer than 5 classes), per-class figures and the confusion matrix by class name
    (`confusion_matrix[true][predicted]`: element counts)."""
    count = len(class_names)
    # Ultralytics' classification matrix is [predicted, true], one row and column per class
    matrix = np.asarray(results.confusion_matrix.matrix)[:count, :count].astype(int)
    by_name = dict(enumerate(class_names))
    truth = {by_name[index]: value for index, value in enumerate(matrix.sum(0))}
    predicted = {by_name[index]: value for index, value in enumerate(matrix.sum(1))}
    correct = {by_name[index]: value for index, value in enumerate(np.diag(matrix))}
    classes, macro = per_class(class_names, truth, predicted, correct)
    overall = {
        "images": images,
        "top1": round(float(results.top1), 5),
        "top5": round(float(results.top5), 5),
        **macro,
    }
    confusion = {
        true_name: {name: int(matrix[p, t]) for p, name in enumerate(class_names)}
        for t, true_name in enumerate(class_names)
    }
    return {"all": overall, "classes": classes, "confusion_matrix": confusion}


def calibrate_classifier(
    predictions: Sequence[ElementPrediction], class_names: Sequence[str]
) -> float | None:
    """The confidence threshold that maximises macro-F1: candidates are the confidences (the
    classifier keeps `confidence >= threshold`); on a tie the highest wins (as good, with fewer
    classifications). None when no threshold classifies any element right."""
    truth = Counter(p.truth for p in predictions)
    predicted, correct = Counter(), Counter()
    ordered = sorted(predictions, key=lambda p: p.confidence, reverse=True)
    best_f1, best = 0.0, None
    for index, prediction in enumerate(ordered):
        predicted[prediction.class_name] += 1
        correct[prediction.class_name] += prediction.class_name == prediction.truth
        if index + 1 < len(ordered) and ordered[index + 1].confidence == prediction.confidence:
            continue  # a threshold keeps every prediction of equal confidence
        f1 = per_class(class_names, truth, predicted, correct)[1]["macro_f1"] or 0.0
        if f1 > best_f1:
            best_f1, best = f1, prediction.confidence
    return best


def choose_classifier_threshold(
    val: Sequence[ElementPrediction], class_names: Sequence[str], fixed: float | None
) -> float:
    """`fixed` when given (advanced.confidence_threshold), else calibrated on val, else the
    classifier's default."""
    if fixed is not None:
        logger.info(f"Classifier evaluation at the configured confidence threshold {fixed}")
        return fixed
    calibrated = calibrate_classifier(val, class_names)
    if calibrated is None:
        logger.warning(
            f"No val element is classified right: the confidence threshold is {DEFAULT_THRESHOLD}"
        )
        return DEFAULT_THRESHOLD
    logger.info(f"Confidence threshold calibrated on val (best macro-F1): {calibrated}")
    return calibrated


def element_figures(
    predictions: Sequence[ElementPrediction], class_names: Sequence[str], threshold: float
) -> dict:
    """One split as the classifier classifies it at `threshold`: elements, classified (top-1
    confidence at or above it), correct, accuracy (correct / elements), per class and macro."""
    kept = [p for p in predictions if p.confidence >= threshold]
    truth = Counter(p.truth for p in predictions)
    predicted = Counter(p.class_name for p in kept)
    correct = Counter(p.class_name for p in kept if p.class_name == p.truth)
    classes, macro = per_class(class_names, truth, predicted, correct)
    right = sum(correct.values())
    return {
        "confidence_threshold": threshold,
        "elements": len(predictions),
        "classified": len(kept),
        "correct": right,
        "accuracy": _rate(right, len(predictions)),
        **macro,
        "classes": classes,
    }


def predict(
    model: Any, elements: Sequence[ElementTruth], device: str
) -> Iterator[ElementPrediction]:
    """The classifier's top-1 class and confidence for each element, as `YOLOClassifier.
    process_image` takes them (`results.names[argmax]`, `round(max, 3)`), at the checkpoint's
    image size (the classifier passes no `imgsz`)."""
    for start in range(0, len(elements), PREDICTION_BATCH):
        chunk = elements[start : start + PREDICTION_BATCH]
        images = [segmenter_image(element.image) for element in chunk]
        results = model.predict(images, device=device, verbose=False)
        for element, result in zip(chunk, results, strict=True):
            data = result.probs.data
            yield ElementPrediction(
                element.element_id,
                element.objects[0][0],
                result.names[int(data.argmax().item())],
                round(float(data.max().item()), CONFIDENCE_DECIMALS),
            )


def evaluate_classifier(
    weights: Path,
    truths: Mapping[str, Sequence[ElementTruth]],
    class_names: Sequence[str],
    layout: RunLayout,
    fixed_threshold: float | None = None,
    device: str = "cpu",
) -> ElementEvaluation:
    """The `pages` section of `metrics.json` (per split, the classifier's figures at one
    threshold), that threshold and its Markdown table. Writes each split's predictions in
    `layout`: per element, its class, the predicted class and confidence, and whether the
    classifier keeps it."""
    from ultralytics import YOLO

    model = YOLO(str(weights), task="classify")
    predictions = {
        split: list(predict(model, elements, device)) for split, elements in truths.items()
    }
    threshold = choose_classifier_threshold(
        predictions.get("val", []), class_names, fixed_threshold
    )
    pages = {}
    for split, found in predictions.items():
        layout.pages(split).mkdir(parents=True, exist_ok=True)
        with layout.predictions(split).open("w") as lines:
            for prediction in found:
                record = {**asdict(prediction), "kept": prediction.confidence >= threshold}
                lines.write(json.dumps(record, ensure_ascii=False) + "\n")
        pages[split] = element_figures(found, class_names, threshold)
        logger.info(
            f"Classifier evaluation of {split}: {pages[split]['correct']} of "
            f"{len(found)} elements right, {pages[split]['classified']} classified"
        )
    overall = {
        split: {rate: figures[f"macro_{rate}"] for rate in RATES}
        for split, figures in pages.items()
    }
    kept = {
        split: {p.element: element_kept(p, threshold) for p in found}
        for split, found in predictions.items()
        if split in COMPARED_SPLITS
    }
    table = classifier_table(pages, threshold)
    return ElementEvaluation(pages, threshold, table, overall=overall, kept=kept)


def element_kept(prediction: ElementPrediction, threshold: float) -> Kept:
    """The class the classifier creates on an element (none under the threshold), and whether
    it is the element's: as a prediction without polygon, for the comparison's pictures."""
    if prediction.confidence < threshold:
        return ()
    found = Prediction(prediction.class_name, prediction.confidence, ())
    return ((found, prediction.class_name == prediction.truth),)


def _rates(row: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    return ["absent" if row.get("absent") else f"{row[key]:.3f}" for key in keys]


def _macro(row: Mapping[str, Any]) -> list[str]:
    return [
        "–" if row[f"macro_{rate}"] is None else f"{row[f'macro_{rate}']:.3f}" for rate in RATES
    ]


CLASS_COUNTS = ("Precision", "Recall", "F1")


def classifier_table(pages: Mapping[str, dict], threshold: float) -> str:
    """The classifier's view per split and class at `threshold` (Markdown)."""
    rows = []
    for split, figures in pages.items():
        cells = [split, f"all (accuracy {figures['accuracy']:.3f}; macro)"]
        cells += [figures[key] for key in ("elements", "classified", "correct")]
        rows.append(cells + _macro(figures))
        rows += [_class_row(split, name, row) for name, row in figures["classes"].items()]
    header = ["Split", "Class", "Elements", "Classified", "Correct", *CLASS_COUNTS]
    return (
        f"As Teklia's YOLO classifier will classify the elements, at confidence threshold "
        f"{threshold} (an element whose top-1 confidence is under it gets no class):\n\n"
    ) + markdown_table(header, rows)


def _class_row(split: str, name: str, row: Mapping) -> list:
    """One class of one split: elements, predicted, correct, precision, recall, F1."""
    cells = [split, escape(name), *(row[key] for key in ("elements", "predicted", "correct"))]
    return cells + _rates(row, RATES)


def _accuracy_row(split: str, row: Mapping[str, Any]) -> list:
    return [split, row["images"], f"{row['top1']:.3f}", f"{row['top5']:.3f}", *_macro(row)]


def classification_tables(metrics: Mapping[str, dict]) -> str:
    """Ultralytics' validation of every split: accuracy, per-class figures, confusion matrices."""
    overall = [_accuracy_row(split, result["all"]) for split, result in metrics.items()]
    header = ["Split", "Images", "Top-1", "Top-5", "Macro precision", "Macro recall", "Macro F1"]
    classes = [
        _class_row(split, name, row)
        for split, result in metrics.items()
        for name, row in result["classes"].items()
    ]
    class_header = ["Split", "Class", "Images", "Predicted", "Correct", *CLASS_COUNTS]
    tables = [markdown_table(header, overall), markdown_table(class_header, classes)]
    for split, result in metrics.items():
        names = list(result["confusion_matrix"])
        rows = [
            [escape(true_name), *(row[name] for name in names)]
            for true_name, row in result["confusion_matrix"].items()
        ]
        matrix = markdown_table(["true \\ predicted", *map(escape, names)], rows)
        tables.append(
            f"Confusion matrix of {split} (rows: true class, columns: predicted class):\n\n"
            + matrix
        )
    return "\n\n".join(tables)
