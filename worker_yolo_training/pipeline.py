"""The stages in order, each a function of values:

```
RunInputs ──check──► base model ──extract──► ExtractedDataset ──train_and_evaluate──► Evaluation
          ──model_version──► ModelVersion ──package──► model directory + results.tar.zst
```

The mode is looked up here, once (`RunInputs.mode`), and each stage receives what it needs of it.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import NamedTuple

from arkindex_worker.models import DatasetSet

from worker_yolo_training import export, train
from worker_yolo_training.config import TrainingConfig, key_of, recorded_settings
from worker_yolo_training.core import RunLayout, inference_settings, read_truths
from worker_yolo_training.evaluate import (
    COMPARED_SPLITS,
    Comparison,
    ElementEvaluation,
    Evaluation,
    compare,
)
from worker_yolo_training.extract import (
    DatasetWriter,
    ExtractedDataset,
    SampleBuilder,
    SetSource,
    usable_cpus,
)
from worker_yolo_training.images import CropStore, ImageSource
from worker_yolo_training.modes import ModeSpec, Trained, spec_for
from worker_yolo_training.publish import (
    ModelVersion,
    build_model_dir,
    build_results_archive,
    model_description,
    training_metadata,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunInputs:
    """What a run is asked to do: the configuration, the sets and the export of each dataset."""

    config: TrainingConfig
    sets: tuple[DatasetSet, ...]
    exports: Mapping[str, Path]  # dataset id → its SQLite export

    @property
    def mode(self) -> ModeSpec:
        """What the configuration's mode means (the only lookup of a mode)."""
        return spec_for(self.config.mode)


def check(inputs: RunInputs) -> None:
    """Fail before any download when the exports cannot give what the configuration asks."""
    export.check_inputs(inputs.config, inputs.mode, inputs.sets, inputs.exports)
    inputs.mode.check_splits(inputs.config, inputs.sets, inputs.exports)


def base_model(inputs: RunInputs, weights_dir: Path, finetune_dir: Path | None) -> str:
    """What training starts from: the fine-tuned version, pretrained weights or an architecture."""
    return train.resolve_base_model(
        inputs.config, inputs.mode.architecture, weights_dir, finetune_dir
    )


class Stores(NamedTuple):
    training: CropStore
    plain: CropStore | None  # without contrast, for the page-level evaluation


