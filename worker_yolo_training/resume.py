"""`--resume`: continuing an interrupted local run in the same output folder.

At start, a run writes what its dataset depends on (`run.json`: the exports' digests, the
configuration, the sets, the images folder). `--resume` reuses the dataset when all of it is
unchanged and complete, and continues training from `training/weights/last.pt`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arkindex_worker.models import DatasetSet

from worker_yolo_training.config import ConfigurationError, TrainingConfig
from worker_yolo_training.core import RunLayout, clear_previous_run
from worker_yolo_training.extract import DatasetFormat, ExtractedDataset, load_dataset

logger = logging.getLogger(__name__)


def run_fingerprint(
    raw_config: Mapping[str, Any],
    sets: Sequence[DatasetSet],
    exports: Mapping[str, Path],
    images: Path | None,
) -> dict:
    """What a run's dataset and training depend on, as JSON values."""
    digests = {}
    for dataset_id, path in sorted(exports.items()):
        with open(path, "rb") as export:
            digests[dataset_id] = hashlib.file_digest(export, "sha256").hexdigest()
    return {
        "exports": digests,
        "configuration": json.loads(json.dumps(raw_config, sort_keys=True, default=str)),
        "sets": sorted(f"{s.dataset.id}:{s.name}" for s in sets),
        "images": str(images.resolve()) if images else None,
    }


@dataclass(frozen=True)
class Start:
    """How this run starts in its output folder."""

    dataset: ExtractedDataset | None = None  # a complete dataset to reuse
    last_weights: Path | None = None  # training to continue
    removal: threading.Thread | None = None  # a previous run being deleted

    def wait_for_removal(self) -> None:
        """The previous run's outputs are deleted in the background: wait for the end."""
        if self.removal is not None:
            self.removal.join()


def start_run(
    layout: RunLayout,
    fingerprint: dict,
    resume: bool,
    dataset_format: DatasetFormat,
    config: TrainingConfig,
) -> Start:
    """A fresh start (a previous run's outputs removed) or, with `resume`, what can be reused.

    :raises ConfigurationError: nothing to resume, the run is complete, or its inputs changed
        (saying which).
    """
    if not resume:
        removal = clear_previous_run(layout)
        layout.root.mkdir(parents=True, exist_ok=True)
        layout.fingerprint.write_text(json.dumps(fingerprint, indent=2))
        return Start(removal=removal)
    if not layout.fingerprint.is_file():
        raise ConfigurationError(
            [f"--resume: nothing to resume in {layout.root} (no {layout.fingerprint.name}); "
             "run without --resume"]
        )  # fmt: skip
    previous = json.loads(layout.fingerprint.read_text())
    changed = [key for key in fingerprint if previous.get(key) != fingerprint[key]]
    if changed:
        raise ConfigurationError(
            [f"--resume: the {', '.join(changed)} changed since the run in {layout.root} "
             "started; run without --resume to start again"]
        )  # fmt: skip
    if layout.metrics.is_file():
        raise ConfigurationError(
            [f"--resume: the run in {layout.root} is complete, nothing to resume"]
        )
    dataset = load_dataset(layout.dataset, dataset_format, config)
    if dataset is None:
        shutil.rmtree(layout.dataset, ignore_errors=True)
    last = layout.last_weights if layout.last_weights.is_file() else None
    logger.info(
        f"Resuming the run in {layout.root}: "
        + ("dataset reused" if dataset else "dataset extracted again (it was not complete)")
        + (f", training continued from {last}" if last else ", training from the start")
    )
    return Start(dataset=dataset, last_weights=last)
