"""What leaves the worker as files: the model directory (only `model.pt`, as the inference workers
load it) and the `results.tar.zst` archive of the training and evaluation folders."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from arkindex_worker.utils import create_tar_zst_archive

from worker_yolo_training.core import (
    CHECKPOINTS,
    STAGING_PREFIX,
    RunLayout,
    disk_space,
    link_or_copy,
    partial_path,
)


def build_model_dir(best_weights: Path, layout: RunLayout) -> Path:
    """A directory holding only `model.pt`, as the YOLO inference worker loads it."""
    if layout.model_dir.exists():
        shutil.rmtree(layout.model_dir)
    layout.model_dir.mkdir(parents=True)
    partial = partial_path(layout.model_file)
    try:
        with disk_space(layout.model_dir, needed=best_weights.stat().st_size):
            shutil.copyfile(best_weights, partial)
        partial.replace(layout.model_file)
    finally:
        partial.unlink(missing_ok=True)
    return layout.model_dir


def results_members(layout: RunLayout, splits: Iterable[str]) -> tuple[list[Path], list[Path]]:
    """What `results.tar.zst` holds: folders (without weights) and files, at the archive root."""
    folders = [layout.training, *(layout.evaluation(split) for split in splits), layout.baseline]
    files = [layout.metrics, layout.evaluation_md, layout.summary, layout.training_metadata]
    return folders, files


def _stage(folders: Iterable[Path], files: Iterable[Path], staging: Path) -> int:
    """Link the archive's members under `staging` (copied across file systems); their size."""
    for folder in folders:
        if folder.is_dir():
            shutil.copytree(
                folder,
                staging / folder.name,
                ignore=shutil.ignore_patterns(CHECKPOINTS, "*.pt"),
                copy_function=lambda source, target: link_or_copy(Path(source), Path(target)),
            )
    for file in files:
        if file.is_file():
            link_or_copy(file, staging / file.name)
    return sum(path.stat().st_size for path in staging.rglob("*") if path.is_file())


def build_results_archive(layout: RunLayout, splits: Iterable[str], destination: Path) -> Path:
    """`results.tar.zst`: this run's training and evaluation folders (minus weights) and its
    metrics, evaluation table and extraction summary. Written under another name then renamed:
    a `results.tar.zst` is always complete.

    :raises DiskFullError: no space for the archive (saying where and how much).
    """
    folders, files = results_members(layout, splits)
    partial = partial_path(destination)
    folder = destination.parent
    with tempfile.TemporaryDirectory(prefix=STAGING_PREFIX, dir=layout.root) as staging:
        size = _stage(folders, files, Path(staging))
        try:
            where = f"{folder} and the temporary folder {tempfile.gettempdir()}"
            with disk_space(where, needed=size):
                create_tar_zst_archive(Path(staging), partial)
            destination.unlink(missing_ok=True)
            os.replace(partial, destination)
        finally:
            partial.unlink(missing_ok=True)
    return destination
