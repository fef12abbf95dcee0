"""What a mode means, from the export to the published model: one task per mode.

A task says how a dataset element becomes a sample (its labels), how samples are laid out on
disk for Ultralytics, which Ultralytics task and weights it trains, which metrics it reports and
what the inference worker is told. Adding a mode = one module here + its line in `TASKS`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from arkindex_worker.models import DatasetSet

from worker_yolo_training.config import Mode, TrainingConfig
from worker_yolo_training.export import Export, Page
from worker_yolo_training.geometry import Skip
from worker_yolo_training.sample import Sample

if TYPE_CHECKING:
    from worker_yolo_training.dataset import ExtractedDataset


class Task(Protocol):
    mode: Mode
    #: Ultralytics' task name (`YOLO(..., task=...)`)
    ultralytics_task: str
    #: Suffix of Ultralytics' file names (`yolov8m-seg.pt`)
    weights_suffix: str
    #: What `class_names` lists, in messages ("element types")
    class_kind: str
    #: How `evaluate_elements` chooses the confidence threshold, in words (training.json)
    calibration: str
    #: Title of `evaluate_elements`' table in the model version's description (`{threshold}`)
    evaluation_heading: str

    def class_counts(self, export: Export) -> dict[str, int]:
        """How many of each class the export holds (to check `class_names` before downloads)."""

    def pages(self, export: Export, dataset_id: str, set_name: str) -> Iterator[Page]:
        """A set's dataset elements, with what `build_sample` reads of them."""

    def check_splits(
        self, config: TrainingConfig, sets: Sequence[DatasetSet], exports: Mapping[str, Path]
    ) -> None:
        """The mode's own checks of the selected sets, before any download (raises
        `ExtractionError`)."""

    def build_sample(self, page: Page, config: TrainingConfig) -> Sample | Skip:
        """A dataset element's sample, or why it has none."""

    def prepare_split(self, root: Path, split: str) -> None:
        """Create a split's folders under the dataset root."""

    def image_path(self, root: Path, split: str, sample: Sample) -> Path:
        """Where a sample's image goes in the dataset."""

    def write_label(self, root: Path, split: str, sample: Sample) -> None:
        """Write a sample's label, if the layout has label files."""

    def write_data(self, root: Path, splits: Iterable[str], class_names: Sequence[str]) -> Path:
        """Write what Ultralytics' `data=` needs; returns what to pass it."""

    def split_metrics(self, results: Any, class_names: Sequence[str], images: int) -> dict:
        """One split's evaluation, overall and per class, for metrics.json."""

    def metrics_table(self, metrics: dict[str, dict]) -> str:
        """`split_metrics` of every split as Markdown."""

    def use_segment(self, class_names: Sequence[str]) -> list[str]:
        """Classes whose mask polygons the inference worker outputs."""

    def evaluate_elements(
        self,
        weights: Path,
        dataset: ExtractedDataset,
        config: TrainingConfig,
        output_dir: Path,
        device: str,
    ) -> tuple[dict, str, str]:
        """What the inference worker will produce on each element of every non-empty split
        (`metrics.json`'s `pages`, each split with its `confidence_threshold`), its Markdown table
        and the worst elements' (may be empty); writes `eval_<split>/pages/`."""

    def inference_configuration(
        self, config: TrainingConfig, confidence_threshold: float, max_detection: int | None
    ) -> dict:
        """The model version's configuration: only keys the inference worker reads."""


def task_for(mode: Mode) -> Task:
    """The task of a mode."""
    from worker_yolo_training.tasks.classification import CLASSIFICATION_TASK
    from worker_yolo_training.tasks.detection import DETECTION_TASKS

    tasks: dict[Mode, Task] = {**DETECTION_TASKS, Mode.Classify: CLASSIFICATION_TASK}
    return tasks[mode]


def weights_name(task: Task, model_size: str) -> str:
    """File name of Ultralytics' pretrained weights for this task and size."""
    return f"yolo{model_size}{task.weights_suffix}.pt"


def architecture_name(task: Task, model_size: str) -> str:
    """File name of Ultralytics' architecture for this task and size (no download needed)."""
    return f"yolo{model_size}{task.weights_suffix}.yaml"
