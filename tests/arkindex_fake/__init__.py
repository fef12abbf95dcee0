"""Test infrastructure: a faithful fake of Arkindex (API + S3) over real HTTP on 127.0.0.1.

Usage in ``tests/conftest.py``::

    from tests.arkindex_fake import fake_arkindex_fixture  # noqa: F401

then request the ``fake_arkindex`` fixture in a test. Outside pytest fixtures, use
:func:`run_fake_arkindex` as a context manager.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .s3 import FakeS3
from .server import (
    S3_FAILURES,
    SCHEMA_PATH,
    ApiError,
    Export,
    FakeArkindex,
    ModelVersion,
    MultipartUploadRecord,
    RecordedRequest,
    error_content,
    md5_base64,
)


@contextmanager
def run_fake_arkindex(
    data_dir: Path, *, page_size: int = 20, default_dataset: bool = True
) -> Iterator[FakeArkindex]:
    """Start moto S3 and the fake API on 127.0.0.1 (free ports), stop both on exit.

    :param data_dir: ``PONOS_DATA`` of the task; ``data_dir / "current"`` is created.
    :param page_size: page size of paginated operations.
    :param default_dataset: start with one dataset (sets train/val/test, all selected).
    """
    data_dir = Path(data_dir)
    (data_dir / "current").mkdir(parents=True, exist_ok=True)
    s3 = FakeS3()
    s3.start()
    try:
        fake = FakeArkindex(s3, data_dir, page_size=page_size, default_dataset=default_dataset)
        fake.start()
        try:
            yield fake
        finally:
            fake.stop()
    finally:
        s3.stop()


@pytest.fixture(name="fake_arkindex")
def fake_arkindex_fixture(tmp_path: Path) -> Iterator[FakeArkindex]:
    """A started :class:`FakeArkindex` (``PONOS_DATA`` = ``tmp_path / "ponos"``).

    Fails the test at teardown if an answer of the fake did not match the schema
    (a bug in the fake or a scenario set up with invalid data)."""
    with run_fake_arkindex(tmp_path / "ponos") as fake:
        yield fake
        assert not fake.schema_violations, fake.schema_violations


def disable_retry_waits(monkeypatch) -> None:
    """Make the tenacity retries of arkindex-client, base-worker and teklia-toolbox
    retry at once instead of sleeping (in this process only):
    ``ArkindexClient.request`` (5xx: 3, 4, 8, 16 s), ``MultipartUpload`` methods
    (5xx/connection errors: 2, 4, 8 s), ``CorpusMixin.check_export_status`` (60 s) and
    ``teklia_toolbox.requests.download_file`` (10 s)."""
    from arkindex import ArkindexClient
    from arkindex.multipart import MultipartUpload
    from arkindex_worker.worker.corpus import CorpusMixin
    from teklia_toolbox import requests as toolbox_requests

    def no_sleep(seconds):
        return None

    for function in (
        ArkindexClient.request,
        MultipartUpload.__init__,
        MultipartUpload.upload_part,
        MultipartUpload.complete,
        MultipartUpload.abort,
        CorpusMixin.check_export_status,
        toolbox_requests.download_file,
    ):
        monkeypatch.setattr(function.retry, "sleep", no_sleep)


__all__ = [
    "S3_FAILURES",
    "SCHEMA_PATH",
    "ApiError",
    "Export",
    "FakeArkindex",
    "FakeS3",
    "ModelVersion",
    "MultipartUploadRecord",
    "RecordedRequest",
    "disable_retry_waits",
    "error_content",
    "fake_arkindex_fixture",
    "md5_base64",
    "run_fake_arkindex",
]
