"""Tests of the Arkindex fake, driven by the real arkindex-client and arkindex-base-worker."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import requests
from arkindex import ArkindexClient, options_from_env
from arkindex.exceptions import ArkindexClientError, ArkindexValidationError
from arkindex_worker.utils import extract_tar_zst_archive
from arkindex_worker.worker import DatasetWorker
from arkindex_worker.worker.corpus import FailedExportError
from arkindex_worker.worker.training import TrainingMixin

from tests.arkindex_fake import (
    SCHEMA_PATH,
    FakeArkindex,
    disable_retry_waits,
    fake_arkindex_fixture,  # noqa: F401
    md5_base64,
    run_fake_arkindex,
)

EXPECTED_OPERATIONS = {
    "RetrieveWorkerRun": ("GET", "/api/v1/process/workers/{id}/"),
    "RetrieveWorkerRunConfiguration": ("GET", "/api/v1/workers/runs/{id}/configuration/"),
    "ListProcessSets": ("GET", "/api/v1/process/{id}/sets/"),
    "StartExport": ("POST", "/api/v1/corpus/{id}/export/"),
    "ListExports": ("GET", "/api/v1/corpus/{id}/export/"),
    "DownloadExport": ("GET", "/api/v1/export/{id}/"),
    "CreateModelVersion": ("POST", "/api/v1/model/{id}/versions/"),
    "CreateMultipartUpload": ("POST", "/api/v1/multipart/"),
    "CreateMultipartUploadPart": ("POST", "/api/v1/multipart/part/"),
    "CompleteMultipartUpload": ("POST", "/api/v1/multipart/complete/"),
    "AbortMultipartUpload": ("POST", "/api/v1/multipart/abort/"),
    "CreateArtifact": ("POST", "/api/v1/task/{id}/artifacts/"),
    "RetrieveModel": ("GET", "/api/v1/model/{id}/"),
    "ListModelVersions": ("GET", "/api/v1/model/{id}/versions/"),
    "RetrieveModelVersion": ("GET", "/api/v1/modelversion/{id}/"),
    "RetrieveTask": ("GET", "/api/v1/task/{id}/"),
}

PUBLISH_SEQUENCE = [
    "CreateModelVersion",
    "CreateMultipartUpload",
    "CreateMultipartUploadPart",
    "CompleteMultipartUpload",
]


class TrainingWorker(DatasetWorker, TrainingMixin):
    pass


@pytest.fixture
def worker(fake_arkindex: FakeArkindex, monkeypatch) -> TrainingWorker:
    """A configured DatasetWorker + TrainingMixin in production mode, in this process."""
    fake_arkindex.apply_env(monkeypatch)
    monkeypatch.setattr(sys, "argv", ["worker-yolo-training"])
    worker = TrainingWorker()
    worker.configure()
    return worker


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A model directory whose archive (random, incompressible) needs 2 parts of 5 MiB."""
    path = tmp_path / "model"
    (path / "sub").mkdir(parents=True)
    (path / "model.pt").write_bytes(os.urandom(6 * 1024 * 1024))
    (path / "sub" / "args.yaml").write_text("imgsz: 640\n")
    return path


# Schema


def test_schema_declares_the_operations_base_worker_calls():
    client = ArkindexClient(base_url="http://127.0.0.1:9/", schema_url=str(SCHEMA_PATH))
    links = client.document.links
    assert {name: (link.method, link.url) for name, link in links.items()} == EXPECTED_OPERATIONS

    # ArkindexClient.paginate needs a page (or cursor) query parameter
    for name in ("ListProcessSets", "ListExports", "ListModelVersions"):
        assert links[name].paginated is True
        assert "page" in [f.name for f in links[name].get_query_fields()]
    assert "dataset_id" in [f.name for f in links["ListExports"].get_query_fields()]
    # base-worker passes bodies as body=...
    for name, link in links.items():
        if link.method == "POST":
            assert link.get_body_field().name == "body", name

    # Every operation has a handler in the fake, and vice versa
    handlers = {name[len("_op_") :] for name in dir(FakeArkindex) if name.startswith("_op_")}
    assert handlers == set(EXPECTED_OPERATIONS)


# Client and HTTP behaviour


