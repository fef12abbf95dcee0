"""The worker: the pipeline from the configuration to the published model version.

Local mode (`--database`) and Arkindex mode run the same stages; they differ only at the edges,
all in this class: where the sets and exports come from, where outputs go, and whether a model
version is published.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from uuid import UUID

from arkindex.exceptions import ErrorResponse
from arkindex_worker.models import DatasetSet
from arkindex_worker.worker import DatasetWorker
from arkindex_worker.worker.training import TrainingMixin

from worker_yolo_training import export, train
from worker_yolo_training.config import (
    ConfigurationError,
    TrainingConfig,
    add_arguments,
    check_arguments,
    check_folders,
    fetch_concurrency,
    key_of,
    local_cache,
    parse_config,
    read_config_file,
)
from worker_yolo_training.core import (
    MODEL_FILE,
    DiskFullError,
    OutputFolderError,
    RunLayout,
    output_lock,
)
from worker_yolo_training.extract import WorkerStopped, usable_cpus
from worker_yolo_training.images import (
    FolderSource,
    IIIFSource,
    ImageServerUnreachable,
    ImageSource,
    StorageError,
)
from worker_yolo_training.pipeline import (
    RunInputs,
    base_model,
    check,
    crop_stores,
    extract,
    model_version,
    package,
    publication_refusal,
    results_kept_when_out_of_memory,
    train_and_evaluate,
)
from worker_yolo_training.publish import ModelVersion
from worker_yolo_training.resume import run_fingerprint, start_run

logger = logging.getLogger(__name__)

# Problems in the user's input (or in what it asks of the machine: GPU memory, memory for the
# extraction's worker processes): reported as one clear message, no traceback, exit status 2
INPUT_ERRORS = (
    ConfigurationError,
    export.ExtractionError,
    train.BaseModelError,
    DiskFullError,
    OutputFolderError,
    export.ExportError,
    ImageServerUnreachable,
    StorageError,
    train.OutOfGpuMemory,
    WorkerStopped,
)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM (what Ponos and Docker send to stop a task)."""

    def __init__(self, signal_number: int = signal.SIGINT):
        super().__init__()
        self.signal_number = int(signal_number)
        self.signal_name = signal.Signals(signal_number).name

    def message(self, local: bool) -> str:
        """What was done about it, and (locally) how to continue."""
        resume = ". To continue, run the same command with --resume" if local else ""
        return (
            f"Interrupted by {self.signal_name}: temporary files removed, no model version "
            f"published{resume}"
        )


def image_source(args, concurrency: int) -> ImageSource:
    """Where images come from: the --images folder, else each image's IIIF server."""
    if args.images:
        return FolderSource(args.images)
    return IIIFSource(
        timeout=args.image_timeout, retries=args.image_retries, connections=concurrency
    )


def _interrupt(signal_number, frame):
    raise Interrupted(signal_number)


