"""The values the evaluation hands on: what the inference worker will produce on the elements, and
the whole evaluation of the best weights (with Ultralytics' metrics)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ElementEvaluation:
    """What the inference worker will produce on each element of every non-empty split, scored:
    `metrics.json`'s `pages`, the confidence threshold it was scored at (and is published), its
    Markdown table and the worst elements' (may be empty)."""

    pages: dict
    confidence_threshold: float
    table: str
    worst_elements: str = ""


@dataclass(frozen=True)
class Evaluation:
    """The outcome of training: the best weights, Ultralytics' metrics of every split (and their
    Markdown: mAP table; classify mode: accuracy and confusion matrices), and what the inference
    worker will produce."""

    weights: Path
    splits: dict[str, dict]
    map_table: str
    elements: ElementEvaluation

    @property
    def confidence_threshold(self) -> float:
        """The threshold the inference worker should use (calibrated on val, or fixed)."""
        return self.elements.confidence_threshold

    @property
    def metrics(self) -> dict:
        """`metrics.json`: each split's metrics, and the page-level figures under `pages`."""
        return {**self.splits, "pages": self.elements.pages}

    @property
    def tables(self) -> str:
        """`evaluation.md`'s body: the inference worker's view, the worst elements, the metrics."""
        tables = [self.elements.table, self.elements.worst_elements, self.map_table]
        return "\n\n".join(filter(None, tables))
