"""Shared helpers of the test suite (test modules import from here, never from each other)."""

from __future__ import annotations

import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from PIL import Image, ImageDraw

from tests.exports import ExportBuilder, rectangle
from tests.iiif_server import IIIFServer

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "worker_yolo_training" / "sample"


def console_script() -> str:
    return str(Path(sys.executable).parent / "worker-yolo-training")


def run_cli(*args, env=None, check=True) -> subprocess.CompletedProcess:
    process = subprocess.run(
        [console_script(), *map(str, args)], capture_output=True, text=True, env=env, timeout=600
    )
    if check and process.returncode != 0:
        raise AssertionError(f"exit {process.returncode}\n{process.stdout}\n{process.stderr}")
    return process


def run_local(
    database: Path,
    config: Path,
    output: Path,
    *args,
    extract_only: bool = True,
    check: bool = True,
    env: dict | None = None,
) -> subprocess.CompletedProcess:
    """The console script in local mode (extraction only unless asked)."""
    mode = ["--extract-only"] if extract_only else []
    return run_cli(
        "--dev", "--database", database, "--config", config, "--output", output, *mode, *args,
        check=check, env=env,
    )  # fmt: skip


def write_config(path: Path, **values) -> Path:
    path.write_text(yaml.safe_dump({"class_names": ["text_line", "illustration"], **values}))
    return path


def polygon_points(line: str) -> set[tuple[str, str]]:
    values = line.split()[1:]
    return set(zip(values[0::2], values[1::2], strict=False))


class IIIFExport:
    """An export of N pages whose images a loopback IIIF server serves."""

    def __init__(self, root: Path, pages: int, version: int = 2, **faults):
        self.root = root
        self.images = root / "served"
        self.images.mkdir(parents=True)
        self.server = IIIFServer(images_dir=self.images, version=version, **faults).start()
        builder = ExportBuilder(
            root / "export.sqlite", iiif_base=self.server.base_url, iiif_version=version
        )
        dataset = builder.dataset()
        rng = random.Random(3)
        self.pages: dict[str, str] = {}  # element id → image id
        for index in range(pages):
            width, height = 600, 800
            image = builder.image(width, height)
            picture = Image.new("RGB", (width, height), (rng.randint(150, 255),) * 3)
            ImageDraw.Draw(picture).rectangle([100, 100, 300, 140], fill="black")
            picture.save(self.images / f"{image.id}.jpg")
            page = builder.element("page", rectangle(50, 40, 500, 700), image)
            builder.element("text_line", rectangle(100, 100, 200, 40), image, parents=(page,))
            set_name = "train" if index % 4 else ("dev" if index % 8 == 0 else "test")
            builder.add_to_set(dataset, set_name, page)
            self.pages[page] = image.id
        builder.close()
        self.database = builder.path
        self.dataset = dataset
        self.config = root / "config.yml"
        self.config.write_text(
            yaml.safe_dump(
                {"class_names": ["text_line"], "image_size": 320, "advanced.max_failed_images": 0.5}
            )
        )

    def run(self, output: Path, *args, check=True):
        return run_local(
            self.database,
            self.config,
            output,
            "--cache-dir",
            self.root / "cache",
            *args,
            check=check,
        )

    def image_ids(self, count: int, seed: int = 0) -> list[str]:
        return random.Random(seed).sample(sorted(self.pages.values()), count)


def summary(output: Path) -> dict:
    return json.loads((output / "dataset" / "summary.json").read_text())


def all_failures(output: Path) -> dict[str, dict]:
    return {
        failure["element"]: failure
        for report in summary(output)["splits"].values()
        for failure in report["failed_images"]
    }


def written_elements(output: Path) -> set[str]:
    return {path.stem for path in (output / "dataset" / "images").glob("*/*.jpg")}


def assert_complete_except(export: IIIFExport, output: Path, failed_images: set[str]):
    expected = {element for element, image in export.pages.items() if image not in failed_images}
    assert written_elements(output) == expected
    labels = {path.stem for path in (output / "dataset" / "labels").glob("*/*.txt")}
    assert labels == expected
    for split in ("train", "val", "test"):
        for image in (output / "dataset" / "images" / split).glob("*.jpg"):
            with Image.open(image) as opened:
                opened.load()
                assert max(opened.size) == 320  # 500×700 crop fitted in 320


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rewrite_image_urls(database: Path, old: str, new: str) -> None:
    """Replace `old` by `new` in every image URL of an export."""
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE image SET url = replace(url, ?, ?)", (old, new))


def call_within(seconds: float, function, *args):
    """Call `function(*args)` in a thread; return (result or exception, seconds taken), or fail
    the test when it has not returned after `seconds` (a hang, not waited for)."""
    outcome = []

    def target():
        try:
            outcome.append(function(*args))
        except Exception as error:
            outcome.append(error)

    started = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"{function.__name__} still running after {seconds} s"
    return outcome[0], time.monotonic() - started


def box_points(x: float, y: float, width: float, height: float) -> tuple[tuple[float, float], ...]:
    """An axis-aligned rectangle as a polygon (4 points, not closed)."""
    return ((x, y), (x + width, y), (x + width, y + height), (x, y + height))


def element_truth(
    element_id: str, objects, image: Path = Path("unused.jpg"), width=1000, height=1000
):
    """A page-level evaluation element (see worker_yolo_training.core.ElementTruth)."""
    from worker_yolo_training.core import ElementTruth

    return ElementTruth(element_id, image, width, height, tuple(objects))


# teklia-yolo-worker 1.4.3 (Teklia's inference and training workers) cannot share this venv: its
# own venv, made by benchmarks/segmenter_agreement.py or classifier_agreement.py
TEKLIA_WORKER_VENV = Path(os.environ.get("TEKLIA_YOLO_WORKER_VENV", "/tmp/segvenv"))
TEKLIA_WORKER_PYTHON = TEKLIA_WORKER_VENV / "bin" / "python"


def teklia_worker_available() -> bool:
    """Whether teklia-yolo-worker's venv is there, with its classifier importable."""
    check = [str(TEKLIA_WORKER_PYTHON), "-c", "import worker_yolo.classifier"]
    return (
        TEKLIA_WORKER_PYTHON.exists() and subprocess.run(check, capture_output=True).returncode == 0
    )
