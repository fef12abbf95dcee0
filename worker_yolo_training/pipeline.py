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

from arkindex_worker.models import DatasetSet

from worker_yolo_training import export
from worker_yolo_training.config import TrainingConfig
from worker_yolo_training.dataset import DatasetWriter, ExtractedDataset
from worker_yolo_training.images import CropStore
from worker_yolo_training.layout import RunLayout
from worker_yolo_training.publish import build_model_dir, build_results_archive
from worker_yolo_training.report import markdown_table
from worker_yolo_training.tasks import Task

logger = logging.getLogger(__name__)


@contextmanager
def crop_store(store: CropStore, keep: bool) -> Iterator[CropStore]:
    """The image store for one run: files other threads were writing are removed if the run
    stops, and the whole folder at the end when it is not a cache kept between runs."""
    try:
        yield store
    except BaseException:
        store.remove_partials()
        raise
    finally:
        if not keep:
            shutil.rmtree(store.folder, ignore_errors=True)


def extract(
    config: TrainingConfig,
    task: Task,
    sets: Sequence[DatasetSet],
    exports: Mapping[str, Path],
    store: CropStore,
    layout: RunLayout,
    concurrency: int,
) -> ExtractedDataset:
    """Write the dataset from every set (two SQL statements per set, whatever its size)."""
    layout.dataset.mkdir(parents=True)
    writer = DatasetWriter(layout.dataset, task, config, store, concurrency)
    with export.StatementCounter() as statements:
        for dataset_set in sets:
            dataset = dataset_set.dataset
            logger.info(f"Extracting set {dataset_set.name} of dataset {dataset.name}")
            with export.open_export(exports[dataset.id]) as opened:
                writer.add_set(dataset_set.name, opened.iter_pages(dataset.id, dataset_set.name))
    logger.info(f"Extraction SQL statements: {statements.count}")
    return writer.finish()


@dataclass(frozen=True)
class Evaluation:
    """The outcome of training: the best weights and their metrics on every split."""

    weights: Path
    metrics: dict
    table: str


def train_and_evaluate(
    config: TrainingConfig,
    task: Task,
    base_model: str,
    dataset: ExtractedDataset,
    layout: RunLayout,
    resume_from: Path | None = None,
) -> Evaluation:
    """Train (or continue training from `resume_from`), evaluate every non-empty split, write
    metrics.json and evaluation.md."""
    from worker_yolo_training import training

    device = training.select_device(config.batch_size)
    best = training.train(config, base_model, dataset.data, layout.root, device, resume_from)
    metrics = {}
    for split in dataset.splits:
        result = training.evaluate(best, config, dataset.data, split, layout.root, device)
        images = dataset.reports[split].images
        metrics[split] = task.split_metrics(result, config.class_names, images)
    table = markdown_table(metrics)
    layout.metrics.write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
    layout.evaluation_md.write_text(f"# Evaluation\n\n{table}\n")
    logger.info("Evaluation:\n" + table)
    return Evaluation(best, metrics, table)


def package(
    evaluation: Evaluation, splits: Sequence[str], layout: RunLayout, archive: Path
) -> Path:
    """The model directory to publish, and the results archive at `archive`."""
    model_dir = build_model_dir(evaluation.weights, layout.model_dir)
    archive.parent.mkdir(parents=True, exist_ok=True)
    build_results_archive(layout, splits, archive)
    logger.info(f"Model written to {model_dir}, results to {archive}")
    return model_dir
