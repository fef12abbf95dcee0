"""Writing the training dataset: one image (and label) per dataset element, per split, in the
task's layout, plus `summary.json` with what was extracted and everything that was skipped.

Policy lives here: an element in two splits is written in both and reported as a leak; an
element in two sets of one split is written once; the dataset must be trainable at the end.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from worker_yolo_training.config import TrainingConfig
from worker_yolo_training.dataset_shape import DatasetShape
from worker_yolo_training.derived import Derivation, derive, log_derivation, sizes_table
from worker_yolo_training.export import Page
from worker_yolo_training.fetching import Fetched, fetch_all
from worker_yolo_training.files import disk_space, link_or_copy
from worker_yolo_training.geometry import Skip
from worker_yolo_training.images import CropStore
from worker_yolo_training.sample import Sample
from worker_yolo_training.sets import SPLITS, ExtractionError, split_of
from worker_yolo_training.tasks import Task
from worker_yolo_training.truth import TruthWriter

logger = logging.getLogger(__name__)


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

    def as_dict(self, class_names: Iterable[str]) -> dict:
        return {
            "sets": self.sets,
            "elements": self.elements,
            "images": self.images,
            "objects": {name: self.objects.get(name, 0) for name in class_names},
            "objects_with_several_parts": self.several_parts,
            "skipped": {reason.value: count for reason, count in sorted(self.skipped.items())},
            "failed_images": self.failed_images,
            "images_downloaded": self.downloaded,
            "images_from_cache": self.cached,
        }


@dataclass(frozen=True)
class ExtractedDataset:
    """The dataset on disk, as training and evaluation need it."""

    root: Path
    data: Path  # what Ultralytics' `data=` takes
    reports: dict[str, SplitReport]
    summary: dict
    derivation: Derivation  # training and evaluation settings read from the objects

    @property
    def splits(self) -> list[str]:
        """Splits holding at least one image, in train, val, test order."""
        return [split for split in SPLITS if self.reports[split].images]


class DatasetWriter:
    """Builds the dataset folder from the sets of one or more Arkindex datasets."""

    def __init__(
        self,
        root: Path,
        task: Task,
        config: TrainingConfig,
        store: CropStore,
        concurrency: int,
        plain_store: CropStore | None = None,
    ):
        """`plain_store` gets the evaluation images without contrast, when the training images
        have it (the inference worker has no contrast step)."""
        self.root = Path(root)
        self.task = task
        self.config = config
        self.store = store
        self.concurrency = concurrency
        self.reports = {split: SplitReport() for split in SPLITS}
        # element id → (split, image path): an element in several sets is fetched once
        self.written: dict[str, tuple[str, Path]] = {}
        self.leaks: dict[str, set[str]] = {}
        self.shape = DatasetShape(config.mode, config.class_names)
        self.truths = TruthWriter(self.root, plain_store)

    def add_set(self, set_name: str, pages: Iterable[Page]) -> None:
        """Extract one Arkindex set into its split; other set names are skipped with a warning."""
        split = split_of(set_name)
        if split is None:
            logger.warning(
                f"Set {set_name!r} is not a training set (train, dev/val, test): skipped"
            )
            return
        report = self.reports[split]
        report.sets.append(set_name)
        self.task.prepare_split(self.root, split)
        samples = self._samples(split, pages)
        with tqdm(desc=f"Images of {split} ({set_name})", unit="image", leave=False) as progress:
            for sample, outcome in fetch_all(samples, self.store, self._known, self.concurrency):
                self._store(split, sample, outcome)
                progress.update()
                progress.set_postfix(
                    cached=report.cached,
                    downloaded=report.downloaded,
                    failed=len(report.failed_images),
                    refresh=False,
                )

    def _samples(self, split: str, pages: Iterable[Page]) -> Iterator[Sample]:
        report = self.reports[split]
        for page in pages:
            report.elements += 1
            sample = self.task.build_sample(page, self.config)
            if isinstance(sample, Skip):
                report.skipped[sample] += 1
                logger.debug(f"Element {page.id} skipped: {sample.value}")
                continue
            yield sample

    def _known(self, sample: Sample) -> Fetched | None:
        """An image already on disk: written for another set, or in the cache."""
        if sample.page.id in self.written:
            return Fetched(self.written[sample.page.id][1], reused=True)
        path = self.store.cached(sample.request, sample.frame)
        return Fetched(path, cached=True) if path is not None else None

    def _store(self, split: str, sample: Sample, fetched: Fetched) -> None:
        report = self.reports[split]
        page = sample.page
        if fetched.error is not None:
            report.skipped[Skip.ImageFailed] += 1
            source = self.store.source.describe(sample.request)
            report.failed_images.append(
                {"element": page.id, "source": source, "reason": str(fetched.error)}
            )
            logger.warning(f"Element {page.id} dropped: {source}: {fetched.error}")
            return
        if fetched.reused:
            first_split = self.written[page.id][0]
            if first_split == split:
                report.skipped[Skip.SameSplit] += 1
                logger.warning(f"Element {page.id} is in two sets of the {split} split: kept once")
                return
            self.leaks.setdefault(page.id, {first_split}).add(split)
        elif fetched.cached:
            report.cached += 1
        else:
            report.downloaded += 1
        target = self.task.image_path(self.root, split, sample)
        with disk_space(self.root):
            link_or_copy(fetched.path, target)
            self.task.write_label(self.root, split, sample)
        self.written.setdefault(page.id, (split, target))
        report.images += 1
        report.objects.update(sample.objects)
        report.skipped.update(sample.skipped)
        report.several_parts += sample.several_parts
        size = (sample.request.width, sample.request.height)
        self.shape.add_element(split, page.id, sample.labelled, size)
        with disk_space(self.root):
            self.truths.add(split, sample, target)

    def finish(self) -> ExtractedDataset:
        """Write summary.json and log it, check the dataset can be trained on, write what
        Ultralytics reads."""
        for element_id, splits in sorted(self.leaks.items()):
            logger.warning(
                f"Element {element_id} is in several splits ({', '.join(sorted(splits))})"
            )
        self.truths.close()
        config = self.config
        derivation = derive(self.shape, config.image_size, config.training_kwargs)
        summary = {
            "splits": {
                split: report.as_dict(config.class_names) for split, report in self.reports.items()
            },
            "leaks": {element: sorted(splits) for element, splits in sorted(self.leaks.items())},
            "derived": derivation.as_dict(),
        }
        (self.root / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
        logger.info("Extraction summary:\n" + summary_table(summary))
        if derivation.figures["sizes"]:
            logger.info("Object sizes:\n" + sizes_table(derivation.figures))
        log_derivation(derivation)
        check_trainable(self.reports, config)
        splits = [split for split in SPLITS if self.reports[split].images]
        data = self.task.write_data(self.root, splits, config.class_names)
        return ExtractedDataset(self.root, data, self.reports, summary, derivation)


def check_trainable(reports: dict[str, SplitReport], config: TrainingConfig) -> None:
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


def summary_table(summary: dict) -> str:
    """The extraction summary as a Markdown table: one column per split."""
    splits = summary["splits"]
    names = list(next(iter(splits.values()))["objects"])
    reasons = sorted({reason for report in splits.values() for reason in report["skipped"]})
    rows = [
        ("elements", [report["elements"] for report in splits.values()]),
        ("images", [report["images"] for report in splits.values()]),
        *[
            (f"objects: {name}", [report["objects"][name] for report in splits.values()])
            for name in names
        ],
        (
            "objects with several parts (joined)",
            [report["objects_with_several_parts"] for report in splits.values()],
        ),
        *[
            (f"skipped: {reason}", [report["skipped"].get(reason, 0) for report in splits.values()])
            for reason in reasons
        ],
    ]
    lines = ["| | " + " | ".join(splits) + " |", "|---" * (len(splits) + 1) + "|"]
    lines += [f"| {title} | " + " | ".join(map(str, values)) + " |" for title, values in rows]
    return "\n".join(lines)
