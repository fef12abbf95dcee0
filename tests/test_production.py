"""Production mode end to end: the real console script, as a Ponos task runs it (no `--dev`, no
`--database`), against the fake Arkindex (API + S3, tests/arkindex_fake) and a loopback IIIF
server serving the sample's images.

A training run costs tens of seconds on a CPU: runs are shared between tests where possible
(module-scoped `trained`), and runs that must fail do so before or right after extraction.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import shutil
import sqlite3
import subprocess
import tarfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
import zstandard

from tests.arkindex_fake import FakeArkindex, run_fake_arkindex
from tests.conftest import SAMPLE, console_script
from tests.iiif_server import IIIFServer

CLASS_NAMES = ["text_line", "illustration"]
SPLITS = ("train", "val", "test")
# Sets of the sample's dataset (dev is the val split)
SAMPLE_SETS = ("train", "dev", "test")
PART_SIZE = 5 * 1024 * 1024
RUN_TIMEOUT = 300

START_SEQUENCE = [
    "RetrieveWorkerRun",
    "RetrieveWorkerRunConfiguration",
    "RetrieveModel",
    "ListProcessSets",
    "StartExport",
    "ListExports",
    "DownloadExport",
]

# Loaded by the worker's interpreter through PYTHONPATH: arkindex-client's MultipartUpload
# retries at once instead of after 2, 4 and 8 s (`disable_retry_waits` for a subprocess), and
# writes the waits it skipped to $SKIPPED_RETRY_WAITS.
NO_RETRY_WAITS = textwrap.dedent(
    """
    import os

    from arkindex.multipart import MultipartUpload


    def skip(seconds):
        with open(os.environ["SKIPPED_RETRY_WAITS"], "a") as log:
            log.write(f"{seconds:g}\\n")


    for method in (
        MultipartUpload.__init__,
        MultipartUpload.upload_part,
        MultipartUpload.complete,
        MultipartUpload.abort,
    ):
        method.retry.sleep = skip
    """
)


# ------------------------------------------------------------------------------ set-up


def arkindex_configuration(config: dict) -> dict:
    """A local YAML configuration as Arkindex sends it: groups as flat keys (`advanced.x`),
    dict fields' values as text."""
    flat = {}
    for key, value in config.items():
        if key == "advanced":
            for name, item in value.items():
                if name == "training_kwargs":
                    item = {k: str(v) for k, v in item.items()}
                flat[f"advanced.{name}"] = item
        else:
            flat[key] = value
    return flat


def sample_configuration(fake: FakeArkindex, overrides: dict | None = None) -> dict:
    """The sample's configuration for one epoch, publishing in the fake's model, as Arkindex
    sends it; `overrides` replace (flat) keys."""
    config = yaml.safe_load((SAMPLE / "config.yml").read_text())
    config.update(num_epochs=1, target_model_id=fake.model_id)
    return {**arkindex_configuration(config), **(overrides or {})}


def sample_export(path: Path, dataset_id: str, iiif_base: str) -> Path:
    """The sample export, as Arkindex would export it for the fake's dataset: same pages and
    annotations, images on the loopback IIIF server."""
    shutil.copyfile(SAMPLE / "export.sqlite", path)
    db = sqlite3.connect(path)
    try:
        with db:
            db.execute("UPDATE dataset SET id = ?", (dataset_id,))
            db.execute("UPDATE dataset_element SET dataset_id = ?", (dataset_id,))
            db.execute("UPDATE image_server SET url = ?", (iiif_base,))
            db.execute("UPDATE image SET url = ? || '/' || id", (iiif_base,))
    finally:
        db.close()
    return path


@dataclass
class Task:
    """One Ponos task of a training process: the fake Arkindex and the IIIF server."""

    fake: FakeArkindex
    iiif: IIIFServer
    directory: Path

    @property
    def work_dir(self) -> Path:
        return self.fake.work_dir

    def run(
        self,
        *args: str,
        model_dir: Path | None = None,
        env: dict | None = None,
        pythonpath: Path | None = None,
    ) -> Run:
        """The console script as the Ponos agent starts it, in a subprocess."""
        base = {
            k: v
            for k, v in os.environ.items()
            # Vast.ai variables would make base-worker's bootstrap clean-up call out
            if k not in ("CONTAINER_ID", "CONTAINER_API_KEY", "VAST_URL")
        }
        process_env = self.fake.subprocess_env(base, model_dir=model_dir)
        process_env["PYTHONUNBUFFERED"] = "1"
        if pythonpath is not None:
            process_env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(pythonpath), process_env.get("PYTHONPATH")])
            )
        process_env.update(env or {})
        process = subprocess.run(
            [console_script(), *args],
            capture_output=True,
            text=True,
            env=process_env,
            cwd=self.directory,
            timeout=RUN_TIMEOUT,
        )
        return Run(self, process)


