"""Classify mode: one class per dataset element, chosen from its classifications, in Ultralytics'
classification layout; the classes are `class_names` (Arkindex ml_class names), indexed in order.

Layout: `<split>/<class index>/<element>.jpg` and `.ndjson.yaml` (`names`: index → class name).
Ultralytics derives a classification dataset's class names from its sorted folder names, unless
`.ndjson.yaml` names them: then each folder is its class index (`check_cls_dataset`,
`ClassificationDataset`; its NDJSON converter uses the file the same way, to keep folder names safe).
Folder names are then plain numbers, whatever a class name holds (`/`, spaces, any script), and the
model's `names` are `class_names` in their order from the first epoch on: in `best.pt`, in the
published `model.pt` (Teklia's YOLO classifier creates `results.names[top-1]`), and in
Ultralytics' plots.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from arkindex_worker.models import DatasetSet

from worker_yolo_training.config import MANUAL, TrainingConfig
from worker_yolo_training.core import (
    DEFAULT_THRESHOLD,
    SPLITS,
    InferenceSettings,
    Mode,
    Skip,
    classifier_configuration,
    read_truths,
    safe_name,
)
from worker_yolo_training.evaluate import (
    COMPARED_SPLITS,
    ElementEvaluation,
    classification_metrics,
    classification_tables,
    evaluate_classifier,
)
from worker_yolo_training.export import (
    ClassificationInfo,
    Export,
    ExtractionError,
    Page,
    SetElements,
    open_export,
    split_of,
)
from worker_yolo_training.extract import PackedSample, Sample, element_crop
from worker_yolo_training.modes.base import Trained
from worker_yolo_training.train import Architecture

CLASSIFIER = Architecture("classify", "-cls")
# Ultralytics reads class names from this file when it is at the dataset root (see above)
NAMES_FILE = ".ndjson.yaml"
MIN_CLASSES = 2


def choose_class(
    classifications: Iterable[ClassificationInfo],
    class_names: Sequence[str],
    worker_runs: Sequence[str] = (),
) -> str | Skip:
    """The class an element is learned as, from its classifications.

    Kept: classifications of a class in `class_names`, from a source in `worker_runs` (worker run
    ids and/or `manual`, for a classification without worker run; empty: every source). One class
    left: that class. Several: manual classifications win over automatic ones, then the highest
    confidence; a tie between different classes is `Skip.Ambiguous`. None: `Skip.Unclassified`.
    """
    wanted = set(class_names)
    kept = [
        item
        for item in classifications
        if item.class_name in wanted
        and (not worker_runs or (item.worker_run_id or MANUAL) in worker_runs)
    ]
    if not kept:
        return Skip.Unclassified
    manual = [item for item in kept if item.worker_run_id is None]
    candidates = manual or kept
    best = max(item.confidence for item in candidates)
    top = {item.class_name for item in candidates if item.confidence == best}
    return top.pop() if len(top) == 1 else Skip.Ambiguous


def split_classes(
    config: TrainingConfig, sets: Sequence[DatasetSet], exports: Mapping[str, Path]
) -> dict[str, Counter]:
    """Per split, how many elements each class would get, and how many would be skipped for
    want of a class (by `Skip` reason): the class choice of every element, before any download
    (one statement per set, then one per chunk of elements for their classifications)."""
    counts: dict[str, Counter] = {}
    for dataset_id, path in exports.items():
        with open_export(path) as export:
            for dataset_set in sets:
                split = split_of(dataset_set.name)
                if dataset_set.dataset.id != dataset_id or split is None:
                    continue
                pages = export.iter_pages(
                    dataset_id, dataset_set.name, children=False, classifications=True
                )
                counts.setdefault(split, Counter()).update(
                    choose_class(page.classifications, config.class_names, config.worker_runs)
                    for page in pages
                )
    return counts


def check_split_classes(counts: Mapping[str, Counter], class_names: Sequence[str]) -> None:
    """A classifier learns to tell classes apart: train and val need two classes or more.

    :raises ExtractionError: naming the split, its elements per class and its skips.
    """
    for split in ("train", "val"):
        found = counts.get(split, Counter())
        present = [name for name in class_names if found[name]]
        if len(present) < MIN_CLASSES:
            per_class = ", ".join(f"{name}: {found[name]}" for name in class_names)
            skipped = ", ".join(
                f"{reason.value}: {found[reason]}" for reason in Skip if found[reason]
            )
            raise ExtractionError(
                f"The {split} split holds elements of {len(present)} class(es) of `class_names` "
                f"({per_class}{'; skipped: ' + skipped if skipped else ''}): a classifier needs "
                f"at least {MIN_CLASSES} classes in train and in val. Check `class_names`, "
                "`advanced.worker_runs` and the classifications of the dataset's elements."
            )


def class_folder(root: Path, split: str, index: int) -> Path:
    """A class's folder in a split: its index (its name is in `.ndjson.yaml`)."""
    return root / split / str(index)


