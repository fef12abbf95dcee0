"""Writing the training dataset: one image (and label) per dataset element, per split, in the
mode's layout, plus `summary.json` with what was extracted and everything that was skipped.

Policy lives here: an element in two splits is written in both and reported as a leak; an
element in two sets of one split is written once; the dataset must be trainable at the end.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO

from tqdm import tqdm

from worker_yolo_training.config import TrainingConfig
from worker_yolo_training.core import SPLITS, DatasetFiles, Linker, Skip, disk_space, printable
from worker_yolo_training.export import SetElements, split_of
from worker_yolo_training.extract.build import Built, LabelFiles, SampleBuilder, SetBuild
from worker_yolo_training.extract.dataset import (
    DatasetFormat,
    ExtractedDataset,
    SplitReport,
    open_dataset,
    summary_table,
)
from worker_yolo_training.extract.derived import derive, log_derivation, sizes_table
from worker_yolo_training.extract.sample import PackedSample
from worker_yolo_training.extract.shape import DatasetShape
from worker_yolo_training.extract.truth import TruthWriter
from worker_yolo_training.images import CropStore, Fetched, fetch_all

logger = logging.getLogger(__name__)


# Without a terminal (Arkindex's task log, a file), the progress is a line every this many seconds
LOG_INTERVAL = 10.0
# tqdm's default without the bar: a line of a log file needs no drawing
LOG_FORMAT = (
    "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
)


class _Lines:
    """A stream for tqdm that writes each state of the bar as its own line, not redrawn with `\r`
    (a log file is read, not watched)."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.strip("\r\n ")
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(description: str, total: int | None) -> tqdm:
    """Done/total, rate and ETA: on a terminal a bar redrawn in place and removed at the end;
    elsewhere one line every `LOG_INTERVAL` seconds, and the last one kept."""
    if sys.stderr.isatty():
        return tqdm(desc=description, total=total, unit="element", leave=False)
    return tqdm(
        desc=description,
        total=total,
        unit="element",
        file=_Lines(sys.stderr),
        mininterval=LOG_INTERVAL,
        # tqdm's monitor prints a stalled bar after this: a line when nothing moves, not twice
        maxinterval=2 * LOG_INTERVAL,
        bar_format=LOG_FORMAT,
    )


@dataclass(frozen=True)
class SetSource:
    """An Arkindex set to extract: its name, its dataset's (for the log), its dataset elements'
    export rows, and how many there are (the progress bar's total)."""

    name: str
    dataset: str
    elements: SetElements
    total: int | None = None


def _one_set(built: Iterator[tuple[int, Built | None]]) -> Iterator[Built]:
    """The samples of the next set of `SampleBuilder.build_sets`, until its end."""
    for _, sample in built:
        if sample is None:
            return
        yield sample