@contextmanager
def crop_stores(source: ImageSource, folder: Path, contrast: bool, keep: bool) -> Iterator[Stores]:
    """The image stores of one run, sharing one folder: training images, and evaluation images
    without contrast when training images have it. Files other threads were writing are removed
    if the run stops; the folder is removed at the end when it is not a cache kept between runs."""
    stores = Stores(
        CropStore(source, folder, contrast, keep),
        CropStore(source, folder, kept=keep) if contrast else None,
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


def set_source(opened: export.Export, mode: ModeSpec, chosen: DatasetSet) -> SetSource:
    """A set to extract from its open export: its dataset elements and how many there are."""
    dataset = chosen.dataset
    total = opened.set_sizes(dataset.id).get(chosen.name)
    elements = mode.set_elements(opened, dataset.id, chosen.name)
    return SetSource(chosen.name, dataset.name, elements, total)


def extract(
    inputs: RunInputs,
    stores: Stores,
    layout: RunLayout,
    concurrency: int,
    previous: Path | None = None,
) -> ExtractedDataset:
    """Write the dataset from every set (two SQL statements per set, whatever its size: its
    size for the progress bar, its elements; then one per chunk of elements, for their
    descendants, where the chunk is built), the samples built on every CPU while the images
    download; the label files of a `previous` run's dataset that are the same are taken back."""
    layout.dataset.mkdir(parents=True)
    config, mode = inputs.config, inputs.mode
    builder = SampleBuilder(mode, config, usable_cpus())
    writer = DatasetWriter(
        layout.dataset, mode, config, stores.training, concurrency, stores.plain, builder,
        previous,
    )  # fmt: skip
    with export.StatementCounter() as statements, builder:
        # one export open at a time: the sets of each, in order, written together
        for path, sets in groupby(
            inputs.sets, key=lambda chosen: inputs.exports[chosen.dataset.id]
        ):
            with export.open_export(path) as opened:
                writer.add_sets([set_source(opened, mode, chosen) for chosen in sets])
    logger.info(f"Extraction SQL statements: {statements.count + builder.statements}")
    return writer.finish()


def train_and_evaluate(
    inputs: RunInputs,
    base: str,
    dataset: ExtractedDataset,
    layout: RunLayout,
    resume_from: Path | None = None,
    baseline: train.Baseline | None = None,
) -> Evaluation:
    """Train (or continue training from `resume_from`), evaluate every non-empty split with
    Ultralytics' metrics and as the inference worker sees it, compare with the `baseline` when
    there is one, write metrics.json and evaluation.md."""
    config, mode = inputs.config, inputs.mode
    task = mode.architecture.task
    device = train.select_device(config.batch_size)
    derivation = dataset.derivation
    with train.gpu_memory(config, "training"):
        best = train.train(
            config, task, base, dataset.data, layout.training, device, derivation.train, resume_from
        )
    splits = {}
    with train.gpu_memory(config, "evaluation"):
        for split in dataset.splits:
            result = train.validate(
                best, config, task, dataset.data, split, layout.evaluation(split), device,
                derivation.val,
            )  # fmt: skip
            splits[split] = mode.split_metrics(
                result, config.class_names, dataset.reports[split].images
            )
        started = time.monotonic()
        elements = mode.evaluate_elements(Trained(best, dataset, layout, device.main), config)
        logger.info(f"Page-level evaluation of the new model: {time.monotonic() - started:.1f} s")
        comparison = (
            compare_baseline(inputs, baseline, dataset, layout, elements, device.main)
            if baseline is not None
            else None
        )
    evaluation = Evaluation(best, splits, mode.metrics_table(splits), elements, comparison)
    layout.metrics.write_text(json.dumps(evaluation.metrics, indent=2, ensure_ascii=False))
    layout.evaluation_md.write_text(f"# Evaluation\n\n{evaluation.tables}\n")
    logger.info("Evaluation:\n" + evaluation.tables)
    return evaluation


def compare_baseline(
    inputs: RunInputs,
    baseline: train.Baseline,
    dataset: ExtractedDataset,
    layout: RunLayout,
    elements: ElementEvaluation,
    device: str,
) -> Comparison:
    """The baseline's page-level evaluation on the same val and test elements (the extracted
    images, the same code, its published configuration: one more pass per split), beside the
    new model's; its pages are written under `layout.baseline`."""
    started = time.monotonic()
    evaluated = inputs.mode.evaluate_elements(
        Trained(baseline.weights, dataset, RunLayout(layout.baseline), device),
        inputs.config,
        inference_settings(baseline.configuration),
    )
    logger.info(
        f"Baseline evaluation of {baseline.name} on {', '.join(evaluated.pages)}: "
        f"{time.monotonic() - started:.1f} s"
    )
    truths = read_truths(dataset.root, [s for s in COMPARED_SPLITS if s in evaluated.pages])
    comparison = compare(
        elements, evaluated, baseline.payload(), inputs.config.class_names, truths, layout
    )
    logger.info("Compared with the baseline:\n" + comparison.markdown)
    return comparison


def publication_refusal(config: TrainingConfig, evaluation: Evaluation) -> str | None:
    """Why no model version is published (`advanced.publish_if: better` and a new F1 lower than
    the baseline's: logged), else None."""
    comparison, key = evaluation.comparison, key_of("publish_if")
    if config.publish_if != "better":
        return None
    if comparison is None or comparison.guard is None:
        logger.info(f"`{key}: better`, but no baseline to compare with: published")
        return None
    refusal = comparison.refusal()
    if refusal is not None:
        refusal = f"{refusal} (`{key}: better`): the results archive is kept"
        logger.warning(refusal)
        return refusal
    split, new, old = comparison.guard
    logger.info(f"`{key}: better`: F1 {new:.3f} >= {old:.3f} of the baseline on {split}")
    return None


def model_version(
    inputs: RunInputs,
    base: str,
    dataset: ExtractedDataset,
    evaluation: Evaluation,
    layout: RunLayout,
) -> ModelVersion:
    """The model version's configuration (only the inference worker's keys) and description;
    writes `training.json` (what this training was) and `model_version.json` (what is
    published, to check or publish by hand)."""
    import ultralytics

    config, mode = inputs.config, inputs.mode
    derivation = dataset.derivation
    threshold = evaluation.confidence_threshold
    fixed = config.confidence_threshold is not None
    metadata = training_metadata(
        mode=config.mode,
        task=mode.architecture.task,
        class_names=config.class_names,
        image_size=config.image_size,
        model_size=config.model_size,
        ultralytics_version=ultralytics.__version__,
        dataset_splits=dataset.reports,
        confidence_threshold=threshold,
        confidence_threshold_source=key_of("confidence_threshold") if fixed else mode.calibration,
        largest_element_objects=derivation.largest_element_objects,
        max_detection=derivation.max_detection,
        base_model=Path(base).name,
        settings=recorded_settings(config),
        derived=[str(setting) for setting in derivation.settings] + derivation.warnings,
    )
    layout.training_metadata.write_text(json.dumps(metadata, indent=2, ensure_ascii=False))
    version = ModelVersion(
        mode.inference_configuration(config, threshold, derivation.max_detection),
        model_description(
            metadata,
            evaluation.elements.table,
            evaluation.elements.worst_elements,
            evaluation.map_table,
            heading=mode.evaluation_heading.format(threshold=threshold),
            comparison=evaluation.comparison.markdown if evaluation.comparison else "",
        ),
    )
    layout.model_version.write_text(json.dumps(version.payload(), indent=2, ensure_ascii=False))
    return version


@contextmanager
def results_kept_when_out_of_memory(
    splits: Sequence[str], layout: RunLayout, archive: Path
) -> Iterator[None]:
    """When the GPU runs out of memory, the results archive of what was done (the training
    folder so far: its arguments, results.csv, plots; the extraction summary) is still written."""
    try:
        yield
    except train.OutOfGpuMemory:
        archive.parent.mkdir(parents=True, exist_ok=True)
        build_results_archive(layout, splits, archive)
        logger.info(f"What was done before running out of GPU memory is kept in {archive}")
        raise


def package(
    evaluation: Evaluation, splits: Sequence[str], layout: RunLayout, archive: Path
) -> Path:
    """The model directory to publish, and the results archive at `archive`."""
    model_dir = build_model_dir(evaluation.weights, layout)
    archive.parent.mkdir(parents=True, exist_ok=True)
    build_results_archive(layout, splits, archive)
    logger.info(f"Model written to {model_dir}, results to {archive}")
    return model_dir