@dataclass
class Run:
    task: Task
    process: subprocess.CompletedProcess

    @property
    def fake(self) -> FakeArkindex:
        return self.task.fake

    @property
    def output(self) -> str:
        return self.process.stdout + self.process.stderr

    def check(self) -> Run:
        assert self.process.returncode == 0, (
            f"exit {self.process.returncode}\n{self.process.stdout}\n{self.process.stderr}"
        )
        return self


@contextmanager
def training_task(directory: Path, overrides: dict | None = None) -> Iterator[Task]:
    """A production training task on the sample: one dataset with the sample's sets, its
    export on the IIIF server, the sample configuration (`overrides` replace flat keys)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (
        IIIFServer(images_dir=SAMPLE / "images", version=2) as iiif,
        run_fake_arkindex(directory / "ponos", default_dataset=False) as fake,
    ):
        dataset = fake.add_dataset("Sample pages", sets=SAMPLE_SETS)
        fake.set_export_data(
            dataset["id"], sample_export(directory / "export.sqlite", dataset["id"], iiif.base_url)
        )
        fake.configuration = sample_configuration(fake, overrides)
        yield Task(fake, iiif, directory)
        assert not fake.schema_violations, fake.schema_violations


def tar_zst_members(data: bytes) -> dict[str, bytes | None]:
    """Members of a tar.zst archive: name -> content (None for directories)."""
    members = {}
    with (
        zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        for member in tar:
            file = tar.extractfile(member) if member.isfile() else None
            members[member.name] = file.read() if file else None
    return members


def model_from_archive(data: bytes, directory: Path) -> Path:
    """What the Ponos agent does with a model version: its archive extracted in a folder."""
    members = tar_zst_members(data)
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in members.items():
        if content is not None:
            (directory / name).write_bytes(content)
    return directory / "model.pt"


def table_rows(markdown: str) -> set[tuple[str, str]]:
    """(split, class) of the evaluation table's rows."""
    rows = set()
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] in SPLITS:
            rows.add((cells[0], cells[1]))
    return rows


def requested_images(iiif: IIIFServer) -> set[str]:
    return {path.split("/")[2] for path in iiif.paths}


def sample_image_ids() -> set[str]:
    return {path.stem for path in (SAMPLE / "images").glob("*.jpg")}


# ------------------------------------------------------------------------- full run


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Iterator[Run]:
    """One production run on the sample, shared by the tests that inspect its outcome."""
    with training_task(tmp_path_factory.mktemp("trained")) as task:
        yield task.run().check()


def test_api_calls(trained):
    fake = trained.fake
    (version,) = fake.created_model_versions()
    parts = math.ceil(version.size / PART_SIZE)
    assert fake.operation_ids() == [
        *START_SEQUENCE,
        "CreateModelVersion",
        "CreateMultipartUpload",
        *["CreateMultipartUploadPart"] * parts,
        "CompleteMultipartUpload",
    ]
    assert {request.status for request in fake.requests} <= {200, 201, 302}
    (start_export,) = fake.requests_for("StartExport")
    assert start_export.body == {"dataset_id": fake.dataset["id"]}
    # Images came from IIIF: every page of the sample, nothing from a local folder
    assert requested_images(trained.task.iiif) == sample_image_ids()


def test_model_version(trained):
    fake = trained.fake
    (version,) = fake.created_model_versions()
    assert version.model_id == fake.model_id
    assert version.state == "available"
    assert set(version.body) == {"size", "archive_hash", "configuration", "description"}
    assert version.body["configuration"] == {
        "thumbnail_size": 320,
        "use_segment": CLASS_NAMES,
        "mode": "segment",
        "class_names": CLASS_NAMES,
        "image_size": 320,
        "ultralytics_model_size": "v8n",
    }
    assert table_rows(version.body["description"]) == {
        (split, name) for split in SPLITS for name in ("all", *CLASS_NAMES)
    }
    results = tar_zst_members((fake.work_dir / "results.tar.zst").read_bytes())
    table = results["evaluation.md"].decode().split("\n\n", 1)[1].strip()
    assert table in version.body["description"]


