"""Writing the YOLO dataset: one image and one label file per dataset element, per split.

Layout (what Ultralytics reads): `images/<split>/<element>.jpg`, `labels/<split>/<element>.txt`,
`data.yaml`, plus `summary.json` with what was extracted and everything that was skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from tqdm import tqdm

from worker_yolo_training.config import MANUAL, TrainingConfig
from worker_yolo_training.export import Page, page_defect
from worker_yolo_training.geometry import Frame, Label, Skip, crop_box, label_line, object_labels
from worker_yolo_training.images import CropRequest, CropStore, ImageError, fetch_size

logger = logging.getLogger(__name__)

# Arkindex set names → Ultralytics splits
SPLIT_OF_SET = {"train": "train", "dev": "val", "val": "val", "validation": "val", "test": "test"}
SPLITS = ("train", "val", "test")
DEFAULT_CONCURRENCY = 32
# Ultralytics drops smaller images from training and evaluation
MIN_IMAGE_SIDE = 10


class ExtractionError(Exception):
    """The dataset cannot be trained on; the message says why and what to do."""


def split_of(set_name: str) -> str | None:
    return SPLIT_OF_SET.get(set_name.lower())


def safe_name(element_id: str) -> str:
    """A file name for an element that cannot escape its folder or collide after sanitising."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", element_id)
    if name != element_id or not name:
        name = f"{name}_{hashlib.sha1(element_id.encode()).hexdigest()[:8]}"
    return name


@dataclass
class Sample:
    """What one dataset element becomes, before its image is fetched."""

    page: Page
    frame: Frame
    request: CropRequest
    lines: list[str]
    objects: Counter
    skipped: Counter


def build_sample(page: Page, config: TrainingConfig) -> Sample | Skip:
    """Labels of a dataset element in its oriented crop, and every object left out with its reason."""
    defect = page_defect(page)
    if defect is not None:
        reason, warning = defect
        if warning:
            logger.warning(warning)
        return reason
    crop = crop_box(page.polygon, page.image.width, page.image.height)
    if crop is None:
        return Skip.EmptyCrop
    frame = Frame(crop, page.rotation_angle, page.mirrored)
    width, height = fetch_size(frame, config.image_size)
    if min(width, height) < MIN_IMAGE_SIDE:
        return Skip.TooSmall
    request = CropRequest(page.image, crop, width, height)
    lines, objects, skipped = [], Counter(), Counter()
    class_index = {name: index for index, name in enumerate(config.class_names)}
    kept = []
    for child in page.children:
        if child.type not in class_index:
            skipped[Skip.OtherType] += 1
        elif config.worker_runs and (child.worker_run_id or MANUAL) not in config.worker_runs:
            skipped[Skip.WorkerRunFiltered] += 1
        elif child.image_id != page.image.id:
            skipped[Skip.OtherImage] += 1
        else:
            kept.append(child)
    labels = object_labels([child.polygon for child in kept], frame, config.mode)
    for child, label in zip(kept, labels, strict=True):
        if not isinstance(label, Label):
            skipped[label] += 1
            continue
        skipped[Skip.ExtraParts] += label.dropped_parts
        lines.append(label_line(class_index[child.type], label))
        objects[child.type] += 1
    return Sample(page, frame, request, lines, objects, +skipped)


