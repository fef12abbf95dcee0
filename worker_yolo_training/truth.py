"""The annotations the page-level evaluation compares predictions with, written during
extraction (`dataset/truth/<split>.jsonl`: one element a line) so that memory stays bounded and
`--resume` finds them.

Each line holds the element's id, its evaluation image (relative to the dataset: the training
image, or a copy without contrast under `evaluation/` when training images have it), its oriented
size in full-resolution pixels, and its objects as (class name, whole polygon in those pixels).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import IO

from worker_yolo_training.files import link_or_copy
from worker_yolo_training.images import CropStore, ImageError
from worker_yolo_training.pages import ElementTruth
from worker_yolo_training.sample import Sample

logger = logging.getLogger(__name__)

# Predicting on every training element would cost as much as an epoch: a sample of it is enough
MAX_TRAIN_ELEMENTS = 300


class TruthWriter:
    """Appends each written element's annotations to its split's file."""

    def __init__(self, root: Path, plain_store: CropStore | None = None):
        self.root = root
        self.plain_store = plain_store
        self.files: dict[str, IO[str]] = {}
        self.counts: dict[str, int] = {}

    def add(self, split: str, sample: Sample, image: Path) -> None:
        """One element of `split`, whose training image is `image`."""
        if split == "train" and self.counts.get(split, 0) >= MAX_TRAIN_ELEMENTS:
            return
        if self.plain_store is not None:
            image = self._plain_image(split, sample, image.name)
            if image is None:
                return
        if split not in self.files:
            (self.root / "truth").mkdir(exist_ok=True)
            self.files[split] = (self.root / "truth" / f"{split}.jsonl").open("w")
        width, height = sample.frame.size
        record = {
            "element": sample.page.id,
            "image": str(image.relative_to(self.root)),
            "width": width,
            "height": height,
            # JSON writes a tuple as a list: the points need no copy
            "objects": [[name, points] for name, points in sample.truth],
        }
        self.files[split].write(json.dumps(record) + "\n")
        self.counts[split] = self.counts.get(split, 0) + 1

    def _plain_image(self, split: str, sample: Sample, name: str) -> Path | None:
        try:
            path, _ = self.plain_store.get(sample.request, sample.frame)
        except ImageError as error:
            logger.warning(
                f"Element {sample.page.id} left out of the page-level evaluation: its image "
                f"without contrast failed ({error})"
            )
            return None
        target = self.root / "evaluation" / split / name
        target.parent.mkdir(parents=True, exist_ok=True)
        link_or_copy(path, target)
        return target

    def close(self) -> None:
        for file in self.files.values():
            file.close()


def read_truths(root: Path, splits: list[str]) -> dict[str, list[ElementTruth]]:
    """The elements of each split written by `TruthWriter`."""
    truths = {}
    for split in splits:
        path = root / "truth" / f"{split}.jsonl"
        elements = []
        if path.is_file():
            with path.open() as lines:
                for line in lines:
                    record = json.loads(line)
                    objects = tuple(
                        (name, tuple(map(tuple, points))) for name, points in record["objects"]
                    )
                    elements.append(
                        ElementTruth(
                            record["element"],
                            root / record["image"],
                            record["width"],
                            record["height"],
                            objects,
                        )
                    )
        truths[split] = elements
    return truths
