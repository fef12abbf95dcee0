"""Ultralytics' detection metrics (box, mask) as people read them: `metrics.json` and a Markdown
table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from worker_yolo_training.core import markdown_table

METRIC_NAMES = ("precision", "recall", "mAP50", "mAP50-95")


def _values(values: Sequence[float]) -> dict[str, float]:
    return {name: round(float(value), 5) for name, value in zip(METRIC_NAMES, values, strict=True)}


def split_metrics(
    metrics: Any, class_names: Sequence[str], images: int, kinds: Sequence[str]
) -> dict:
    """One split's detection metrics: overall and per class, for each kind (box, mask) in the
    order of Ultralytics' results.

    Ultralytics only computes per-class values for classes present in the split
    (`ap_class_index`); other classes are reported as absent rather than with made-up zeros.
    """
    means = metrics.mean_results()
    instances = metrics.nt_per_class if metrics.nt_per_class is not None else [0] * len(class_names)
    images_with = (
        metrics.nt_per_image if metrics.nt_per_image is not None else [0] * len(class_names)
    )
    overall = {"images": images, "instances": int(sum(instances))}
    for offset, kind in enumerate(kinds):
        overall[kind] = _values(means[offset * 4 : offset * 4 + 4])
    classes = {}
    present = {int(index): position for position, index in enumerate(metrics.ap_class_index)}
    for index, name in enumerate(class_names):
        row = {"images": int(images_with[index]), "instances": int(instances[index])}
        if index in present:
            results = metrics.class_result(present[index])
            for offset, kind in enumerate(kinds):
                row[kind] = _values(results[offset * 4 : offset * 4 + 4])
        else:
            row["absent"] = True
        classes[name] = row
    return {"all": overall, "classes": classes}


def metrics_table(metrics: dict[str, dict]) -> str:
    """Every split, overall and per class, as a Markdown table (log, archive, model page)."""
    kinds = [kind for kind in ("box", "mask") if any(kind in m["all"] for m in metrics.values())]
    header = ["Split", "Class", "Images", "Instances"] + [
        f"{kind.capitalize()} {name}" for kind in kinds for name in METRIC_NAMES
    ]
    rows = []
    for split, result in metrics.items():
        for name, row in [("all", result["all"]), *list(result["classes"].items())]:
            cells = [split, name, row["images"], row["instances"]]
            for kind in kinds:
                if row.get("absent"):
                    cells += ["absent"] * len(METRIC_NAMES)
                else:
                    cells += [f"{row[kind][metric]:.3f}" for metric in METRIC_NAMES]
            rows.append(cells)
    return markdown_table(header, rows)