class DatasetWriter:
    """Builds the dataset folder from the sets of one or more Arkindex datasets."""

    def __init__(
        self,
        root: Path,
        layout: DatasetFormat,
        config: TrainingConfig,
        store: CropStore,
        concurrency: int,
        plain_store: CropStore | None = None,
        builder: SampleBuilder | None = None,
        previous: Path | None = None,
    ):
        """`plain_store` gets the evaluation images without contrast, when the training images
        have it (the inference worker has no contrast step); `builder` builds the samples (by
        default in this process); `previous` is a previous run's dataset, whose identical label
        files are taken back (`LabelFiles`)."""
        self.root = Path(root)
        self.layout = layout
        self.config = config
        self.store = store
        self.concurrency = concurrency
        self.reports = {split: SplitReport() for split in SPLITS}
        # element id → (split, image path): an element in several sets is fetched once
        self.written: dict[str, tuple[str, Path]] = {}
        self.leaks: dict[str, set[str]] = {}
        self.shape = DatasetShape(config.mode, config.class_names)
        self.link = Linker()
        self.truths = TruthWriter(self.root, plain_store, self.link)
        self.builder = builder or SampleBuilder(layout, config)
        self.previous = previous

    def add_sets(self, sets: Sequence[SetSource]) -> None:
        """Extract Arkindex sets of one export into their splits, one after the other; other set
        names are skipped with a warning. A set of another split than the previous one has its
        first samples built while the previous one's last are (`SetBuild.overlap`)."""
        chosen = []
        for source in sets:
            split = split_of(source.name)
            if split is None:
                logger.warning(
                    f"Set {source.name!r} is not a training set (train, dev/val, test): skipped"
                )
                continue
            self.layout.prepare_split(self.root, split)  # its label files may come early
            chosen.append((source, split))
        built = self.builder.build_sets(
            SetBuild(
                source.elements,
                LabelFiles(self.root, split, self.previous),
                partial(self.truths.wanted, split),
                overlap=index > 0 and split != chosen[index - 1][1],
            )
            for index, (source, split) in enumerate(chosen)
        )
        for source, _ in chosen:
            logger.info(
                f"Extracting set {printable(source.name)} of dataset {printable(source.dataset)}"
            )
            self.add_set(source.name, _one_set(built), source.total)

    def add_set(self, set_name: str, built: Iterator[Built], total: int | None = None) -> None:
        """Write one set (of a training split) from its elements' samples as they are built
        (`total` elements, for the progress bar)."""
        split = split_of(set_name)
        report = self.reports[split]
        report.sets.append(set_name)
        samples = self._samples(split, built)
        read_before = report.elements
        with progress_bar(f"Elements of {split} ({set_name})", total) as progress:
            for sample, outcome in fetch_all(samples, self.store, self._known, self.concurrency):
                self._store(split, sample, outcome)
                # elements read, skipped ones included (a few images are ahead in the fetch)
                progress.update(report.elements - read_before - progress.n)
                progress.set_postfix(
                    cached=report.cached,
                    downloaded=report.downloaded,
                    failed=len(report.failed_images),
                    refresh=False,
                )
            progress.update(report.elements - read_before - progress.n)

    def _samples(self, split: str, built: Iterator[Built]) -> Iterator[PackedSample]:
        report = self.reports[split]
        for element_id, sample in built:
            report.elements += 1
            if isinstance(sample, Skip):
                report.skipped[sample] += 1
                logger.debug(f"Element {printable(element_id)} skipped: {sample.value}")
                continue
            yield sample

    def _known(self, sample: PackedSample) -> Fetched | None:
        """An image already on disk: written for another set, or in the cache."""
        if sample.element_id in self.written:
            return Fetched(self.written[sample.element_id][1], reused=True)
        path = self.store.cached(sample.request, sample.frame)
        return Fetched(path, cached=True) if path is not None else None

    def _store(self, split: str, sample: PackedSample, fetched: Fetched) -> None:
        report = self.reports[split]
        element_id = sample.element_id
        if fetched.error is not None:
            self._drop(split, sample, fetched.error)
            return
        if fetched.reused:
            first_split = self.written[element_id][0]
            if first_split == split:
                report.skipped[Skip.SameSplit] += 1
                logger.warning(
                    f"Element {printable(element_id)} is in two sets of the {split} split: kept once"
                )
                return
            self.leaks.setdefault(element_id, {first_split}).add(split)
        elif fetched.cached:
            report.cached += 1
        else:
            report.downloaded += 1
        target = self.layout.image_path(self.root, split, sample)
        with disk_space(self.root):
            self.link(fetched.path, target)
        self.written.setdefault(element_id, (split, target))
        report.images += 1
        report.objects.update(sample.objects)
        report.skipped.update(sample.skipped)
        report.several_parts += sample.several_parts
        self.shape.add_shape(split, element_id, sample.shape)
        with disk_space(self.root):
            self.truths.add(split, sample, target)

    def _drop(self, split: str, sample: PackedSample, error: Exception) -> None:
        """An element whose image failed: reported, its label file (written when the sample was
        built) removed."""
        report = self.reports[split]
        report.skipped[Skip.ImageFailed] += 1
        source = self.store.source.describe(sample.request)
        element = sample.element_id
        report.failed_images.append({"element": element, "source": source, "reason": str(error)})
        logger.warning(f"Element {printable(element)} dropped: {source}: {error}")
        label = self.layout.label_path(self.root, split, sample)
        if label is not None:
            label.unlink(missing_ok=True)

    def finish(self) -> ExtractedDataset:
        """Write summary.json and log it, check the dataset can be trained on, write what
        Ultralytics reads."""
        for element_id, splits in sorted(self.leaks.items()):
            logger.warning(
                f"Element {printable(element_id)} is in several splits ({', '.join(sorted(splits))})"
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
        summary_file = DatasetFiles(self.root).summary
        summary_file.write_text(json.dumps(summary, indent=2, ensure_ascii=False))
        logger.info("Extraction summary:\n" + summary_table(summary["splits"]))
        if derivation.figures["sizes"]:
            logger.info("Object sizes:\n" + sizes_table(derivation.figures))
        log_derivation(derivation)
        return open_dataset(self.root, self.reports, derivation, self.layout, config)
