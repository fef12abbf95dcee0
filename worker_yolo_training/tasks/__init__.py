"""What a mode means, from the export to the published model: one task per mode.

A task says how a dataset element becomes a sample (its labels), how samples are laid out on
disk for Ultralytics, which Ultralytics task and weights it trains, which metrics it reports and
what the inference worker is told. Adding a mode = one module here + its line in `TASKS`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from worker_yolo_training.config import Mode, TrainingConfig
from worker_yolo_training.export import Export, Page
from worker_yolo_training.geometry import Skip
from worker_yolo_training.sample import Sample


class Task(Protocol):
    mode: Mode
    #: Ultralytics' task name (`YOLO(..., task=...)`)
    ultralytics_task: str
    #: Suffix of Ultralytics' file names (`yolov8m-seg.pt`)
    weights_suffix: str
    #: What `class_names` lists, in messages ("element types")
    class_kind: str

    def class_counts(self, export: Export) -> dict[str, int]:
        """How many of each class the export holds (to check `class_names` before downloads)."""

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

    def use_segment(self, class_names: Sequence[str]) -> list[str]:
        """Classes whose mask polygons the inference worker outputs."""


def task_for(mode: Mode) -> Task:
    """The task of a mode."""
    from worker_yolo_training.tasks.detection import DETECTION_TASKS

    tasks: dict[Mode, Task] = {**DETECTION_TASKS}
    return tasks[mode]


def weights_name(task: Task, model_size: str) -> str:
    """File name of Ultralytics' pretrained weights for this task and size."""
    return f"yolo{model_size}{task.weights_suffix}.pt"


def architecture_name(task: Task, model_size: str) -> str:
    """File name of Ultralytics' architecture for this task and size (no download needed)."""
    return f"yolo{model_size}{task.weights_suffix}.yaml"
