"""Production mode end to end: the real console script, as a Ponos task runs it (no `--dev`, no
`--database`), against the fake Arkindex (API + S3, tests/arkindex_fake) and a loopback IIIF
server serving the sample's images.

A training run costs tens of seconds on a CPU: runs are shared between tests where possible
(module-scoped `trained`), and runs that must fail do so before or right after extraction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.production import (
    CLASS_NAMES,
    NO_RETRY_WAITS,
    PART_SIZE,
    SPLITS,
    START_SEQUENCE,
    Run,
    model_from_archive,
    requested_images,
    sample_image_ids,
    table_rows,
    tar_zst_members,
    training_task,
)

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
        # The target model's versions: none yet, so no baseline to compare with
        "ListModelVersions",
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
    results = tar_zst_members((fake.work_dir / "results.tar.zst").read_bytes())
    metrics = json.loads(results["metrics.json"])
    # Only the YOLO segmenter's keys (tests/core/test_segmenter_contract.py checks their values)
    assert version.body["configuration"] == {
        "thumbnail_size": 256,
        "use_segment": CLASS_NAMES,
        "confidence_threshold": metrics["pages"]["val"]["confidence_threshold"],
        "max_detection": 300,
    }
    description = version.body["description"]
    assert {(split, name) for split in SPLITS for name in ("all", *CLASS_NAMES)} <= table_rows(
        description
    )
    # The page-level table first, then the worst elements, then Ultralytics' mAP table
    page_header = "| Split | Class | Instances | Predictions | Matches |"
    assert description.index(page_header) < description.index("| Box precision |")
    assert "### Settings read from the dataset" in description and "max_det: 300" in description
    training = json.loads(results["training.json"])
    assert training["class_names"] == CLASS_NAMES and training["mode"] == "segment"


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
        "training.json",
    }
    assert not any(name.endswith(".pt") for name in members)
    assert "training/results.csv" in members and "training/args.yaml" in members
    metrics = json.loads(members["metrics.json"])
    assert {split: metrics[split]["all"]["images"] for split in SPLITS} == {
        "train": 24,
        "val": 5,
        "test": 5,
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
        assert set(version.body["configuration"]) == set(trained_version.configuration)
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
    from worker_yolo_training.train import finetuned_model

    (version,) = trained.fake.created_model_versions()
    model_from_archive(trained.fake.uploaded_archive_bytes(version.id), tmp_path)
    config = parse_config({"class_names": class_names})
    with caplog.at_level(logging.WARNING, logger="worker_yolo_training"):
        assert finetuned_model(tmp_path, config, "segment") == str(tmp_path / "model.pt")
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
    """Ultralytics fails after the dataset is extracted (made to, in the worker's interpreter)."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        "from ultralytics.engine import trainer\n\n\n"
        "def fail(self, *args, **kwargs):\n"
        "    raise RuntimeError('injected training failure')\n\n\n"
        "trainer.BaseTrainer._do_train = fail\n"
    )
    with training_task(tmp_path / "task") as task:
        run = task.run(pythonpath=hooks)

        assert run.process.returncode not in (0, 2), run.output
        assert "injected training failure" in run.output
        assert task.fake.operation_ids() == [*START_SEQUENCE, "ListModelVersions"]
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


def test_classify_publication(tmp_path):
    """Classify mode, published as Teklia's YOLO classifier reads it."""
    overrides = {
        "mode": "classify",
        "class_names": ["text", "illustrated", "blank"],
        "image_size": 128,
        "advanced.training_kwargs": {"nbs": "4"},
    }
    with training_task(tmp_path / "task", overrides) as task:
        task.run().check()
        (version,) = task.fake.created_model_versions()
        results = tar_zst_members((task.work_dir / "results.tar.zst").read_bytes())
    metrics = json.loads(results["metrics.json"])
    assert version.body["configuration"] == {
        "thumbnail_size": 128,
        "confidence_threshold": metrics["pages"]["val"]["confidence_threshold"],
    }
    assert "Confusion matrix of val" in version.body["description"]
    assert {"top1", "top5"} <= set(metrics["val"]["all"]) and "confusion_matrix" in metrics["val"]
