"""What leaves the worker as files: the model directory (only `model.pt`, as the inference workers
load it) and the `results.tar.zst` archive of the training and evaluation folders."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from arkindex_worker.utils import create_tar_zst_archive

from worker_yolo_training.core import CHECKPOINTS, RunLayout


def build_model_dir(best_weights: Path, layout: RunLayout) -> Path:
    """A directory holding only `model.pt`, as the YOLO inference worker loads it."""
    if layout.model_dir.exists():
        shutil.rmtree(layout.model_dir)
    layout.model_dir.mkdir(parents=True)
    shutil.copyfile(best_weights, layout.model_file)
    return layout.model_dir


def results_members(layout: RunLayout, splits: Iterable[str]) -> tuple[list[Path], list[Path]]:
    """What `results.tar.zst` holds: folders (without weights) and files, at the archive root."""
    folders = [layout.training, *(layout.evaluation(split) for split in splits), layout.baseline]
    files = [layout.metrics, layout.evaluation_md, layout.summary, layout.training_metadata]
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
                    folder,
                    staging / folder.name,
                    ignore=shutil.ignore_patterns(CHECKPOINTS, "*.pt"),
                )
        for file in files:
            if file.is_file():
                shutil.copyfile(file, staging / file.name)
        destination.unlink(missing_ok=True)
        create_tar_zst_archive(staging, destination)
    return destination
