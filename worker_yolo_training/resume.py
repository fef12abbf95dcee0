"""`--resume`: continuing an interrupted local run in the same output folder.

At start, a run writes what its dataset depends on (`run.json`: the exports' digests, the
configuration, the sets, the images folder). `--resume` reuses the dataset when all of it is
unchanged and complete, and continues training from `training/weights/last.pt`.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arkindex_worker.models import DatasetSet

from worker_yolo_training.config import ConfigurationError, TrainingConfig
from worker_yolo_training.core import Removal, RunLayout, clear_previous_run, write_text
from worker_yolo_training.extract import DatasetFormat, ExtractedDataset, load_dataset

logger = logging.getLogger(__name__)

# The format of run.json; a run.json of another format is not resumed
FINGERPRINT_VERSION = 1
FINGERPRINT_KEYS = ("version", "exports", "configuration", "sets", "images")
START_AGAIN = "run without --resume to start again"


def run_fingerprint(
    raw_config: Mapping[str, Any],
    sets: Sequence[DatasetSet],
    exports: Mapping[str, Path],
    digest: Callable[[Path], str],
    images: Path | None,
) -> dict:
    """What a run's dataset and training depend on, as JSON values; each dataset's export by
    its `digest` (its SHA-256, `cli.ExportDigests`)."""
    return {
        "version": FINGERPRINT_VERSION,
        "exports": {dataset_id: digest(path) for dataset_id, path in sorted(exports.items())},
        "configuration": json.loads(json.dumps(raw_config, sort_keys=True, default=str)),
        "sets": sorted(f"{s.dataset.id}:{s.name}" for s in sets),
        "images": str(images.resolve()) if images else None,
    }


@dataclass(frozen=True)
class Start:
    """How this run starts in its output folder."""

    dataset: ExtractedDataset | None = None  # a complete dataset to reuse
    last_weights: Path | None = None  # training to continue
    removal: Removal | None = None  # a previous run being deleted

    @property
    def previous_dataset(self) -> Path | None:
        """The previous run's dataset, aside until `wait_for_removal` (extraction may take
        back its identical files)."""
        return self.removal.dataset if self.removal is not None else None

    def wait_for_removal(self) -> None:
        """The previous run's outputs are deleted in the background: wait for the end (its
        dataset is deleted now, after the extraction)."""
        if self.removal is not None:
            self.removal.finish()


def start_run(
    layout: RunLayout,
    fingerprint: dict,
    resume: bool,
    dataset_format: DatasetFormat,
    config: TrainingConfig,
) -> Start:
    """A fresh start (a previous run's outputs removed) or, with `resume`, what can be reused.

    :raises ConfigurationError: nothing to resume, run.json damaged, the run is complete, or its
        inputs changed (saying which).
    :raises OutputFolderError: (a fresh start) outputs there without the run.json of a run.
    """
    if not resume:
        removal = clear_previous_run(layout)
        layout.root.mkdir(parents=True, exist_ok=True)
        write_text(layout.fingerprint, json.dumps(fingerprint, indent=2))
        return Start(removal=removal)
    previous = read_fingerprint(layout)
    changed = [key for key in fingerprint if previous.get(key) != fingerprint[key]]
    if changed:
        raise ConfigurationError(
            [f"--resume: the {', '.join(changed)} changed since the run in {layout.root} "
             f"started; {START_AGAIN}"]
        )  # fmt: skip
    if layout.archive.is_file():
        raise ConfigurationError(
            [f"--resume: the run in {layout.root} is complete, nothing to resume"]
        )
    for path in layout.evaluation_outputs():  # evaluated again, whole
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
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


def read_fingerprint(layout: RunLayout) -> dict:
    """The run.json of the run to resume.

    :raises ConfigurationError: there is none, or it is damaged, foreign or of another format
        (saying which).
    """
    path = layout.fingerprint
    if not path.is_file():
        raise ConfigurationError(
            [f"--resume: nothing to resume in {layout.root} (no {path.name}); {START_AGAIN}"]
        )
    try:
        previous = json.loads(path.read_bytes())
    except ValueError as error:
        raise ConfigurationError(
            [f"--resume: {path} is damaged ({error}); {START_AGAIN}"]
        ) from None
    if not isinstance(previous, dict):
        kind = type(previous).__name__
        raise ConfigurationError(
            [f"--resume: {path} holds a JSON {kind}, not the record of a run; {START_AGAIN}"]
        )
    missing = [key for key in FINGERPRINT_KEYS if key not in previous]
    if missing:
        raise ConfigurationError(
            [f"--resume: {path} lacks {', '.join(missing)} (edited, or not written by this "
             f"worker); {START_AGAIN}"]
        )  # fmt: skip
    if previous["version"] != FINGERPRINT_VERSION:
        raise ConfigurationError(
            [f"--resume: {path} is of format {previous['version']!r}, this worker reads "
             f"{FINGERPRINT_VERSION} (written by another version); {START_AGAIN}"]
        )  # fmt: skip
    return previous