@dataclass(frozen=True)
class Classification:
    """Classify mode: one class per dataset element."""

    mode: Mode = Mode.Classify
    architecture: Architecture = CLASSIFIER
    class_kind: str = "classification classes"
    calibration: str = (
        f"calibrated: best macro-F1 of the val elements ({DEFAULT_THRESHOLD} when none is right)"
    )
    evaluation_heading: str = (
        "Classifier evaluation (an element whose top-1 confidence is under {threshold:g} gets "
        "no class)"
    )

    def class_counts(self, export: Export) -> dict[str, int]:
        return export.classification_counts()

    def has_class(self, export: Export, name: str) -> bool:
        return export.has_classification(name)

    def set_elements(self, export: Export, dataset_id: str, set_name: str) -> SetElements:
        # Descendants are not needed: the element's own classifications are
        return export.set_elements(dataset_id, set_name, children=False, classifications=True)

    def check_splits(
        self, config: TrainingConfig, sets: Sequence[DatasetSet], exports: Mapping[str, Path]
    ) -> None:
        check_split_classes(split_classes(config, sets, exports), config.class_names)

    def build_samples(self, pages: Sequence[Page], config: TrainingConfig) -> list[Sample | Skip]:
        return [self.build_sample(page, config) for page in pages]

    def build_sample(self, page: Page, config: TrainingConfig) -> Sample | Skip:
        """The element's class (its index as label), or why it has none; then its crop."""
        chosen = choose_class(page.classifications, config.class_names, config.worker_runs)
        if isinstance(chosen, Skip):
            return chosen
        crop = element_crop(page, config.image_size)
        if isinstance(crop, Skip):
            return crop
        frame, request = crop
        label = str(config.class_names.index(chosen))
        # `truth`: the element's class, for the evaluation as the classifier sees it
        return Sample(page, frame, request, label, Counter({chosen: 1}), truth=[(chosen, [])])

    def prepare_split(self, root: Path, split: str) -> None:
        (root / split).mkdir(parents=True, exist_ok=True)

    def image_path(self, root: Path, split: str, sample: PackedSample) -> Path:
        folder = class_folder(root, split, int(sample.label))
        # The class folders are known once the first sample of a class comes
        folder.mkdir(exist_ok=True)
        return folder / f"{safe_name(sample.element_id)}.jpg"

    def label_path(self, root: Path, split: str, sample: PackedSample) -> None:
        """No label file: the folder is the label."""

    def write_data(self, root: Path, splits: Iterable[str], class_names: Sequence[str]) -> Path:
        """Every class folder in every split folder (empty ones too, for a reader's sake: indices
        come from the folder names) and the class names; Ultralytics takes the root folder."""
        for split in [split for split in SPLITS if (root / split).is_dir()]:
            for index in range(len(class_names)):
                class_folder(root, split, index).mkdir(parents=True, exist_ok=True)
        names = {"names": dict(enumerate(class_names))}
        (root / NAMES_FILE).write_text(yaml.safe_dump(names, allow_unicode=True, sort_keys=False))
        return root

    def split_metrics(self, results: Any, class_names: Sequence[str], images: int) -> dict:
        return classification_metrics(results, class_names, images)

    def metrics_table(self, metrics: dict[str, dict]) -> str:
        return classification_tables(metrics)

    def evaluate_elements(
        self,
        trained: Trained,
        config: TrainingConfig,
        published: InferenceSettings | None = None,
    ) -> ElementEvaluation:
        splits = trained.dataset.splits
        threshold = config.confidence_threshold
        if published is not None:
            splits = [split for split in COMPARED_SPLITS if split in splits]
            threshold = published.confidence_threshold
        return evaluate_classifier(
            trained.weights,
            read_truths(trained.dataset.root, splits),
            config.class_names,
            trained.layout,
            threshold,
            trained.device,
        )

    def inference_configuration(
        self, config: TrainingConfig, confidence_threshold: float, max_detection: int | None
    ) -> dict:
        return classifier_configuration(
            image_size=config.image_size, confidence_threshold=confidence_threshold
        )


CLASSIFICATION = Classification()
