"""The output layout of a run: every path is named here once.

```
OUT/
  dataset/               the YOLO dataset (its inner layout belongs to the task) + summary.json
  training/              Ultralytics' run folder
  eval_<split>/          evaluation of the best weights on one split
  metrics.json, evaluation.md, training.json, model_version.json, run.json (what --resume checks)
  model/model.pt         the published model directory
  results.tar.zst        the results archive (members: publish.RESULTS_MEMBERS)
```
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunLayout:
    """Where a run writes; `root` is `--output` locally, a scratch folder inside Arkindex."""

    root: Path

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def summary(self) -> Path:
        return self.dataset / "summary.json"

    @property
    def training(self) -> Path:
        return self.root / "training"

    def evaluation(self, split: str) -> Path:
        return self.root / f"eval_{split}"

    @property
    def last_weights(self) -> Path:
        """Ultralytics' checkpoint of the last epoch (what `--resume` continues from)."""
        return self.training / "weights" / "last.pt"

    @property
    def fingerprint(self) -> Path:
        """What the run's dataset and training depend on (see `resume.py`)."""
        return self.root / "run.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def evaluation_md(self) -> Path:
        return self.root / "evaluation.md"

    @property
    def model_version(self) -> Path:
        return self.root / "model_version.json"

    @property
    def training_metadata(self) -> Path:
        """What this training was (mode, classes, sizes, versions, dataset counts)."""
        return self.root / "training.json"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def archive(self) -> Path:
        return self.root / "results.tar.zst"

    @property
    def crops_scratch(self) -> Path:
        """Image crops of a `--no-cache` run."""
        return self.root / "crops.tmp"

    def outputs(self) -> list[Path]:
        """What a previous run may have left here, the dataset first."""
        fixed = [self.dataset, self.training, self.metrics, self.evaluation_md]
        fixed += [self.model_version, self.model_dir, self.archive, self.crops_scratch]
        fixed += [self.fingerprint, self.training_metadata]
        return fixed + sorted(self.root.glob("eval_*"))


def clear_previous_run(layout: RunLayout) -> threading.Thread | None:
    """Start from a clean layout: a previous run's outputs are moved aside at once (nothing of
    it can mix with this run) and deleted in the background (thousands of unlinks are kernel
    time, done on another core). Returns the deleting thread, if any."""
    leftovers = sorted(layout.root.glob(".previous-run-*"))  # left by an interrupted run
    existing = [path for path in layout.outputs() if path.exists()]
    if existing:
        names = ", ".join(path.name for path in existing)
        logger.info(f"Removing the previous run's outputs from {layout.root}: {names}")
        aside = layout.root / f".previous-run-{time.time_ns()}"
        aside.mkdir()
        for path in existing:
            path.rename(aside / path.name)
        leftovers.append(aside)
    if not leftovers:
        return None

    def remove() -> None:
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)

    thread = threading.Thread(target=remove, daemon=True)
    thread.start()
    return thread
