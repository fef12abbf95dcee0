"""Writing the annotations the page-level evaluation compares predictions with, during the
extraction (the format: `core.truth`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import IO

from worker_yolo_training.core import DatasetFiles, Linker, printable, truth_line
from worker_yolo_training.extract.sample import PackedSample
from worker_yolo_training.images import CropStore, ImageError

logger = logging.getLogger(__name__)

# Predicting on every training element would cost as much as an epoch: a sample of it is enough
MAX_TRAIN_ELEMENTS = 300


class TruthWriter:
    """Appends each written element's annotations to its split's file."""

    def __init__(
        self, root: Path, plain_store: CropStore | None = None, link: Linker | None = None
    ):
        self.files_of = DatasetFiles(root)
        self.link = link or Linker()
        self.plain_store = plain_store
        self.files: dict[str, IO[str]] = {}
        self.counts: dict[str, int] = {}

    def wanted(self, split: str) -> bool:
        """Whether elements of `split` may still be written: once not, never again (what is built
        from then on needs no truth objects)."""
        return split != "train" or self.counts.get(split, 0) < MAX_TRAIN_ELEMENTS

    def add(self, split: str, sample: PackedSample, image: Path) -> None:
        """One element of `split`, whose training image is `image`."""
        if not self.wanted(split):
            return
        if sample.truth is None:
            raise ValueError(f"Element {sample.element_id} was built without its truth objects")
        if self.plain_store is not None:
            image = self._plain_image(split, sample, image.name)
            if image is None:
                return
        if split not in self.files:
            path = self.files_of.truth(split)
            path.parent.mkdir(exist_ok=True)
            self.files[split] = path.open("w")
        relative = str(image.relative_to(self.files_of.root))
        self.files[split].write(
            truth_line(sample.element_id, relative, sample.frame.size, sample.truth)
        )
        self.counts[split] = self.counts.get(split, 0) + 1

    def _plain_image(self, split: str, sample: PackedSample, name: str) -> Path | None:
        try:
            path, _ = self.plain_store.get(sample.request, sample.frame)
        except ImageError as error:
            logger.warning(
                f"Element {printable(sample.element_id)} left out of the page-level evaluation: its image "
                f"without contrast failed ({error})"
            )
            return None
        target = self.files_of.plain_images(split) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        self.link(path, target)
        return target

    def close(self) -> None:
        for file in self.files.values():
            file.close()
