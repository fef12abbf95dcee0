"""The worker: orchestration only, from the configuration to the published model version.

Local mode (`--database`) and Arkindex mode run the same stages; they differ only where the sets
and exports come from, where outputs go and whether a model version is published.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from uuid import UUID

from arkindex.exceptions import ErrorResponse
from arkindex_worker.models import Dataset, DatasetSet
from arkindex_worker.worker import DatasetWorker
from arkindex_worker.worker.training import TrainingMixin

from worker_yolo_training import export
from worker_yolo_training.config import (
    ConfigurationError,
    TrainingConfig,
    parse_config,
)
from worker_yolo_training.config_file import read_config_file
from worker_yolo_training.dataset import (
    DEFAULT_CONCURRENCY,
    DatasetWriter,
    ExtractionError,
    split_of,
)
from worker_yolo_training.images import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    CropStore,
    FolderSource,
    IIIFSource,
    ImageSource,
)
from worker_yolo_training.publish import (
    RESULTS_ARCHIVE,
    build_model_dir,
    build_results_archive,
    model_configuration,
    model_description,
)
from worker_yolo_training.report import markdown_table, split_metrics
from worker_yolo_training.training import BaseModelError

logger = logging.getLogger(__name__)

# Problems in the user's input: reported as one clear message, no traceback
INPUT_ERRORS = (ConfigurationError, ExtractionError, BaseModelError)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM (what Ponos and Docker send to stop a task)."""

    def __init__(self, signal_number: int = signal.SIGINT):
        super().__init__()
        self.signal_number = int(signal_number)
        self.signal_name = signal.Signals(signal_number).name


def _interrupt(signal_number, frame):
    raise Interrupted(signal_number)