def test_uploaded_model(trained, tmp_path):
    fake = trained.fake
    (version,) = fake.created_model_versions()
    archive = fake.uploaded_archive_bytes(version.id)
    assert version.body["size"] == len(archive)
    assert version.body["archive_hash"] == hashlib.md5(archive).hexdigest()
    (upload,) = fake.uploads_for(version.id)
    assert upload.state == "completed"
    assert len(upload.completed_parts) == math.ceil(len(archive) / PART_SIZE)
    assert fake.s3.pending_multipart_uploads() == []

    assert set(tar_zst_members(archive)) == {"model.pt"}
    from ultralytics import YOLO

    model = YOLO(str(model_from_archive(archive, tmp_path / "model")))
    assert model.names == dict(enumerate(CLASS_NAMES))
    assert model.task == "segment"


def test_results_archive_is_the_only_artifact(trained):
    work_dir = trained.fake.work_dir
    # The agent uploads the work dir's files as artifacts: one archive, no folder, no image
    assert [path.name for path in work_dir.iterdir()] == ["results.tar.zst"]
    members = tar_zst_members((work_dir / "results.tar.zst").read_bytes())
    roots = {name.split("/")[0] for name in members}
    # Training and evaluation folders without weights, no dataset (images, labels)
    assert roots == {
        "training",
        "eval_train",
        "eval_val",
        "eval_test",
        "metrics.json",
        "evaluation.md",
        "summary.json",
    }
    assert not any(name.endswith(".pt") for name in members)
    assert "training/results.csv" in members and "training/args.yaml" in members
    metrics = json.loads(members["metrics.json"])
    assert {split: metrics[split]["all"]["images"] for split in metrics} == {
        "train": 6,
        "val": 2,
        "test": 2,
    }
    # Scratch folders beside the work dir are gone once the version is published
    data_dir = trained.fake.data_dir
    assert not list(data_dir.glob("yolo-training-*"))


# ----------------------------------------------------------------------- fine-tuning


def rename_classes(weights: Path, names: list[str]) -> None:
    """Give an Ultralytics checkpoint other class names (a model trained for other types)."""
    import torch

    checkpoint = torch.load(weights, map_location="cpu", weights_only=False)
    for key in ("model", "ema"):
        if checkpoint.get(key) is not None:
            checkpoint[key].names = dict(enumerate(names))
    torch.save(checkpoint, weights)


def test_finetuning(trained, tmp_path):
    """The worker run carries a version of the model whose files the agent extracted in
    ARKINDEX_MODEL_DIR; its classes have other names than the configuration's."""
    (trained_version,) = trained.fake.created_model_versions()
    archive = trained.fake.uploaded_archive_bytes(trained_version.id)
    model_dir = tmp_path / "model"
    rename_classes(model_from_archive(archive, model_dir), ["line", "picture"])

    with training_task(tmp_path / "task") as task:
        parent = task.fake.set_worker_run_model_version(
            configuration=trained_version.configuration, data=archive
        )
        run = task.run(model_dir=model_dir).check()

        (version,) = task.fake.created_model_versions()
        assert version.body["parent"] == parent.id
        assert version.state == "available"
        assert version.body["configuration"]["class_names"] == CLASS_NAMES
        assert task.fake.operation_ids()[: len(START_SEQUENCE)] == START_SEQUENCE
        assert (
            "The fine-tuned model predicts ['line', 'picture'], "
            "this training uses ['text_line', 'illustration']"
        ) in run.output

        results = tar_zst_members((task.work_dir / "results.tar.zst").read_bytes())
        args = yaml.safe_load(results["training/args.yaml"])
        assert args["model"] == str(model_dir / "model.pt")

        from ultralytics import YOLO

        new_model = model_from_archive(
            task.fake.uploaded_archive_bytes(version.id), tmp_path / "new"
        )
        assert YOLO(str(new_model)).names == dict(enumerate(CLASS_NAMES))


@pytest.mark.parametrize(
    ("class_names", "warns"),
    [(CLASS_NAMES, False), (["illustration"], True), (CLASS_NAMES[::-1], True)],
)
def test_finetuning_class_check(trained, tmp_path, caplog, class_names, warns):
    """Fine-tuning warns when the model's classes are not the configuration's, in order."""
    from worker_yolo_training.config import parse_config
    from worker_yolo_training.training import finetuned_model

    (version,) = trained.fake.created_model_versions()
    model_from_archive(trained.fake.uploaded_archive_bytes(version.id), tmp_path)
    config = parse_config({"class_names": class_names})
    with caplog.at_level(logging.WARNING, logger="worker_yolo_training"):
        assert finetuned_model(tmp_path, config) == str(tmp_path / "model.pt")
    assert ("The fine-tuned model predicts" in caplog.text) is warns


