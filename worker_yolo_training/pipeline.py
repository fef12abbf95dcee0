"""The stages after the inputs are known, each a function of values: extraction returns the
dataset, training and evaluation return the best weights and the metrics, packaging returns the
model directory and the results archive."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from arkindex_worker.models import DatasetSet

from worker_yolo_training import export
from worker_yolo_training.config import TrainingConfig
from worker_yolo_training.dataset import DatasetWriter, ExtractedDataset
from worker_yolo_training.images import CropStore, ImageSource
from worker_yolo_training.layout import RunLayout
from worker_yolo_training.publish import (
    build_model_dir,
    build_results_archive,
    model_description,
    model_version_payload,
    training_metadata,
)
from worker_yolo_training.tasks import Task

logger = logging.getLogger(__name__)


@contextmanager
def crop_stores(source: ImageSource, folder: Path, contrast: bool, keep: bool) -> Iterator[Stores]:
    """The image stores of one run, sharing one folder: training images, and evaluation images
    without contrast when training images have it. Files other threads were writing are removed
    if the run stops; the folder is removed at the end when it is not a cache kept between runs."""
    stores = Stores(
        CropStore(source, folder, contrast), CropStore(source, folder) if contrast else None
    )
    try:
        yield stores
    except BaseException:
        for store in filter(None, stores):
            store.remove_partials()
        raise
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


class Stores(NamedTuple):
    training: CropStore
    plain: CropStore | None  # without contrast, for the page-level evaluation


def extract(
    config: TrainingConfig,
    task: Task,
    sets: Sequence[DatasetSet],
    exports: Mapping[str, Path],
    stores: Stores,
    layout: RunLayout,
    concurrency: int,
) -> ExtractedDataset:
    """Write the dataset from every set (two SQL statements per set, whatever its size)."""
    layout.dataset.mkdir(parents=True)
    writer = DatasetWriter(layout.dataset, task, config, stores.training, concurrency, stores.plain)
    with export.StatementCounter() as statements:
        for dataset_set in sets:
            dataset = dataset_set.dataset
            logger.info(f"Extracting set {dataset_set.name} of dataset {dataset.name}")
            with export.open_export(exports[dataset.id]) as opened:
                writer.add_set(dataset_set.name, task.pages(opened, dataset.id, dataset_set.name))
    logger.info(f"Extraction SQL statements: {statements.count}")
    return writer.finish()


@dataclass(frozen=True)
class Evaluation:
    """The outcome of training: the best weights, their metrics on every split (mAP and, under
    "pages", what the inference worker will produce), and the tables people read."""

    weights: Path
    metrics: dict
    # Markdown: the inference worker's view (page-level table), the worst elements (may be
    # empty), Ultralytics' metrics (mAP table; classify mode: accuracy and confusion matrices)
    page_table: str
    worst_elements: str
    map_table: str

    @property
    def tables(self) -> str:
        return "\n\n".join(filter(None, [self.page_table, self.worst_elements, self.map_table]))

    @property
    def confidence_threshold(self) -> float:
        """The threshold the inference worker should use (calibrated on val, or fixed)."""
        return next(iter(self.metrics["pages"].values()))["confidence_threshold"]


def train_and_evaluate(
    config: TrainingConfig,
    task: Task,
    base_model: str,
    dataset: ExtractedDataset,
    layout: RunLayout,
    resume_from: Path | None = None,
) -> Evaluation:
    """Train (or continue training from `resume_from`), evaluate every non-empty split with
    Ultralytics' metrics and as the inference worker sees it, write metrics.json and
    evaluation.md."""
    from worker_yolo_training import training

    device = training.select_device(config.batch_size)
    derivation = dataset.derivation
    best = training.train(
        config, base_model, dataset.data, layout.root, device, derivation.train, resume_from
    )
    metrics = {}
    for split in dataset.splits:
        result = training.evaluate(
            best, config, dataset.data, split, layout.root, device, derivation.val
        )
        metrics[split] = task.split_metrics(
            result, config.class_names, dataset.reports[split].images
        )
    pages, page_table, worst_elements = task.evaluate_elements(
        best, dataset, config, layout.root, device.argument.split(",")[0]
    )
    evaluation = Evaluation(
        best, {**metrics, "pages": pages}, page_table, worst_elements, task.metrics_table(metrics)
    )
    layout.metrics.write_text(json.dumps(evaluation.metrics, indent=2, ensure_ascii=False))
    layout.evaluation_md.write_text(f"# Evaluation\n\n{evaluation.tables}\n")
    logger.info("Evaluation:\n" + evaluation.tables)
    return evaluation


@dataclass(frozen=True)
class ModelVersion:
    """What is published: the inference worker's configuration and the model page's text."""

    configuration: dict
    description: str


def model_version(
    config: TrainingConfig,
    task: Task,
    base_model: str,
    dataset: ExtractedDataset,
    evaluation: Evaluation,
    layout: RunLayout,
) -> ModelVersion:
    """The model version's configuration (only the inference worker's keys) and description;
    writes `training.json` (what this training was) and `model_version.json` (what is
    published, to check or publish by hand)."""
    import ultralytics

    derivation = dataset.derivation
    max_detection = derivation.val.get("max_det")  # None in classify mode: nothing detected
    threshold = evaluation.confidence_threshold
    metadata = training_metadata(
        mode=config.mode,
        task=task.ultralytics_task,
        class_names=config.class_names,
        image_size=config.image_size,
        model_size=config.model_size,
        ultralytics_version=ultralytics.__version__,
        dataset_splits=dataset.summary["splits"],
        confidence_threshold=threshold,
        confidence_threshold_source=(
            "advanced.confidence_threshold"
            if config.confidence_threshold is not None
            else task.calibration
        ),
        largest_element_objects=max(
            (item["objects"] for item in derivation.figures["densest_element"].values()), default=0
        ),
        max_detection=max_detection,
        base_model=Path(base_model).name,
        settings={
            "num_epochs": config.num_epochs,
            "batch_size": config.batch_size,
            "pretrained": config.pretrained,
            "contrast": config.contrast,
            "training_kwargs": config.training_kwargs,
        },
        derived=[str(setting) for setting in derivation.settings] + derivation.warnings,
    )
    layout.training_metadata.write_text(json.dumps(metadata, indent=2, ensure_ascii=False))
    version = ModelVersion(
        task.inference_configuration(config, threshold, max_detection),
        model_description(
            metadata,
            evaluation.page_table,
            evaluation.worst_elements,
            evaluation.map_table,
            heading=task.evaluation_heading.format(threshold=threshold),
        ),
    )
    payload = model_version_payload(version.configuration, version.description)
    layout.model_version.write_text(json.dumps(payload, indent=2, ensure_ascii=False))
    return version


def package(
    evaluation: Evaluation, splits: Sequence[str], layout: RunLayout, archive: Path
) -> Path:
    """The model directory to publish, and the results archive at `archive`."""
    model_dir = build_model_dir(evaluation.weights, layout.model_dir)
    archive.parent.mkdir(parents=True, exist_ok=True)
    build_results_archive(layout, splits, archive)
    logger.info(f"Model written to {model_dir}, results to {archive}")
    return model_dir
