"""Which sets are trained on: Arkindex set names → Ultralytics splits, the sets of a local
export, and the checks that the export can give what the configuration asks, before any
download."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from arkindex_worker.models import Dataset, DatasetSet

from worker_yolo_training.config import TrainingConfig
from worker_yolo_training.core import printable
from worker_yolo_training.export.reader import DatasetInfo, Export, open_export

# Arkindex set names → Ultralytics splits
SPLIT_OF_SET = {"train": "train", "dev": "val", "val": "val", "validation": "val", "test": "test"}


class ExtractionError(Exception):
    """The dataset cannot be trained on; the message says why and what to do."""


def split_of(set_name: str) -> str | None:
    """The Ultralytics split of an Arkindex set, None for a set that is not trained on."""
    return SPLIT_OF_SET.get(set_name.lower())


def select_sets(
    datasets: Sequence[DatasetInfo], wanted: Sequence[tuple[str, str]] = ()
) -> list[DatasetSet]:
    """The sets of a local export to use: `wanted` (`--set DATASET_ID:SET`), else every set of
    the export's only dataset.

    :raises ExtractionError: several datasets and no `--set`, or a set that is not there; the
        message lists what the export holds.
    """
    by_id = {dataset.id: dataset for dataset in datasets}
    if not wanted:
        if len(by_id) != 1:
            listing = ", ".join(f"{d.id} ({d.name}: {', '.join(d.sets)})" for d in datasets)
            raise ExtractionError(
                f"The export holds {len(by_id)} datasets; choose sets with "
                f"--set DATASET_ID:SET ... Datasets: {printable(listing) or 'none'}"
            )
        (dataset,) = by_id.values()
        wanted = [(dataset.id, name) for name in dataset.sets]
    sets = []
    # A set named twice on the command line is read once
    for dataset_id, name in dict.fromkeys((str(d), n) for d, n in wanted):
        dataset = by_id.get(str(dataset_id))
        if dataset is None or name not in dataset.sets:
            raise ExtractionError(
                f"Set {printable(dataset_id)}:{printable(name)} is not in the export. Available: "
                + printable(", ".join(f"{d.id}:{s}" for d in datasets for s in d.sets))
            )
        info = Dataset(id=dataset.id, name=dataset.name, sets=list(dataset.sets))
        sets.append(DatasetSet(name=name, dataset=info))
    return sets


class ClassSource(Protocol):
    """How a mode finds its classes in an export (element types, classification classes)."""

    #: What `class_names` lists, in messages ("element types")
    class_kind: str

    def class_counts(self, export: Export) -> dict[str, int]:
        """How many of each class the export holds."""

    def has_class(self, export: Export, name: str) -> bool:
        """Whether the export holds the class `name` (`class_counts` has it)."""


def check_inputs(
    config: TrainingConfig,
    classes: ClassSource,
    sets: Sequence[DatasetSet],
    exports: Mapping[str, Path],
) -> None:
    """Fail before any download when the exports cannot give what the configuration asks:
    every `class_names` entry exists (as the mode counts classes) and the train and val splits
    hold elements.

    :raises ExtractionError: naming what is missing and what the export holds instead.
    """
    split_sizes: dict[str, int] = {}
    for dataset_id, path in exports.items():
        with open_export(path) as export:
            # Counting every class reads the whole table (half a second per 10,000 pages):
            # only for the message
            missing = [name for name in config.class_names if not classes.has_class(export, name)]
            found = classes.class_counts(export) if missing else {}
            sizes = export.set_sizes(dataset_id)
        if missing:
            existing = ", ".join(f"{name} ({count})" for name, count in sorted(found.items()))
            raise ExtractionError(
                f"`class_names` {', '.join(missing)} not found in the export of dataset "
                f"{dataset_id}. {classes.class_kind.capitalize()} there: {existing}"
            )
        for dataset_set in sets:
            split = split_of(dataset_set.name)
            if dataset_set.dataset.id == dataset_id and split:
                split_sizes[split] = split_sizes.get(split, 0) + sizes.get(dataset_set.name, 0)
    for split, sets_hint in (("train", "train"), ("val", "dev or val")):
        if not split_sizes.get(split):
            raise ExtractionError(
                f"No element in a {sets_hint} set: a {split} split is needed to train. "
                f"Sets selected: {', '.join(s.name for s in sets) or 'none'}"
            )
