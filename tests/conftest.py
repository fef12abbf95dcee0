import os
import sys
from pathlib import Path

import pytest

from tests.arkindex_fake import fake_arkindex_fixture  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "worker_yolo_training" / "sample"


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
def cli_env(tmp_path):
    """Environment for running the console script in a subprocess."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def console_script() -> str:
    return str(Path(sys.executable).parent / "worker-yolo-training")
