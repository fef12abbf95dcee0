"""What leaves the worker: the model directory, its configuration and description, and the
`results.tar.zst` archive of the training and evaluation folders."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from arkindex_worker.utils import create_tar_zst_archive

from worker_yolo_training.config import Mode, TrainingConfig
from worker_yolo_training.layout import RunLayout

MODEL_FILE = "model.pt"


def build_model_dir(best_weights: Path, model_dir: Path) -> Path:
    """A directory holding only `model.pt`, as the YOLO inference worker loads it."""
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True)
    shutil.copyfile(best_weights, model_dir / MODEL_FILE)
    return model_dir


def model_configuration(config: TrainingConfig) -> dict:
    """The model version's configuration: what the inference worker reads (`thumbnail_size`,
    `use_segment`) and what a later fine-tuning needs."""
    return {
        "thumbnail_size": config.image_size,
        "use_segment": list(config.class_names) if config.mode is Mode.Segment else [],
        "mode": config.mode.value,
        "class_names": list(config.class_names),
        "image_size": config.image_size,
        "ultralytics_model_size": config.model_size,
    }


def model_description(config: TrainingConfig, table: str) -> str:
    """Markdown shown on the model version's page."""
    return (
        f"YOLO{config.model_size} trained in {config.mode.value} mode on "
        f"{', '.join(config.class_names)} ({config.image_size} px).\n\n## Evaluation\n\n{table}\n"
    )


def results_members(layout: RunLayout, splits: Iterable[str]) -> tuple[list[Path], list[Path]]:
    """What `results.tar.zst` holds: folders (without weights) and files, at the archive root."""
    folders = [layout.training, *(layout.evaluation(split) for split in splits)]
    files = [layout.metrics, layout.evaluation_md, layout.summary]
    return folders, files


def build_results_archive(layout: RunLayout, splits: Iterable[str], destination: Path) -> Path:
    """`results.tar.zst`: this run's training and evaluation folders (minus weights) and its
    metrics, evaluation table and extraction summary."""
    folders, files = results_members(layout, splits)
    with tempfile.TemporaryDirectory(prefix="yolo-results-") as staging:
        staging = Path(staging)
        for folder in folders:
            if folder.is_dir():
                shutil.copytree(
                    folder, staging / folder.name, ignore=shutil.ignore_patterns("weights", "*.pt")
                )
        for file in files:
            if file.is_file():
                shutil.copyfile(file, staging / file.name)
        destination.unlink(missing_ok=True)
        create_tar_zst_archive(staging, destination)
    return destination
