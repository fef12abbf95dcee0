"""A production training task for tests and `make production-demo`: the fake Arkindex (API + S3,
tests/arkindex_fake), a loopback IIIF server serving the sample's images, and the console script run
as a Ponos agent runs it."""

from __future__ import annotations

import io
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

import yaml
import zstandard

from tests.arkindex_fake import FakeArkindex, run_fake_arkindex
from tests.helpers import SAMPLE, console_script
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
