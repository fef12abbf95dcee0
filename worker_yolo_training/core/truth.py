"""What the page-level evaluation compares: each dataset element as the inference worker sees it,
with its annotated objects, and what the worker would create on it.

The extraction writes the annotations (`dataset/truth/<split>.jsonl`: one element a line, so that
memory stays bounded and `--resume` finds them); the evaluation reads them back. Both sides go
through this module: the file format is written here once.

Each line holds the element's id, its evaluation image (relative to the dataset: the training
image, or a copy without contrast under `evaluation/` when training images have it), its oriented
size in full-resolution pixels, and its objects as (class name, whole polygon in those pixels).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from worker_yolo_training.core.layout import DatasetFiles

Points = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class ElementTruth:
    """One dataset element as the inference worker sees it, with its annotated objects."""

    element_id: str
    # The element image: oriented crop, longest side <= thumbnail_size, no contrast
    image: Path
    # The element's oriented size in its own, full-resolution, pixels (geometry.Frame.size)
    width: int
    height: int
    # (class name, polygon in element pixels): the whole annotation as kept by the extraction
    objects: tuple[tuple[str, Points], ...]


@dataclass(frozen=True)
class Prediction:
    """One object the segmenter would create (polygon in element pixels once scaled back)."""

    class_name: str
    confidence: float
    polygon: Points


def truth_objects(objects: Iterable[tuple[str, Sequence[Sequence[float]]]]) -> str:
    """The objects of a truth line, (class name, points) each, as its JSON (`truth_line`)."""
    # JSON writes a tuple as a list: the points need no copy
    return json.dumps([[name, points] for name, points in objects])


def truth_line(element_id: str, image: str, size: tuple[int, int], objects: str) -> str:
    """One line of a truth file; `image` is relative to the dataset folder, `objects` the
    element's `truth_objects`. The same text as the whole record through `json.dumps`."""
    width, height = size
    record = {"element": element_id, "image": image, "width": width, "height": height}
    return f'{json.dumps(record)[:-1]}, "objects": {objects}}}\n'


def read_truths(root: Path, splits: Iterable[str]) -> dict[str, list[ElementTruth]]:
    """The elements of each split of the dataset at `root`, as the extraction wrote them."""
    truths = {}
    for split in splits:
        path = DatasetFiles(root).truth(split)
        elements = []
        if path.is_file():
            with path.open() as lines:
                elements = [_element(root, json.loads(line)) for line in lines]
        truths[split] = elements
    return truths


def _element(root: Path, record: dict) -> ElementTruth:
    objects = tuple((name, tuple(map(tuple, points))) for name, points in record["objects"])
    image = root / record["image"]
    return ElementTruth(record["element"], image, record["width"], record["height"], objects)
