"""The output layout of a run: every file and folder name is spelled here once.

```
OUT/
  dataset/               the YOLO dataset (its images and labels belong to the mode) + summary.json,
                         truth/<split>.jsonl, evaluation/<split>/ (`DatasetFiles`)
  training/              Ultralytics' run folder (weights/best.pt, weights/last.pt, curves, …)
  eval_<split>/          evaluation of the best weights on one split; pages/ holds the page-level
                         evaluation (predictions.jsonl and pictures)
  baseline/eval_<split>/  the compared model's page-level evaluation (when there is one)
  metrics.json, evaluation.md, training.json, model_version.json, run.json (what --resume checks)
  model/model.pt         the published model directory
  results.tar.zst        the results archive (its members: `publish.results_members`)
  .worker-yolo-training.lock   held by the run using the folder (`lock.py`)
```

run.json is also the proof that the outputs are the worker's: a new run clears them only then.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from worker_yolo_training.core.files import partial_path
from worker_yolo_training.core.lock import OutputFolderError

logger = logging.getLogger(__name__)

# The only file of a published model directory (what the inference workers load)
MODEL_FILE = "model.pt"
# Ultralytics' checkpoints folder in each of its run folders (`best.pt`, `last.pt`)
CHECKPOINTS = "weights"
EVALUATION_PREFIX = "eval_"
# Ultralytics' splits, in the order they are written and evaluated
SPLITS = ("train", "val", "test")
# Where a new run moves a previous run's outputs before deleting them in the background
PREVIOUS_RUN_PREFIX = ".previous-run-"
# Where the results archive's members are gathered (left behind only by an interrupted run)
STAGING_PREFIX = ".results-staging-"


def checkpoint(run_folder: Path, which: str) -> Path:
    """Ultralytics' checkpoint `which` (`best`, `last`) in one of its run folders."""
    return Path(run_folder) / CHECKPOINTS / f"{which}.pt"


class At:
    """A path of a layout: these parts under its root (a descriptor, read on an instance)."""

    def __init__(self, *parts: str):
        self.parts = parts

    def __get__(self, layout, owner=None):
        return self if layout is None else layout.root.joinpath(*self.parts)


@dataclass(frozen=True)
class DatasetFiles:
    """What every mode's dataset folder holds besides its images and labels."""

    root: Path

    # What was extracted and skipped, and the settings read from the dataset; written last
    summary = At("summary.json")

    def truth(self, split: str) -> Path:
        """The annotations the page-level evaluation compares predictions with."""
        return self.root / "truth" / f"{split}.jsonl"

    def plain_images(self, split: str) -> Path:
        """Evaluation images without contrast, when training images have it."""
        return self.root / "evaluation" / split


@dataclass(frozen=True)
class RunLayout:
    """Where a run writes; `root` is `--output` locally, a scratch folder inside Arkindex."""

    root: Path

    dataset = At("dataset")
    training = At("training")
    # Ultralytics' checkpoint of the last epoch (what `--resume` continues from)
    last_weights = At("training", CHECKPOINTS, "last.pt")
    # What the run's dataset and training depend on (see `resume.py`)
    fingerprint = At("run.json")
    metrics = At("metrics.json")
    evaluation_md = At("evaluation.md")
    model_version = At("model_version.json")
    # What this training was (mode, classes, sizes, versions, dataset counts)
    training_metadata = At("training.json")
    # The baseline's page-level evaluation (its eval_<split>/pages), when a model is compared
    baseline = At("baseline")
    model_dir = At("model")
    model_file = At("model", MODEL_FILE)
    archive = At("results.tar.zst")
    # Image crops of a `--no-cache` run
    crops_scratch = At("crops.tmp")
    # Held while a run uses the folder; not an output (never cleared nor archived)
    lock = At(".worker-yolo-training.lock")

    @property
    def summary(self) -> Path:
        return DatasetFiles(self.dataset).summary

    def evaluation(self, split: str) -> Path:
        return self.root / f"{EVALUATION_PREFIX}{split}"

    def pages(self, split: str) -> Path:
        """A split's page-level evaluation: predictions and pictures."""
        return self.evaluation(split) / "pages"

    def predictions(self, split: str) -> Path:
        """What the inference worker would create on each element of a split, at the threshold."""
        return self.pages(split) / "predictions.jsonl"

    def all_predictions(self, split: str) -> Path:
        """Every prediction of a split, at every confidence, until the threshold is known."""
        return self.pages(split) / "all_predictions.jsonl"

    def evaluation_outputs(self) -> list[Path]:
        """What the evaluation and packaging write, after training."""
        fixed = [self.metrics, self.evaluation_md, self.model_version, self.training_metadata]
        fixed += [self.model_dir, self.baseline, partial_path(self.archive)]
        return fixed + [self.evaluation(split) for split in SPLITS]

    def outputs(self) -> list[Path]:
        """What a previous run may have left here, the dataset first."""
        fixed = [self.dataset, self.training, self.metrics, self.evaluation_md]
        fixed += [self.model_version, self.model_dir, self.archive, self.crops_scratch]
        fixed += [self.fingerprint, self.training_metadata, self.baseline]
        fixed += [partial_path(self.archive)]
        return fixed + [self.evaluation(split) for split in SPLITS]


@dataclass(frozen=True)
class Removal:
    """A previous run's outputs, moved aside, being deleted in the background (`thread`): all
    but its dataset (`dataset`), whose files a new extraction may take back rather than write
    again (`files.move_if_same`); `finish` deletes the rest of it."""

    thread: threading.Thread
    dataset: Path | None  # the previous run's dataset, aside

    def finish(self) -> None:
        """Wait for the background deletion, then delete what is left of the previous dataset."""
        self.thread.join()
        if self.dataset is not None:
            shutil.rmtree(self.dataset.parent, ignore_errors=True)


def clear_previous_run(layout: RunLayout) -> Removal | None:
    """Start from a clean layout: a previous run's outputs are moved aside at once (nothing of
    it can mix with this run) and deleted in the background (thousands of unlinks are kernel
    time, done on another core), its dataset last (`Removal`). None when there is nothing to
    delete. Only the layout's own names are touched, and only when the previous run's run.json
    is there.

    :raises OutputFolderError: output names are there without run.json (the user's files?)."""
    # left by an interrupted run
    leftovers = [
        *layout.root.glob(f"{PREVIOUS_RUN_PREFIX}*"),
        *layout.root.glob(f"{STAGING_PREFIX}*"),
    ]
    existing = [path for path in layout.outputs() if path.exists()]
    if existing and not layout.fingerprint.is_file():
        names = ", ".join(path.name for path in existing)
        raise OutputFolderError(
            f"--output {layout.root} holds {names} but no {layout.fingerprint.name}: nothing "
            "shows that an earlier run of the worker wrote them, so nothing is deleted. Move "
            "them away or choose another --output"
        )
    dataset = None
    if existing:
        names = ", ".join(path.name for path in existing)
        logger.info(f"Removing the previous run's outputs from {layout.root}: {names}")
        aside = layout.root / f"{PREVIOUS_RUN_PREFIX}{time.time_ns()}"
        aside.mkdir()
        for path in existing:
            path.rename(aside / path.name)
        dataset = RunLayout(aside).dataset
        if dataset.is_dir():  # the rest now, the dataset once extraction no longer needs it
            leftovers += [path for path in aside.iterdir() if path != dataset]
        else:
            leftovers.append(aside)
            dataset = None
    if not leftovers and dataset is None:
        return None

    def remove() -> None:
        for path in leftovers:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    thread = threading.Thread(target=remove, daemon=True)
    thread.start()
    return Removal(thread, dataset)