@dataclass(frozen=True)
class Fetched:
    """The outcome of getting one element's image."""

    path: Path | None = None
    cached: bool = False
    reused: bool = False
    error: ImageError | None = None


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link a cached image into the dataset (no copy), or copy across file systems."""
    try:
        os.link(source, target)
    except FileExistsError:
        target.unlink()
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def remove_in_background(folder: Path) -> threading.Thread | None:
    """Move a previous run's folder aside and delete it while this run works (thousands of
    unlinks are kernel time, done on the other core)."""
    # Left by an interrupted run, if any
    doomed = list(folder.parent.glob(f".{folder.name}.old-*"))
    if folder.exists():
        doomed.append(folder.rename(folder.with_name(f".{folder.name}.old-{time.time_ns()}")))
    if not doomed:
        return None

    def remove() -> None:
        for path in doomed:
            shutil.rmtree(path, ignore_errors=True)

    thread = threading.Thread(target=remove, daemon=True)
    thread.start()
    return thread


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

    def as_dict(self, class_names: Iterable[str]) -> dict:
        return {
            "sets": self.sets,
            "elements": self.elements,
            "images": self.images,
            "objects": {name: self.objects.get(name, 0) for name in class_names},
            "skipped": {reason.value: count for reason, count in sorted(self.skipped.items())},
            "failed_images": self.failed_images,
            "images_downloaded": self.downloaded,
            "images_from_cache": self.cached,
        }


class DatasetWriter:
    """Builds the YOLO dataset folder from the sets of one or more Arkindex datasets."""

    def __init__(
        self,
        root: Path,
        config: TrainingConfig,
        store: CropStore,
        concurrency: int = DEFAULT_CONCURRENCY,
    ):
        self.root = Path(root)
        self.config = config
        self.store = store
        self.concurrency = concurrency
        self.reports = {split: SplitReport() for split in SPLITS}
        # element id → (split, image path): an element in several sets is fetched once
        self.written: dict[str, tuple[str, Path]] = {}
        self.leaks: dict[str, set[str]] = {}
        self._removal = remove_in_background(self.root)
        self.root.mkdir(parents=True)

    def image_path(self, split: str, element_id: str) -> Path:
        return self.root / "images" / split / f"{safe_name(element_id)}.jpg"

    def label_path(self, split: str, element_id: str) -> Path:
        return self.root / "labels" / split / f"{safe_name(element_id)}.txt"

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
        for folder in ("images", "labels"):
            (self.root / folder / split).mkdir(parents=True, exist_ok=True)
        progress = tqdm(desc=f"Images of {split} ({set_name})", unit="image", leave=False)
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="image")
        try:
            with progress:
                for sample, outcome in self._fetch_all(pool, self._samples(split, pages)):
                    self._store(split, sample, outcome)
                    progress.update()
                    progress.set_postfix(
                        cached=report.cached,
                        downloaded=report.downloaded,
                        failed=len(report.failed_images),
                        refresh=False,
                    )
        except BaseException:
            # Interrupted or failed: queued downloads are dropped, not waited for
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()

    def _samples(self, split: str, pages: Iterable[Page]) -> Iterator[Sample]:
        report = self.reports[split]
        for page in pages:
            report.elements += 1
            sample = build_sample(page, self.config)
            if isinstance(sample, Skip):
                report.skipped[sample] += 1
                logger.debug(f"Element {page.id} skipped: {sample.value}")
                continue
            yield sample

    def _fetch_all(
        self, pool: ThreadPoolExecutor, samples: Iterator[Sample]
    ) -> Iterator[tuple[Sample, Fetched]]:
        """Fetch images with at most 2×concurrency in flight; results as they come.

        Threads report to one queue: waiting on it costs nothing per pending download (unlike
        `concurrent.futures.wait`, which arms every pending future at each call).
        """
        results: queue.SimpleQueue = queue.SimpleQueue()
        pending = 0

        def fetch(sample: Sample) -> None:
            try:
                results.put((sample, self._fetch(sample)))
            except BaseException as error:  # re-raised in the main thread, not lost in a thread
                results.put((sample, error))

        def collect(block: bool) -> Iterator[tuple[Sample, Fetched]]:
            nonlocal pending
            while pending and (block or not results.empty()):
                sample, outcome = results.get()
                pending -= 1
                if isinstance(outcome, BaseException):
                    raise outcome
                yield sample, outcome
                block = False

        for sample in samples:
            known = self._known(sample)
            if known is not None:
                # Already on disk: no need for a thread
                yield sample, known
                continue
            pool.submit(fetch, sample)
            pending += 1
            yield from collect(block=pending >= 2 * self.concurrency)
        while pending:
            yield from collect(block=True)

    def _known(self, sample: Sample) -> Fetched | None:
        if sample.page.id in self.written:
            return Fetched(self.written[sample.page.id][1], reused=True)
        path = self.store.cached(sample.request, sample.frame)
        return Fetched(path, cached=True) if path is not None else None

    def _fetch(self, sample: Sample) -> Fetched:
        try:
            path, cached = self.store.get(sample.request, sample.frame)
        except ImageError as error:
            return Fetched(error=error)
        return Fetched(path, cached=cached)

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
        target = self.image_path(split, page.id)
        link_or_copy(fetched.path, target)
        self.written.setdefault(page.id, (split, target))
        label = self.label_path(split, page.id)
        label.write_text("".join(f"{line}\n" for line in sample.lines))
        report.images += 1
        report.objects.update(sample.objects)
        report.skipped.update(sample.skipped)

    def check_failures(self) -> None:
        """Stop before training when too many images of a split failed."""
        for split, report in self.reports.items():
            failed = len(report.failed_images)
            if report.elements and failed / report.elements > self.config.max_failed_images:
                raise ExtractionError(
                    f"{failed} of {report.elements} images of the {split} split failed to download "
                    f"(more than advanced.max_failed_images = {self.config.max_failed_images:.0%}); "
                    f"first failures: {report.failed_images[:3]}. Check the image server, or raise "
                    "advanced.max_failed_images."
                )

    def finish(self) -> Path:
        """Write summary.json and log it, check the dataset can be trained on, write data.yaml;
        returns data.yaml's path."""
        if self._removal is not None:
            self._removal.join()
        for element_id, splits in sorted(self.leaks.items()):
            logger.warning(
                f"Element {element_id} is in several splits ({', '.join(sorted(splits))})"
            )
        summary = self.summary()
        (self.root / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
        logger.info("Extraction summary:\n" + summary_table(summary))
        self.check_failures()
        for split in ("train", "val"):
            if not self.reports[split].images:
                raise ExtractionError(
                    f"The {split} split has no image after extraction: nothing to train on "
                    "(the summary above says what was skipped)."
                )
        if not sum(self.reports["train"].objects.values()):
            raise ExtractionError(
                f"No object of {', '.join(self.config.class_names)} in the train split: check "
                "`class_names` and `advanced.worker_runs` (the summary above says what was skipped)."
            )
        data = {
            "path": str(self.root.resolve()),
            **{split: f"images/{split}" for split in SPLITS if self.reports[split].images},
            "names": dict(enumerate(self.config.class_names)),
        }
        data_yaml = self.root / "data.yaml"
        data_yaml.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        return data_yaml

    def summary(self) -> dict:
        return {
            "splits": {
                split: report.as_dict(self.config.class_names)
                for split, report in self.reports.items()
            },
            "leaks": {element: sorted(splits) for element, splits in sorted(self.leaks.items())},
        }

    def non_empty_splits(self) -> list[str]:
        return [split for split in SPLITS if self.reports[split].images]


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
        *[
            (f"skipped: {reason}", [report["skipped"].get(reason, 0) for report in splits.values()])
            for reason in reasons
        ],
    ]
    lines = ["| | " + " | ".join(splits) + " |", "|---" * (len(splits) + 1) + "|"]
    lines += [f"| {title} | " + " | ".join(map(str, values)) + " |" for title, values in rows]
    return "\n".join(lines)