# ------------------------------------------------------------------------ failures


def test_upload_failure_aborts_the_upload(tmp_path):
    """S3 answers 500 to every part: the upload is retried, aborted, and the run fails."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(NO_RETRY_WAITS)
    skipped = tmp_path / "skipped-waits.txt"
    with training_task(tmp_path / "task") as task:
        task.fake.s3_part_failure = "server_error"
        run = task.run(pythonpath=hooks, env={"SKIPPED_RETRY_WAITS": str(skipped)})

        assert run.process.returncode not in (0, 2), run.output
        assert "500 Server Error" in run.process.stderr
        (version,) = task.fake.created_model_versions()
        assert version.state == "created"
        (upload,) = task.fake.uploads_for(version.id)
        assert upload.state == "aborted"
        # MultipartUpload tries a failing part 4 times (waits skipped by sitecustomize)
        assert len(upload.part_requests) == 4
        assert skipped.read_text().split() == ["2", "4", "8"]
        assert task.fake.operation_ids()[-1] == "AbortMultipartUpload"
        assert task.fake.s3.pending_multipart_uploads() == []
        assert not task.fake.s3.exists(version.s3_key)
        # The training's results still reach the agent
        assert (task.work_dir / "results.tar.zst").is_file()


def test_training_failure_publishes_nothing(tmp_path):
    """Ultralytics fails after the dataset is extracted (an optimizer it does not know)."""
    overrides = {"advanced.training_kwargs": {"optimizer": "NoSuchOptimizer"}}
    with training_task(tmp_path / "task", overrides) as task:
        run = task.run()

        assert run.process.returncode not in (0, 2), run.output
        assert "Optimizer 'NoSuchOptimizer' not found" in run.output
        assert task.fake.operation_ids() == START_SEQUENCE
        assert requested_images(task.iiif) == sample_image_ids()
        assert not task.fake.model_versions


def test_missing_target_model_stops_before_any_export(tmp_path):
    with training_task(tmp_path / "task") as task:
        del task.fake.configuration["target_model_id"]
        run = task.run()

        assert run.process.returncode == 2, run.output
        assert "`target_model_id` is required" in run.process.stderr
        assert "Traceback" not in run.process.stderr
        assert task.fake.operation_ids() == [
            "RetrieveWorkerRun",
            "RetrieveWorkerRunConfiguration",
        ]
        assert task.iiif.request_count == 0


def test_unknown_target_model_stops_before_any_export(tmp_path):
    with training_task(tmp_path / "task") as task:
        unknown = "00000000-0000-4000-8000-00000000dead"
        task.fake.configuration["target_model_id"] = unknown
        run = task.run()

        assert run.process.returncode == 2, run.output
        assert f"`target_model_id` {unknown}: no such model" in run.process.stderr
        assert "HTTP 404" in run.process.stderr and "Traceback" not in run.process.stderr
        assert task.fake.operation_ids() == START_SEQUENCE[:3]
        assert task.iiif.request_count == 0


# ------------------------------------------------------------------------- bootstrap


def test_bootstrap_uploads_results_as_artifact(tmp_path):
    """Without a Ponos agent (`TASK_BOOTSTRAP`, e.g. on vast.ai), the worker sets its work dir
    up and uploads the results archive itself."""
    with training_task(tmp_path / "task") as task:
        task.work_dir.rmdir()
        run = task.run(env={"TASK_BOOTSTRAP": "true", "TASK_PARENTS": "{}"}).check()

        fake = task.fake
        assert task.work_dir.resolve() == fake.data_dir / fake.task_id
        (version,) = fake.created_model_versions()
        assert version.state == "available"
        assert fake.operation_ids()[-2:] == ["CompleteMultipartUpload", "CreateArtifact"]
        (request,) = fake.requests_for("CreateArtifact")
        archive = (task.work_dir / "results.tar.zst").read_bytes()
        assert request.body["path"] == "results.tar.zst"
        assert request.body["size"] == len(archive)
        assert fake.artifact_bytes("results.tar.zst") == archive
        assert "Local environment has already been setup" not in run.output