@pytest.mark.parametrize("schema", ["url", "path", "none"])
@pytest.mark.parametrize("auth", ["task", "api"])
def test_client_from_env(fake_arkindex, monkeypatch, schema, auth):
    env = fake_arkindex.apply_env(monkeypatch, schema=schema, auth=auth)
    assert env["ARKINDEX_WORKER_RUN_ID"] == fake_arkindex.worker_run_id
    assert env["PONOS_TASK"] == fake_arkindex.task_id
    assert env["PONOS_DATA"] == str(fake_arkindex.data_dir)
    assert ("ARKINDEX_TASK_TOKEN" in env) is (auth == "task")

    client = ArkindexClient(**options_from_env())
    worker_run = client.request("RetrieveWorkerRun", id=fake_arkindex.worker_run_id)
    assert worker_run["process"] == {
        "id": fake_arkindex.process_id,
        "name": "Fake training process",
        "corpus": fake_arkindex.corpus_id,
        "mode": "dataset",
        "state": "running",
        "activity_state": "disabled",
        "use_cache": False,
        "chunks": 1,
    }
    assert worker_run["model_version"] is None
    assert fake_arkindex.operation_ids() == ["RetrieveWorkerRun"]
    assert fake_arkindex.requests[0].status == 200


def test_errors_use_the_arkindex_format(fake_arkindex):
    env = fake_arkindex.env(schema="path")
    client = ArkindexClient(
        token="wrong",
        auth_scheme="Ponos",
        base_url=env["ARKINDEX_API_URL"],
        schema_url=str(SCHEMA_PATH),
    )
    with pytest.raises(ArkindexClientError) as excinfo:
        client.request("RetrieveWorkerRun", id=fake_arkindex.worker_run_id)
    assert excinfo.value.status_code == 401
    assert excinfo.value.content["errors"][0]["code"] == "authentication_failed"

    client.configure(
        token=fake_arkindex.task_token, auth_scheme="Ponos", base_url=env["ARKINDEX_API_URL"]
    )
    with pytest.raises(ArkindexClientError) as excinfo:
        client.request("RetrieveWorkerRun", id=str(uuid.uuid4()))
    assert excinfo.value.status_code == 404

    # Bodies are validated against the schema
    with pytest.raises(ArkindexValidationError) as excinfo:
        client.request(
            "CreateModelVersion",
            id=fake_arkindex.model_id,
            body={"size": 0, "archive_hash": "nope", "unknown": 1},
        )
    assert sorted(e["attr"][0] for e in excinfo.value.content["errors"]) == [
        "archive_hash",
        "size",
        "unknown",
    ]

    # Outside the schema
    response = requests.get(f"{fake_arkindex.url}/api/v1/elements/", timeout=5)
    assert response.status_code == 404
    assert fake_arkindex.requests[-1].name == "GET /api/v1/elements/"


def test_answers_are_checked_against_the_schema(fake_arkindex):
    fake_arkindex.process_mode = "not a mode"
    client = ArkindexClient(
        token=fake_arkindex.task_token,
        auth_scheme="Ponos",
        base_url=fake_arkindex.url,
        schema_url=fake_arkindex.schema_url,
    )
    client.request("RetrieveWorkerRun", id=fake_arkindex.worker_run_id)
    assert fake_arkindex.schema_violations == [
        "RetrieveWorkerRun 200: ['process', 'mode']: Not a valid choice."
    ]
    # The fixture would fail the test at teardown otherwise
    fake_arkindex.schema_violations.clear()


def test_servers_are_stopped(tmp_path):
    with run_fake_arkindex(tmp_path / "ponos", default_dataset=False) as fake:
        assert fake.url.startswith("http://127.0.0.1:")
        assert fake.s3.url.startswith("http://127.0.0.1:")
        assert (tmp_path / "ponos" / "current").is_dir()
        assert fake.process_sets == []
        assert requests.get(fake.schema_url, timeout=5).json()["paths"]
        urls = [fake.url, fake.s3.url]
    for url in urls:
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=5)


# Worker configuration and datasets


def test_worker_configuration(fake_arkindex, monkeypatch):
    parent = fake_arkindex.set_worker_run_model_version(configuration={"imgsz": 320, "epochs": 5})
    fake_arkindex.configuration = {
        "epochs": 10,
        "model": fake_arkindex.model_id,
        "hub_token": "s3cr3t",
    }
    fake_arkindex.secret_keys = {"hub_token"}
    fake_arkindex.apply_env(monkeypatch, model_dir=fake_arkindex.data_dir / "model")
    monkeypatch.setattr(sys, "argv", ["worker-yolo-training"])

    worker = TrainingWorker()
    worker.configure()

    assert not worker.is_read_only
    assert worker.work_dir == fake_arkindex.work_dir
    assert worker.task_id == fake_arkindex.task_id
    assert worker.corpus_id == fake_arkindex.corpus_id
    assert worker.process_mode.value == "dataset"
    assert worker.worker_details["slug"] == "yolo-training"
    assert worker.config == {"epochs": 10, "model": fake_arkindex.model_id, "hub_token": "s3cr3t"}
    # RetrieveSecret is not in the schema: secret values are used as they are (Arkindex CE)
    assert worker.secrets == {"hub_token": "s3cr3t"}
    assert worker.model_configuration == {"imgsz": 320, "epochs": 5}
    assert worker.model_version_id == parent.id
    assert worker.model_details["id"] == fake_arkindex.model_id
    assert worker.is_finetuning
    assert fake_arkindex.operation_ids() == ["RetrieveWorkerRun", "RetrieveWorkerRunConfiguration"]


