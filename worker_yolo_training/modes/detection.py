"""Detection-like modes (segment, bbox, obb): one label line per descendant element of a
requested type, in Ultralytics' detection layout.

Layout: `images/<split>/<element>.jpg`, `labels/<split>/<element>.txt`, `data.yaml`.
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
    Frame,
    InferenceSettings,
    Label,
    Mode,
    Skip,
    label_line,
    pages_labels,
    read_truths,
    safe_name,
    segmenter_configuration,
)
from worker_yolo_training.evaluate import (
    COMPARED_SPLITS,
    MATCH_IOU,
    ElementEvaluation,
    evaluate_pages,
    metrics_table,
    split_metrics,
)
from worker_yolo_training.export import Child, Export, Page, SetElements
from worker_yolo_training.extract import PackedSample, Sample, element_crop
from worker_yolo_training.images import CropRequest
from worker_yolo_training.modes.base import Trained
from worker_yolo_training.train import Architecture

DATA_FILE = "data.yaml"


def kept_children(page: Page, config: TrainingConfig) -> tuple[list[Child], Counter]:
    """The descendants of a dataset element that become objects, and how many of the others
    were left out, per reason."""
    skipped, kept = Counter(), []
    class_names = set(config.class_names)
    for child in page.children:
        if child.type not in class_names:
            skipped[Skip.OtherType] += 1
        elif config.worker_runs and (child.worker_run_id or MANUAL) not in config.worker_runs:
            skipped[Skip.WorkerRunFiltered] += 1
        elif child.image_id != page.image.id:
            skipped[Skip.OtherImage] += 1
        else:
            kept.append(child)
    return kept, skipped


def sample(
    page: Page,
    crop: tuple[Frame, CropRequest],
    kept: list[Child],
    skipped: Counter,
    labels: list[Label | Skip],
    points: list[list],
    config: TrainingConfig,
) -> Sample:
    """A dataset element's sample from its kept descendants' labels and points in its frame."""
    frame, request = crop
    lines, objects, labelled, truth = [], Counter(), [], []
    class_index = {name: index for index, name in enumerate(config.class_names)}
    for child, label, oriented in zip(kept, labels, points, strict=True):
        if not isinstance(label, Label):
            skipped[label] += 1
            continue
        lines.append(label_line(class_index[child.type], label))
        labelled.append((child.type, label))
        truth.append((child.type, oriented))
    objects.update(name for name, _ in labelled)
    label_text = "".join(f"{line}\n" for line in lines)
    return Sample(page, frame, request, label_text, objects, +skipped, labelled, truth)


@dataclass(frozen=True)
class Detection:
    """A mode whose model finds objects: masks (segment), boxes (bbox) or oriented boxes (obb)."""

    mode: Mode
    architecture: Architecture
    metric_kinds: tuple[str, ...]
    class_kind: str = "element types"
    calibration: str = (
        f"calibrated: best page-level F1 on val ({DEFAULT_THRESHOLD} without a matched prediction)"
    )
    evaluation_heading: str = (
        "Page-level evaluation (confidence ≥ {threshold:g}, match: same class and "
        f"IoU ≥ {MATCH_IOU})"
    )

    def class_counts(self, export: Export) -> dict[str, int]:
        return export.element_type_counts()

    def has_class(self, export: Export, name: str) -> bool:
        return export.has_element_type(name)

    def set_elements(self, export: Export, dataset_id: str, set_name: str) -> SetElements:
        return export.set_elements(dataset_id, set_name)

    def check_splits(
        self, config: TrainingConfig, sets: Sequence[DatasetSet], exports: Mapping[str, Path]
    ) -> None:
        """Nothing more than `export.check_inputs` checks."""

    def build_samples(self, pages: Sequence[Page], config: TrainingConfig) -> list[Sample | Skip]:
        """Each dataset element's labels in its oriented crop, and every object left out with
        its reason (or why the element has no sample); their objects' geometry computed
        together."""
        crops = [element_crop(page, config.image_size) for page in pages]
        chosen = [
            (page, crop, *kept_children(page, config))
            for page, crop in zip(pages, crops, strict=True)
            if not isinstance(crop, Skip)
        ]
        geometry = pages_labels(
            [([child.polygon for child in kept], frame) for _, (frame, _), kept, _ in chosen],
            config.mode,
        )
        built = iter(
            sample(page, crop, kept, skipped, labels, points, config)
            for (page, crop, kept, skipped), (labels, points) in zip(chosen, geometry, strict=True)
        )
        return [crop if isinstance(crop, Skip) else next(built) for crop in crops]

    def prepare_split(self, root: Path, split: str) -> None:
        for folder in ("images", "labels"):
            (root / folder / split).mkdir(parents=True, exist_ok=True)

    def image_path(self, root: Path, split: str, sample: PackedSample) -> Path:
        return root / "images" / split / f"{safe_name(sample.element_id)}.jpg"

    def label_path(self, root: Path, split: str, sample: PackedSample) -> Path:
        return root / "labels" / split / f"{safe_name(sample.element_id)}.txt"

    def write_data(self, root: Path, splits: Iterable[str], class_names: Sequence[str]) -> Path:
        data = {
            "path": str(root.resolve()),
            **{split: f"images/{split}" for split in splits},
            "names": dict(enumerate(class_names)),
        }
        data_yaml = root / DATA_FILE
        data_yaml.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        return data_yaml

    def split_metrics(self, results: Any, class_names: Sequence[str], images: int) -> dict:
        return split_metrics(results, class_names, images, self.metric_kinds)

    def metrics_table(self, metrics: dict[str, dict]) -> str:
        return metrics_table(metrics)

    def use_segment(self, class_names: Sequence[str]) -> list[str]:
        return list(class_names) if "mask" in self.metric_kinds else []

    def evaluate_elements(
        self,
        trained: Trained,
        config: TrainingConfig,
        published: InferenceSettings | None = None,
    ) -> ElementEvaluation:
        """The page-level evaluation: what the YOLO segmenter creates on each element, matched
        with its annotated objects; the page table and the worst elements."""
        dataset = trained.dataset
        if published is not None:
            return evaluate_pages(
                trained.weights,
                read_truths(dataset.root, [s for s in COMPARED_SPLITS if s in dataset.splits]),
                config.class_names,
                use_segment=published.use_segment,
                oriented=self.mode is Mode.OBB,
                layout=trained.layout,
                max_det=published.max_detection,
                iou=published.iou,
                fixed_threshold=published.confidence_threshold,
                device=trained.device,
                min_rectangle=published.min_rectangle,
                pictures=False,
            )
        return evaluate_pages(
            trained.weights,
            read_truths(dataset.root, dataset.splits),
            config.class_names,
            use_segment=self.use_segment(config.class_names),
            oriented=self.mode is Mode.OBB,
            layout=trained.layout,
            max_det=dataset.derivation.max_detection,
            fixed_threshold=config.confidence_threshold,
            device=trained.device,
        )

    def inference_configuration(
        self, config: TrainingConfig, confidence_threshold: float, max_detection: int | None
    ) -> dict:
        return segmenter_configuration(
            use_segment=self.use_segment(config.class_names),
            image_size=config.image_size,
            confidence_threshold=confidence_threshold,
            max_detection=max_detection,
        )


DETECTIONS = {
    Mode.Segment: Detection(Mode.Segment, Architecture("segment", "-seg"), ("box", "mask")),
    Mode.BBox: Detection(Mode.BBox, Architecture("detect", ""), ("box",)),
    Mode.OBB: Detection(Mode.OBB, Architecture("obb", "-obb"), ("box",)),
}
