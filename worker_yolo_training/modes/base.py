"""What a mode is: everything that differs between modes, from the export to the published model,
as one value (`ModeSpec`) that the top of the package looks up once (`registry.spec_for`) and hands
to the stages as what they need of it.

A mode says which classes the export holds for it (`export.ClassSource`), how a dataset element
becomes a sample and how samples lie on disk (`extract.DatasetFormat`), which Ultralytics models it
trains (`train.Architecture`), which metrics it reports, how the inference worker's view of the
elements is evaluated and what that worker is told.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from arkindex_worker.models import DatasetSet

from worker_yolo_training.config import TrainingConfig
from worker_yolo_training.core import InferenceSettings, Mode, RunLayout
from worker_yolo_training.evaluate import ElementEvaluation
from worker_yolo_training.export import ClassSource, Export, SetElements
from worker_yolo_training.extract import DatasetFormat, ExtractedDataset
from worker_yolo_training.train import Architecture


@dataclass(frozen=True)
class Trained:
    """What the evaluation of the elements takes: the best weights, the dataset they were trained
    on, where the evaluation is written and the device to predict on."""

    weights: Path
    dataset: ExtractedDataset
    layout: RunLayout
    device: str


class ModeSpec(ClassSource, DatasetFormat, Protocol):
    mode: Mode
    architecture: Architecture
    #: How `evaluate_elements` chooses the confidence threshold, in words (training.json)
    calibration: str
    #: Title of `evaluate_elements`' table in the model version's description (`{threshold}`)
    evaluation_heading: str

    def set_elements(self, export: Export, dataset_id: str, set_name: str) -> SetElements:
        """A set's dataset elements as export rows, to be read by chunks with what
        `build_samples` reads of them."""

    def check_splits(
        self, config: TrainingConfig, sets: Sequence[DatasetSet], exports: Mapping[str, Path]
    ) -> None:
        """The mode's own checks of the selected sets, before any download (raises
        `ExtractionError`)."""

    def split_metrics(self, results: Any, class_names: Sequence[str], images: int) -> dict:
        """One split's Ultralytics validation, overall and per class, for metrics.json."""

    def metrics_table(self, metrics: dict[str, dict]) -> str:
        """`split_metrics` of every split as Markdown."""

    def evaluate_elements(
        self,
        trained: Trained,
        config: TrainingConfig,
        published: InferenceSettings | None = None,
    ) -> ElementEvaluation:
        """What the inference worker will produce on each element of every non-empty split,
        scored; writes each split's `pages` folder. With `published` (a baseline's
        configuration, as the inference worker reads it): only on the compared splits, with
        those settings, without pictures."""

    def inference_configuration(
        self, config: TrainingConfig, confidence_threshold: float, max_detection: int | None
    ) -> dict:
        """The model version's configuration: only keys the inference worker reads."""
