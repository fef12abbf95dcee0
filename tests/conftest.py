import os

import pytest

from tests.arkindex_fake import fake_arkindex_fixture  # noqa: F401
from tests.helpers import IIIFExport


@pytest.fixture(autouse=True, scope="session")
def offline_environment(tmp_path_factory):
    """Keep base-worker's work dir and Ultralytics' settings out of the user's home."""
    home = tmp_path_factory.mktemp("home")
    os.environ["XDG_DATA_HOME"] = str(home / "data")
    os.environ["XDG_CACHE_HOME"] = str(home / "cache")
    os.environ["YOLO_CONFIG_DIR"] = str(home / "ultralytics")
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ.pop("ARKINDEX_WORKER_RUN_ID", None)
    yield home


@pytest.fixture
def make_export(tmp_path):
    """IIIFExport factory; its servers are stopped after the test."""
    servers = []

    def make(pages: int = 40, **options) -> IIIFExport:
        export = IIIFExport(tmp_path / f"export{len(servers)}", pages, **options)
        servers.append(export.server)
        return export

    yield make
    for server in servers:
        server.stop()