class YoloTrainingWorker(DatasetWorker, TrainingMixin):
    """Trains an Ultralytics YOLO model on the sets of an Arkindex dataset and publishes it."""

    def __init__(self, local: bool = False):
        # Local mode must not build an API client: it would fetch an OpenAPI schema
        self.local = local
        self.exports: dict[str, Path] = {}
        super().__init__(description="Train Ultralytics YOLO models on Arkindex datasets")

    # ------------------------------------------------------------ base-worker hooks

    def add_arguments(self) -> None:
        super().add_arguments()
        self.parser.add_argument(
            "--database", type=Path, help="Local SQLite export: run without Arkindex."
        )
        self.parser.add_argument(
            "--output", type=Path, default=Path("output"), help="Output folder in local mode."
        )
        self.parser.add_argument(
            "--images",
            type=Path,
            help="Folder of full images named <image id>.jpg (or .png, .tif): no IIIF download.",
        )
        self.parser.add_argument(
            "--extract-only", action="store_true", help="Write the YOLO dataset and stop."
        )
        self.parser.add_argument(
            "--concurrency",
            type=int,
            default=DEFAULT_CONCURRENCY,
            help="Images downloaded at once.",
        )
        self.parser.add_argument(
            "--cache-dir",
            type=Path,
            help="Image cache (local default: $XDG_CACHE_HOME/worker-yolo-training/images, "
            "else ~/.cache/...; in Arkindex: inside the task's data dir).",
        )
        self.parser.add_argument(
            "--no-cache", action="store_true", help="Keep no image between runs."
        )
        self.parser.add_argument(
            "--image-timeout",
            type=float,
            default=DEFAULT_TIMEOUT[1],
            help="Seconds to wait for an image server's answer.",
        )
        self.parser.add_argument(
            "--image-retries",
            type=int,
            default=DEFAULT_RETRIES,
            help="Attempts per image on timeouts, connection errors and 5xx.",
        )

    def setup_api_client(self) -> None:
        if self.local:
            self.api_client = None
            return
        super().setup_api_client()

    @property
    def is_read_only(self) -> bool:
        return self.local or super().is_read_only

    def _configure_for_developers(self) -> None:
        # base-worker's reader needs a `secret` flag on every item; accept what users write
        if self.args.verbose:
            logging.getLogger().setLevel(logging.DEBUG)
        self.config = read_config_file(Path(self.args.config.name)) if self.args.config else {}

    def configure(self) -> None:
        """Read arguments and configuration, and validate the configuration once."""
        super().configure()
        self.check_arguments()
        self.training_config: TrainingConfig = parse_config(self.config)
        if not self.is_read_only and not self.training_config.target_model_id:
            raise ConfigurationError(
                ["`target_model_id` is required in Arkindex: choose the model to publish in"]
            )

    def check_target_model(self) -> None:
        """Fail at start, not after training, when the model to publish in cannot be reached."""
        model_id = self.training_config.target_model_id
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

    def check_arguments(self) -> None:
        """Command-line mistakes, reported together like configuration ones."""
        args, problems = self.args, []
        if self.local and (args.database is None or not args.database.is_file()):
            problems.append(f"--database: no export at {args.database} (local mode needs one)")
        if args.images is not None and not args.images.is_dir():
            problems.append(f"--images: {args.images} is not a folder")
        for name, value, minimum in (
            ("--concurrency", args.concurrency, 1),
            ("--image-retries", args.image_retries, 1),
        ):
            if value < minimum:
                problems.append(f"{name} must be at least {minimum}, got {value}")
        if args.image_timeout <= 0:
            problems.append(f"--image-timeout must be positive, got {args.image_timeout}")
        if problems:
            raise ConfigurationError(problems)

    def list_sets(self) -> list[DatasetSet]:
        if not self.local:
            return super().list_sets()
        return self._local_sets()

    def start_dataset_exports(self) -> None:
        if not self.local:
            super().start_dataset_exports()

    # ------------------------------------------------------------ stages

    @property
    def output_dir(self) -> Path:
        """Local mode: --output. Arkindex: a scratch folder beside the task's work dir, whose
        files become artifacts (only the results archive belongs there)."""
        if self.local:
            return self.args.output
        if not hasattr(self, "_scratch"):
            self.task_data_dir.mkdir(parents=True, exist_ok=True)
            self._scratch = Path(tempfile.mkdtemp(prefix="yolo-training-", dir=self.task_data_dir))
        return self._scratch

    def _local_sets(self) -> list[DatasetSet]:
        self.exports = {}
        with export.open_export(self.args.database) as opened:
            datasets = {dataset.id: dataset for dataset in opened.list_datasets()}
        if self.args.set:
            wanted = [(str(dataset_id), name) for dataset_id, name in self.args.set]
        elif len(datasets) == 1:
            (dataset,) = datasets.values()
            wanted = [(dataset.id, name) for name in dataset.sets]
        else:
            listing = ", ".join(
                f"{d.id} ({d.name}: {', '.join(d.sets)})" for d in datasets.values()
            )
            raise ExtractionError(
                f"The export holds {len(datasets)} datasets; choose sets with "
                f"--set DATASET_ID:SET ... Datasets: {listing or 'none'}"
            )
        sets = []
        for dataset_id, name in wanted:
            dataset = datasets.get(dataset_id)
            if dataset is None or name not in dataset.sets:
                raise ExtractionError(
                    f"Set {dataset_id}:{name} is not in the export. Available: "
                    + ", ".join(f"{d.id}:{s}" for d in datasets.values() for s in d.sets)
                )
            info = Dataset(id=dataset.id, name=dataset.name, sets=list(dataset.sets))
            sets.append(DatasetSet(name=name, dataset=info))
            self.exports[dataset.id] = self.args.database
        return sets

    def _download_exports(self, sets: list[DatasetSet]) -> None:
        for dataset_set in sets:
            dataset = dataset_set.dataset
            if dataset.id not in self.exports:
                self._corpus_id = dataset.corpus_id
                self.exports[dataset.id] = self.get_export(
                    export_id=dataset.export_id, dataset_id=UUID(dataset.id)
                )

    def check_inputs(self, sets: list[DatasetSet]) -> None:
        """Fail before any download when the export cannot give what the configuration asks."""
        config = self.training_config
        splits = {}
        for dataset_id, path in self.exports.items():
            with export.open_export(path) as opened:
                types = opened.element_type_counts()
                sizes = opened.set_sizes(dataset_id)
            missing = [name for name in config.class_names if name not in types]
            if missing:
                existing = ", ".join(f"{t} ({n})" for t, n in sorted(types.items()))
                raise ExtractionError(
                    f"`class_names` {', '.join(missing)} not found in the export of dataset "
                    f"{dataset_id}. Element types there: {existing}"
                )
            for dataset_set in sets:
                if dataset_set.dataset.id == dataset_id and split_of(dataset_set.name):
                    split = split_of(dataset_set.name)
                    splits[split] = splits.get(split, 0) + sizes.get(dataset_set.name, 0)
        for split, sets_hint in (("train", "train"), ("val", "dev or val")):
            if not splits.get(split):
                raise ExtractionError(
                    f"No element in a {sets_hint} set: a {split} split is needed to train. "
                    f"Sets selected: {', '.join(s.name for s in sets) or 'none'}"
                )

    def image_source(self) -> ImageSource:
        if self.args.images:
            return FolderSource(self.args.images)
        return IIIFSource(
            timeout=(DEFAULT_TIMEOUT[0], self.args.image_timeout),
            retries=self.args.image_retries,
            connections=self.args.concurrency,
        )

    def cache_dir(self) -> Path:
        """Where final crops are kept between runs (a scratch folder with --no-cache)."""
        if self.args.no_cache:
            return self.output_dir / "crops.tmp"
        if self.args.cache_dir:
            return self.args.cache_dir
        if not self.local:
            return self.task_data_dir / "image-cache"
        cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        return cache_home / "worker-yolo-training" / "images"

    def process_set(self, dataset_set: DatasetSet) -> None:
        """Convert one set's elements into images and labels of its split."""
        logger.info(f"Extracting set {dataset_set.name} of dataset {dataset_set.dataset.name}")
        with export.open_export(self.exports[dataset_set.dataset.id]) as opened:
            self.writer.add_set(
                dataset_set.name, opened.iter_pages(dataset_set.dataset.id, dataset_set.name)
            )

    def run(self) -> None:
        """Configure, extract every set, train, evaluate, package and publish."""
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signal_number, _interrupt)
        try:
            self._run()
        except INPUT_ERRORS as error:
            logger.error(str(error))
            sys.exit(2)
        except Interrupted as interruption:
            self._remove_temporary_files()
            logger.error(
                f"Interrupted by {interruption.signal_name}: temporary files removed, "
                "no model version published"
            )
            self.cleanup()
            logging.shutdown()
            # Downloads still running in threads are abandoned, not waited for
            os._exit(128 + interruption.signal_number)
        finally:
            self._remove_scratch()

    def _remove_scratch(self) -> None:
        if getattr(self, "_scratch", None) is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def _remove_temporary_files(self) -> None:
        self._remove_scratch()
        store = getattr(self, "store", None)
        if store is not None:
            store.remove_partials()
            if self.args.no_cache:
                shutil.rmtree(store.folder, ignore_errors=True)

    def _run(self) -> None:
        self.configure()
        if not self.is_read_only:
            self.check_target_model()
        sets = self.list_sets()
        if not sets:
            raise ExtractionError("No dataset set to process")
        self.start_dataset_exports()
        self._download_exports(sets)
        self.check_inputs(sets)
        base_model = None if self.args.extract_only else self.base_model()
        data_yaml = self.extract(sets)
        if self.args.extract_only:
            logger.info(f"Dataset written to {data_yaml.parent} (--extract-only: no training)")
            return
        best, table = self.train_and_evaluate(base_model, data_yaml)
        model_dir, archive = self.package(best)
        if not self.is_read_only:
            self.publish(model_dir, archive, table)

    def base_model(self) -> str:
        """What training starts from, settled before any image is fetched."""
        from worker_yolo_training import training

        # $YOLO_CONFIG_DIR wins (an image may ship weights there), else the task's data dir
        in_task = not self.local and "YOLO_CONFIG_DIR" not in os.environ
        weights_dir = training.prepare_environment(
            self.task_data_dir / "ultralytics" if in_task else None
        )
        finetune_dir = self.find_extras_directory() if self.is_finetuning else None
        return training.resolve_base_model(self.training_config, weights_dir, finetune_dir)

    def extract(self, sets: list[DatasetSet]) -> Path:
        """Write the YOLO dataset from every set; returns its data.yaml."""
        self.store = CropStore(self.image_source(), self.cache_dir(), self.training_config.contrast)
        self.writer = DatasetWriter(
            self.output_dir / "dataset", self.training_config, self.store, self.args.concurrency
        )
        with export.StatementCounter() as statements:
            for dataset_set in sets:
                self.process_set(dataset_set)
        logger.info(f"Extraction SQL statements: {statements.count}")
        if self.args.no_cache:
            shutil.rmtree(self.store.folder, ignore_errors=True)
        return self.writer.finish()

    def train_and_evaluate(self, base_model: str, data_yaml: Path) -> tuple[Path, str]:
        """Train, evaluate every non-empty split, write the metrics; returns the best weights and
        the evaluation table."""
        from worker_yolo_training import training

        config, output = self.training_config, self.output_dir
        device = training.select_device(config.batch_size)
        best = training.train(config, base_model, data_yaml, output, device)
        metrics = {}
        for split in self.writer.non_empty_splits():
            result = training.evaluate(best, config, data_yaml, split, output, device)
            images = self.writer.reports[split].images
            metrics[split] = split_metrics(result, config.class_names, images)
        table = markdown_table(metrics)
        (output / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
        (output / "evaluation.md").write_text(f"# Evaluation\n\n{table}\n")
        logger.info("Evaluation:\n" + table)
        return best, table

    def package(self, best: Path) -> tuple[Path, Path]:
        """The model directory and results.tar.zst (in the work dir inside Arkindex)."""
        output = self.output_dir
        model_dir = build_model_dir(best, output / "model")
        archive_dir = output if self.local else self.work_dir
        archive_dir.mkdir(parents=True, exist_ok=True)
        archive = build_results_archive(
            folders=[
                output / "training",
                *(output / f"eval_{split}" for split in self.writer.non_empty_splits()),
            ],
            files=[
                output / "metrics.json",
                output / "evaluation.md",
                output / "dataset" / "summary.json",
            ],
            destination=archive_dir / RESULTS_ARCHIVE,
        )
        logger.info(f"Model written to {model_dir}, results to {archive}")
        return model_dir, archive

    def publish(self, model_dir: Path, archive: Path, table: str) -> None:
        """A new version of the target model; base-worker aborts the upload if it fails."""
        config = self.training_config
        self.publish_model_version(
            model_path=model_dir,
            model_id=config.target_model_id,
            description=model_description(config, table),
            configuration=model_configuration(config),
            parent=self.model_version_id,
        )
        if self.args.bootstrap:
            # Without a Ponos agent nobody else uploads the work dir's files
            self.upload_artifact(archive)