class YoloTrainingWorker(DatasetWorker, TrainingMixin):
    """Trains an Ultralytics YOLO model on the sets of an Arkindex dataset and publishes it."""

    def __init__(self, local: bool, digests: Callable[[Path], str]):
        self.local = local  # then no API client is built: it would fetch an OpenAPI schema
        self.digests = digests  # of the exports, for run.json (`cli.ExportDigests`)
        super().__init__(description="Train Ultralytics YOLO models on Arkindex datasets")

    # ------------------------------------------------------------ base-worker hooks

    def add_arguments(self) -> None:
        super().add_arguments()
        # base-worker opens --config itself (type=open): a missing file would be a traceback
        for action in self.parser._actions:
            if action.dest == "config":
                action.type = Path
        add_arguments(self.parser)

    def setup_api_client(self) -> None:
        if self.local:
            self.api_client = None
            return
        super().setup_api_client()

    @property
    def is_read_only(self) -> bool:
        return self.local or super().is_read_only

    def _configure_for_developers(self) -> None:
        # What users write (base-worker wants `secret` flags); the version to fine-tune locally
        if self.args.verbose:
            logging.getLogger().setLevel(logging.DEBUG)
        self.config = read_config_file(self.args.config) if self.args.config else {}
        self.model_version_id = os.environ.get("ARKINDEX_MODEL_VERSION_ID")

    # ------------------------------------------------------------ the pipeline

    def run(self) -> None:
        """Run the pipeline; input errors exit with 2, interruptions with 128 + signal."""
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signal_number, _interrupt)
        try:
            self._run()
        except INPUT_ERRORS as error:
            logger.error(str(error))
            sys.exit(2)
        except Interrupted as interruption:
            logger.error(interruption.message(self.local))
            self.cleanup()
            logging.shutdown()
            # Downloads still running in threads are abandoned, not waited for
            os._exit(128 + interruption.signal_number)

    def _run(self) -> None:
        config = self.training_configuration()
        sets = self.selected_sets()
        inputs = RunInputs(config, tuple(sets), self.dataset_exports(sets))
        check(inputs)
        base = self.base_model(inputs)
        baseline = self.baseline(inputs)
        fingerprint = self.run_fingerprint(sets, inputs.exports)  # hashed since the start
        concurrency = fetch_concurrency(self.args, usable_cpus())
        where = f"the folder {self.args.images}" if self.args.images else "their IIIF servers"
        logger.info(f"Images from {where}, {concurrency} at once")
        with (
            self.output_root() as root,
            self.image_stores(config, root, concurrency) as stores,
        ):
            layout = RunLayout(root)
            start = start_run(layout, fingerprint, self.args.resume, inputs.mode, config)
            dataset = start.dataset or extract(
                inputs, stores, layout, concurrency, start.previous_dataset
            )
            start.wait_for_removal()
            if self.args.extract_only:
                logger.info(f"Dataset written to {dataset.root} (--extract-only: no training)")
                return
            archive = layout.archive if self.local else self.work_dir / layout.archive.name
            with results_kept_when_out_of_memory(dataset.splits, layout, archive):
                evaluation = train_and_evaluate(
                    inputs, base, dataset, layout, start.last_weights, baseline
                )
            version = model_version(inputs, base, dataset, evaluation, layout)
            model_dir = package(evaluation, dataset.splits, layout, archive)
            refused = publication_refusal(config, evaluation) is not None
            if not self.is_read_only:
                self.publish(config, model_dir, archive, None if refused else version)

    # ------------------------------------------------------------ inputs

    def training_configuration(self) -> TrainingConfig:
        """Arguments and configuration, validated once, before anything is read or fetched."""
        self.configure()
        check_arguments(self.args, self.local)
        if self.local:
            check_folders(self.args)
        config = parse_config(self.config)
        if config.contrast:
            logger.warning(
                f"`{key_of('contrast')}` is on: the YOLO inference worker has no contrast step, so "
                "the page-level evaluation predicts on images without contrast, as it will"
            )
        if not self.is_read_only:
            if not config.target_model_id:
                raise ConfigurationError(
                    ["`target_model_id` is required in Arkindex: choose the model to publish in"]
                )
            self.check_target_model(config.target_model_id)
        return config

    def check_target_model(self, model_id: str) -> None:
        """Fail at start, not after training, when the model to publish in cannot be reached."""
        if "RetrieveModel" not in self.api_client.document.links:
            return
        try:
            self.api_client.request("RetrieveModel", id=model_id)
        except ErrorResponse as error:
            if error.status_code in (403, 404):
                raise ConfigurationError(
                    [
                        f"`target_model_id` {model_id}: no such model, or this process may not "
                        f"use it (HTTP {error.status_code}). Choose a model you can publish to."
                    ]
                ) from None
            raise

    def selected_sets(self) -> list[DatasetSet]:
        """Local: the sets of the export (`--set` chooses). Arkindex: the process' sets."""
        if self.local:
            with export.open_export(self.args.database) as opened:
                wanted = [(str(d), s) for d, s in self.args.set]
                sets = export.select_sets(opened.list_datasets(), wanted)
        else:
            sets = self.list_sets()
        if not sets:
            raise export.ExtractionError("No dataset set to process")
        return sets

    def dataset_exports(self, sets: list[DatasetSet]) -> dict[str, Path]:
        """The SQLite export of each dataset: `--database` locally, else downloaded."""
        if self.local:
            return {dataset_set.dataset.id: self.args.database for dataset_set in sets}
        self.start_dataset_exports()
        exports = {}
        for dataset_set in sets:
            dataset = dataset_set.dataset
            if dataset.id not in exports:
                self._corpus_id = dataset.corpus_id
                exports[dataset.id] = self.get_export(
                    export_id=dataset.export_id, dataset_id=UUID(dataset.id)
                )
        return exports

    def base_model(self, inputs: RunInputs) -> str | None:
        """What training starts from, settled before any image is fetched (None with
        --extract-only). Ultralytics' offline environment is prepared in any case: extraction
        may use its geometry helpers (its plots' fonts only for a run that trains)."""
        # $YOLO_CONFIG_DIR wins (an image may ship weights there), else the task's data dir
        in_task = not self.local and "YOLO_CONFIG_DIR" not in os.environ
        weights_dir = train.prepare_environment(
            self.task_data_dir / "ultralytics" if in_task else None,
            fonts=not self.args.extract_only,
        )
        if self.args.extract_only:
            return None
        finetune_dir = self.find_extras_directory() if self.is_finetuning else None
        return base_model(inputs, weights_dir, finetune_dir)

    def baseline(self, inputs: RunInputs) -> train.Baseline | None:
        """The model the new one is compared with, settled before any image is fetched."""
        if self.args.extract_only:
            return None
        finetuned = self.is_finetuning and train.load_baseline(
            self.find_extras_directory() / MODEL_FILE, self.model_configuration,
            f"model version {self.model_version_id}",
        )  # fmt: skip
        published = None if self.is_read_only else partial(train.published_baseline,
            self.api_client, inputs.config, self.task_data_dir / "baseline")  # fmt: skip
        return train.choose_baseline(inputs.config, inputs.mode.architecture.task,
                                     self.args.baseline, finetuned or None, published)  # fmt: skip

    # ------------------------------------------------------------ where things go

    @contextmanager
    def output_root(self) -> Iterator[Path]:
        """Local mode: --output. Arkindex: a scratch folder in the task's data dir, removed at
        the end (only the results archive goes to the work dir, whose files become artifacts)."""
        if self.local:
            self.args.output.mkdir(parents=True, exist_ok=True)
            with output_lock(RunLayout(self.args.output).lock):
                yield self.args.output
            return
        self.task_data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="yolo-training-", dir=self.task_data_dir) as root:
            yield Path(root)

    def run_fingerprint(self, sets: list[DatasetSet], exports: dict[str, Path]) -> dict:
        """What a local run depends on (`--resume` checks it did not change); nothing in
        Arkindex, where a task is not resumed."""
        if not self.local:
            return {}
        return run_fingerprint(self.config, sets, exports, self.digests, self.args.images)

    def image_stores(self, config: TrainingConfig, root: Path, concurrency: int):
        """The image stores, in a cache kept between runs (a scratch folder with --no-cache)."""
        source = image_source(self.args, concurrency)
        if self.args.no_cache:
            folder = RunLayout(root).crops_scratch
        elif self.local or self.args.cache_dir:
            folder = local_cache(self.args)
        else:
            folder = self.task_data_dir / "image-cache"
        return crop_stores(source, folder, config.contrast, keep=not self.args.no_cache)

    def publish(
        self, config: TrainingConfig, model_dir: Path, archive: Path, version: ModelVersion | None
    ) -> None:
        """A new version of the target model (None: refused); base-worker aborts failed uploads."""
        if version is not None:
            self.publish_model_version(
                model_path=model_dir,
                model_id=config.target_model_id,
                description=version.description,
                configuration=version.configuration,
                parent=self.model_version_id,
            )
        if self.args.bootstrap:
            # Without a Ponos agent nobody else uploads the work dir's files
            self.upload_artifact(archive)