def test_list_process_sets_paginated(fake_arkindex, worker):
    fake_arkindex.page_size = 2
    other = fake_arkindex.add_dataset("Other", sets=("train", "dev", "test"), selected=["train"])

    sets = worker.list_process_sets()

    assert [(s.dataset.name, s.name) for s in sets] == [
        ("Fake dataset", "train"),
        ("Fake dataset", "val"),
        ("Fake dataset", "test"),
        ("Other", "train"),
    ]
    assert sets[3].dataset.corpus_id == fake_arkindex.corpus_id
    assert [str(d) for d in worker.datasets] == [fake_arkindex.dataset["id"], other["id"]]
    calls = fake_arkindex.requests_for("ListProcessSets")
    assert [c.query for c in calls] == [{}, {"page": "2"}]


def test_start_and_download_export(fake_arkindex, worker):
    content = b"SQLite format 3\x00" + os.urandom(4096)
    fake_arkindex.set_export_data(fake_arkindex.dataset["id"], content)
    dataset_id = uuid.UUID(fake_arkindex.dataset["id"])

    export_id = worker.start_export(dataset_id=dataset_id)
    path = worker.get_export(export_id=export_id, dataset_id=dataset_id)

    assert path.read_bytes() == content
    assert fake_arkindex.operation_ids() == [
        "RetrieveWorkerRun",
        "RetrieveWorkerRunConfiguration",
        "StartExport",
        "ListExports",
        "DownloadExport",
    ]
    start, list_exports, download = fake_arkindex.requests[2:]
    assert start.body == {"dataset_id": str(dataset_id)}
    assert list_exports.query == {"dataset_id": str(dataset_id)}
    assert download.status == 302
    assert download.path == f"/api/v1/export/{export_id}/"


def test_existing_export_is_reused(fake_arkindex, worker):
    dataset_id = fake_arkindex.dataset["id"]
    fake_arkindex.add_export(dataset_id, data=b"old")
    newest = fake_arkindex.add_export(dataset_id, data=b"new")
    fake_arkindex.add_export(None, data=b"whole corpus")
    fake_arkindex.start_export_conflict = "existing_export"

    export_id = worker.start_export(dataset_id=uuid.UUID(dataset_id))

    assert export_id == newest.id
    assert worker.get_export(export_id, uuid.UUID(dataset_id)).read_bytes() == b"new"


def test_failed_export(fake_arkindex, worker):
    fake_arkindex.new_export_state = "failed"
    dataset_id = uuid.UUID(fake_arkindex.dataset["id"])
    export_id = worker.start_export(dataset_id=dataset_id)
    with pytest.raises(FailedExportError):
        worker.get_export(export_id, dataset_id)


# Model publication


def test_publish_model_version(fake_arkindex, worker, model_dir, tmp_path):
    parent = fake_arkindex.add_model_version(configuration={"imgsz": 320})

    worker.publish_model_version(
        model_dir,
        fake_arkindex.model_id,
        configuration={"thumbnail_size": 640, "use_segment": ["text_line"]},
        description="Trained on Fake dataset",
        parent=parent.id,
    )

    assert fake_arkindex.operation_ids()[2:] == [
        "CreateModelVersion",
        "CreateMultipartUpload",
        "CreateMultipartUploadPart",
        "CreateMultipartUploadPart",
        "CompleteMultipartUpload",
    ]
    (version,) = fake_arkindex.created_model_versions()
    archive = fake_arkindex.uploaded_archive_bytes(version.id)
    assert version.body == {
        "size": len(archive),
        "archive_hash": hashlib.md5(archive).hexdigest(),
        "configuration": {"thumbnail_size": 640, "use_segment": ["text_line"]},
        "description": "Trained on Fake dataset",
        "parent": parent.id,
    }
    assert version.state == "available"
    assert worker.model_version["id"] == version.id

    (upload,) = fake_arkindex.uploads_for(version.id)
    assert upload.state == "completed"
    five_mib = 5 * 1024 * 1024
    assert [p["part_number"] for p in upload.part_requests] == [1, 2]
    assert [p["md5_hash"] for p in upload.completed_parts] == [
        md5_base64(archive[:five_mib]),
        md5_base64(archive[five_mib:]),
    ]
    assert {p["checksum"] for p in upload.part_requests} == {None}
    assert fake_arkindex.s3.pending_multipart_uploads() == []

    # The archive holds the model directory's files
    archive_path = tmp_path / "archive.tar.zst"
    archive_path.write_bytes(archive)
    extract_tar_zst_archive(archive_path, tmp_path / "extracted")
    assert (tmp_path / "extracted" / "model.pt").read_bytes() == (
        model_dir / "model.pt"
    ).read_bytes()
    assert (tmp_path / "extracted" / "sub" / "args.yaml").read_text() == "imgsz: 640\n"


