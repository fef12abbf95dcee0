"""The extracted dataset as the later stages receive it, what each split holds and what was left
out of it, the checks that it can be trained on, and what a mode decides of its layout on disk."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from worker_yolo_training.config import TrainingConfig
from worker_yolo_training.core import SPLITS, DatasetFiles, Skip, markdown_table
from worker_yolo_training.export import ExtractionError, Page
from worker_yolo_training.extract.derived import Derivation, derivation_from_summary
from worker_yolo_training.extract.sample import PackedSample, Sample

logger = logging.getLogger(__name__)


class DatasetFormat(Protocol):
    """What a mode decides of the dataset: an element's sample, and where it goes on disk."""

    def build_samples(self, pages: Sequence[Page], config: TrainingConfig) -> list[Sample | Skip]:
        """Each dataset element's sample, or why it has none (elements built together: numpy's
        and shapely's per-call costs are shared)."""

    def prepare_split(self, root: Path, split: str) -> None:
        """Create a split's folders under the dataset root."""

    def image_path(self, root: Path, split: str, sample: PackedSample) -> Path:
        """Where a sample's image goes in the dataset."""

    def label_path(self, root: Path, split: str, sample: PackedSample) -> Path | None:
        """Where a sample's label file goes (its text: `sample.label`); None when the layout has
        no label files."""

    def write_data(self, root: Path, splits: Iterable[str], class_names: Sequence[str]) -> Path:
        """Write what Ultralytics' `data=` needs; returns what to pass it."""


@dataclass
class SplitReport:
    """What one split holds and what was left out of it."""

    elements: int = 0
    images: int = 0
    objects: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    failed_images: list[dict] = field(default_factory=list)
    sets: list[str] = field(default_factory=list)
    downloaded: int = 0
    cached: int = 0
    several_parts: int = 0

    def counts(self, class_names: Iterable[str]) -> dict:
        """What the split holds and skipped, as `training.json` records it."""
        return {
            "elements": self.elements,
            "images": self.images,
            "objects": {name: self.objects.get(name, 0) for name in class_names},
            "objects_with_several_parts": self.several_parts,
            "skipped": {reason.value: count for reason, count in sorted(self.skipped.items())},
        }

    def as_dict(self, class_names: Iterable[str]) -> dict:
        """The split in `summary.json`."""
        return {
            "sets": self.sets,
            **self.counts(class_names),
            "failed_images": self.failed_images,
            "images_downloaded": self.downloaded,
            "images_from_cache": self.cached,
        }

    @classmethod
    def from_dict(cls, values: Mapping) -> SplitReport:
        """A split as `as_dict` wrote it (download counts are not kept)."""
        return cls(
            elements=values["elements"],
            images=values["images"],
            objects=Counter(values["objects"]),
            skipped=Counter({Skip(reason): count for reason, count in values["skipped"].items()}),
            failed_images=values["failed_images"],
            sets=values["sets"],
            several_parts=values["objects_with_several_parts"],
        )


@dataclass(frozen=True)
class ExtractedDataset:
    """The dataset on disk, as training and evaluation need it."""

    root: Path
    data: Path  # what Ultralytics' `data=` takes
    reports: dict[str, SplitReport]
    derivation: Derivation  # training and evaluation settings read from the objects

    @property
    def splits(self) -> list[str]:
        """Splits holding at least one image, in train, val, test order."""
        return [split for split in SPLITS if self.reports[split].images]


def check_trainable(reports: Mapping[str, SplitReport], config: TrainingConfig) -> None:
    """Stop before training when too many images failed, or a split needed to train is empty.

    :raises ExtractionError: saying what is missing; the summary logged before says why.
    """
    for split, report in reports.items():
        failed = len(report.failed_images)
        if report.elements and failed / report.elements > config.max_failed_images:
            raise ExtractionError(
                f"{failed} of {report.elements} images of the {split} split failed to download "
                f"(more than advanced.max_failed_images = {config.max_failed_images:.0%}); "
                f"first failures: {report.failed_images[:3]}. Check the image server, or raise "
                "advanced.max_failed_images."
            )
    for split in ("train", "val"):
        if not reports[split].images:
            raise ExtractionError(
                f"The {split} split has no image after extraction: nothing to train on "
                "(the summary above says what was skipped)."
            )
    if not sum(reports["train"].objects.values()):
        raise ExtractionError(
            f"No object of {', '.join(config.class_names)} in the train split: check "
            "`class_names` and `advanced.worker_runs` (the summary above says what was skipped)."
        )


def open_dataset(
    root: Path,
    reports: dict[str, SplitReport],
    derivation: Derivation,
    layout: DatasetFormat,
    config: TrainingConfig,
) -> ExtractedDataset:
    """Check that the dataset can be trained on, then write what Ultralytics reads."""
    check_trainable(reports, config)
    splits = [split for split in SPLITS if reports[split].images]
    data = layout.write_data(root, splits, config.class_names)
    return ExtractedDataset(root, data, reports, derivation)


def load_dataset(
    root: Path, layout: DatasetFormat, config: TrainingConfig
) -> ExtractedDataset | None:
    """The dataset a previous run finished writing at `root` (its summary is written last), or
    None (`--resume`)."""
    path = DatasetFiles(root).summary
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
        reports = {split: SplitReport.from_dict(summary["splits"][split]) for split in SPLITS}
        derivation = derivation_from_summary(summary["derived"], config.training_kwargs)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        logger.warning(f"{path} is damaged ({type(error).__name__}: {error}): not reused")
        return None
    return open_dataset(root, reports, derivation, layout, config)


def summary_table(splits: Mapping[str, Mapping]) -> str:
    """A summary's splits (`SplitReport.counts` or `as_dict`) as a Markdown table: one column per
    split."""
    names = list(next(iter(splits.values()))["objects"])
    reasons = sorted({reason for report in splits.values() for reason in report["skipped"]})
    reports = splits.values()
    rows = [
        ("elements", [report["elements"] for report in reports]),
        ("images", [report["images"] for report in reports]),
        *[(f"objects: {name}", [report["objects"][name] for report in reports]) for name in names],
        (
            "objects with several parts (joined)",
            [report["objects_with_several_parts"] for report in reports],
        ),
        *[
            (f"skipped: {reason}", [report["skipped"].get(reason, 0) for report in reports])
            for reason in reasons
        ],
    ]
    return markdown_table(["", *splits], [[title, *values] for title, values in rows])
