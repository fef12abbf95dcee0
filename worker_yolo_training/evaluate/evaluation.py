"""The values the evaluation hands on: what the inference worker will produce on the elements, and
the whole evaluation of the best weights (with Ultralytics' metrics)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from worker_yolo_training.core import Prediction

# The splits a baseline is evaluated and compared on
COMPARED_SPLITS = ("val", "test")
COMPARISON_HEADING = "Compared with the baseline"
# What an element got at the threshold: each prediction kept, and whether it is right
Kept = tuple[tuple[Prediction, bool], ...]


@dataclass(frozen=True)
class ElementEvaluation:
    """What the inference worker will produce on each element of every non-empty split, scored:
    `metrics.json`'s `pages`, the confidence threshold it was scored at (and is published), its
    Markdown table and the worst elements' (may be empty); for the comparison with a baseline,
    each split's overall precision, recall and F1 (detection: all objects pooled; classify: the
    macro averages) and, on `COMPARED_SPLITS`, what each element got (`Kept`)."""

    pages: dict
    confidence_threshold: float
    table: str
    worst_elements: str = ""
    overall: Mapping[str, Mapping[str, float | None]] = field(default_factory=dict)
    kept: Mapping[str, Mapping[str, Kept]] = field(default_factory=dict)


@dataclass(frozen=True)
class Comparison:
    """The new model's page-level evaluation beside the baseline's, on the compared splits."""

    model: dict
    baseline: ElementEvaluation
    delta: dict
    markdown: str
    #: The split the publication guard reads (test, else val), with both F1s; None without one
    guard: tuple[str, float, float] | None

    @property
    def metrics(self) -> dict:
        """`metrics.json`'s `baseline` (same shape of `pages` as the run's) and `delta`."""
        return {
            "baseline": {"model": self.model, "pages": self.baseline.pages},
            "delta": self.delta,
        }

    def refusal(self) -> str | None:
        """Why `publish_if: better` publishes nothing (the new F1 lower), else None."""
        if self.guard is None:
            return None
        split, new, old = self.guard
        if new >= old:
            return None
        digits = 3 if f"{new:.3f}" != f"{old:.3f}" else 5  # never "0.825 < 0.825"
        return (
            f"not published: F1 {new:.{digits}f} < {old:.{digits}f} of {self.model['name']} "
            f"on {split}"
        )


@dataclass(frozen=True)
class Evaluation:
    """The outcome of training: the best weights, Ultralytics' metrics of every split (and their
    Markdown: mAP table; classify mode: accuracy and confusion matrices), and what the inference
    worker will produce."""

    weights: Path
    splits: dict[str, dict]
    map_table: str
    elements: ElementEvaluation
    #: The same evaluation of the baseline, beside this one's (None without a baseline)
    comparison: Comparison | None = None

    @property
    def confidence_threshold(self) -> float:
        """The threshold the inference worker should use (calibrated on val, or fixed)."""
        return self.elements.confidence_threshold

    @property
    def metrics(self) -> dict:
        """`metrics.json`: each split's metrics, the page-level figures under `pages`, and the
        baseline's under `baseline` with the `delta` when there is one."""
        compared = self.comparison.metrics if self.comparison else {}
        return {**self.splits, "pages": self.elements.pages, **compared}

    @property
    def tables(self) -> str:
        """`evaluation.md`'s body: the inference worker's view, the comparison with the
        baseline, the worst elements, the metrics."""
        compared = (
            f"## {COMPARISON_HEADING}\n\n{self.comparison.markdown}" if self.comparison else ""
        )
        tables = [self.elements.table, compared, self.elements.worst_elements, self.map_table]
        return "\n\n".join(filter(None, tables))