@pytest.mark.parametrize(
    ("failure", "exception", "part_requests"),
    [
        ("forbidden", requests.HTTPError, 1),
        ("server_error", requests.HTTPError, 4),
        ("missing_etag", Exception, 1),
        ("wrong_etag", ArkindexValidationError, 2),
    ],
)
def test_publish_aborts_on_s3_failure(
    fake_arkindex, worker, model_dir, monkeypatch, failure, exception, part_requests
):
    disable_retry_waits(monkeypatch)
    fake_arkindex.s3_part_failure = failure

    with pytest.raises(exception):
        worker.publish_model_version(model_dir, fake_arkindex.model_id)

    (version,) = fake_arkindex.created_model_versions()
    (upload,) = fake_arkindex.uploads_for(version.id)
    assert upload.state == "aborted"
    assert len(upload.part_requests) == part_requests
    # Only a corrupted part gets as far as CompleteMultipartUpload (refused by the fake)
    assert fake_arkindex.operation_ids()[-2:] == (
        ["CompleteMultipartUpload", "AbortMultipartUpload"]
        if failure == "wrong_etag"
        else ["CreateMultipartUploadPart", "AbortMultipartUpload"]
    )
    assert version.state == "created"
    assert fake_arkindex.s3.pending_multipart_uploads() == []
    assert not fake_arkindex.s3.exists(version.s3_key)
    assert len(fake_arkindex.s3_failed_puts) == part_requests


def test_upload_artifact(fake_arkindex, worker):
    path = fake_arkindex.work_dir / "metrics.json"
    path.write_text(json.dumps({"mAP50": 0.5}))

    worker.upload_artifact(path)

    (request,) = fake_arkindex.requests_for("CreateArtifact")
    assert request.path == f"/api/v1/task/{fake_arkindex.task_id}/artifacts/"
    assert request.body == {"path": "metrics.json", "content_type": "application/json", "size": 14}
    assert fake_arkindex.artifact_bytes("metrics.json") == path.read_bytes()


# A whole worker run, as a separate process started with the task's environment

WORKER_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from arkindex_worker.worker import DatasetWorker
    from arkindex_worker.worker.training import TrainingMixin


    class Worker(DatasetWorker, TrainingMixin):
        def process_set(self, dataset_set):
            export = Path(dataset_set.dataset.downloaded_export)
            print("SET", dataset_set.name, export.read_bytes().decode(), flush=True)

        def run(self):
            super().run()
            model = self.work_dir / "model"
            model.mkdir()
            (model / "model.pt").write_bytes(b"weights")
            self.publish_model_version(
                model, self.config["model"], configuration={"thumbnail_size": 640}
            )
            print("PUBLISHED", self.model_version["id"], flush=True)


    Worker().run()
    """
)


def test_worker_run_in_subprocess(fake_arkindex, tmp_path):
    fake_arkindex.set_export_data(fake_arkindex.dataset["id"], b"export content")
    fake_arkindex.configuration = {"model": fake_arkindex.model_id}
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)

    result = subprocess.run(
        [sys.executable, str(script)],
        env=fake_arkindex.subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    (version,) = fake_arkindex.created_model_versions()
    assert lines == [
        "SET train export content",
        "SET val export content",
        "SET test export content",
        f"PUBLISHED {version.id}",
    ]
    assert fake_arkindex.operation_ids() == [
        "RetrieveWorkerRun",
        "RetrieveWorkerRunConfiguration",
        "ListProcessSets",
        "StartExport",
        "ListExports",
        "DownloadExport",
        *PUBLISH_SEQUENCE,
    ]
    assert version.body["configuration"] == {"thumbnail_size": 640}
    assert (
        hashlib.md5(fake_arkindex.uploaded_archive_bytes(version.id)).hexdigest()
        == (version.body["archive_hash"])
    )
    assert {r.status for r in fake_arkindex.requests} <= {200, 201, 302}
