"""`--resume`: an interrupted local run continues where it stopped; anything else is refused
with the reason."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import signal
import sqlite3
import subprocess
import time
from contextlib import closing

import yaml

from tests.helpers import SAMPLE, console_script, run_local


def sample_config(tmp_path, **overrides):
    config = yaml.safe_load((SAMPLE / "config.yml").read_text())
    config.update(overrides)
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def local_args(config, output, *extra):
    return [
        "--dev", "--database", SAMPLE / "export.sqlite", "--config", config,
        "--images", SAMPLE / "images", "--output", output, *extra,
    ]  # fmt: skip


def test_an_interrupted_training_continues_from_its_last_epoch(tmp_path):
    config = sample_config(tmp_path, num_epochs=3, image_size=128)
    output = tmp_path / "out"
    process = subprocess.Popen(
        [console_script(), *map(str, local_args(config, output))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    last = output / "training" / "weights" / "last.pt"
    deadline = time.monotonic() + 300
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert not (output / "metrics.json").exists()

    resumed = run_local(
        SAMPLE / "export.sqlite", config, output, "--images", SAMPLE / "images", "--resume",
        extract_only=False,
    )  # fmt: skip
    assert "dataset reused, training continued from" in resumed.stderr
    assert "Extraction SQL statements" not in resumed.stderr
    with (output / "training" / "results.csv").open() as results:
        epochs = [int(float(row["epoch"])) for row in csv.DictReader(results)]
    assert epochs == [1, 2, 3]
    assert set(json.loads((output / "metrics.json").read_text())) == {
        "train",
        "val",
        "test",
        "pages",
    }


def run_resume(config, output, *extra):
    return run_local(
        SAMPLE / "export.sqlite", config, output, "--images", SAMPLE / "images", "--resume",
        *extra, check=False,
    )  # fmt: skip


def test_nothing_to_resume(tmp_path):
    process = run_resume(sample_config(tmp_path), tmp_path / "out")
    assert process.returncode == 2
    assert "nothing to resume" in process.stderr and "Traceback" not in process.stderr


def test_changed_configuration_or_a_complete_run_are_not_resumed(tmp_path):
    output = tmp_path / "out"
    run_local(
        SAMPLE / "export.sqlite", sample_config(tmp_path), output, "--images", SAMPLE / "images"
    )
    changed = run_resume(sample_config(tmp_path, image_size=192), output)
    assert changed.returncode == 2
    assert "the configuration changed" in changed.stderr

    (output / "results.tar.zst").write_bytes(b"")  # what a run writes last
    complete = run_resume(sample_config(tmp_path), output)
    assert complete.returncode == 2 and "is complete, nothing to resume" in complete.stderr


def test_an_unfinished_dataset_is_extracted_again(tmp_path):
    output = tmp_path / "out"
    config = sample_config(tmp_path)
    run_local(SAMPLE / "export.sqlite", config, output, "--images", SAMPLE / "images")
    (output / "dataset" / "summary.json").unlink()
    process = run_resume(config, output, "--extract-only")
    assert process.returncode == 0, process.stderr[-3000:]
    assert "dataset extracted again" in process.stderr
    assert (output / "dataset" / "summary.json").is_file()


def test_run_json_holds_the_export_digest_and_a_changed_export_is_not_resumed(tmp_path):
    export = tmp_path / "export.sqlite"
    shutil.copyfile(SAMPLE / "export.sqlite", export)
    output, config = tmp_path / "out", sample_config(tmp_path)
    run_local(export, config, output, "--images", SAMPLE / "images")
    recorded = json.loads((output / "run.json").read_text())["exports"]
    assert list(recorded.values()) == [hashlib.sha256(export.read_bytes()).hexdigest()]

    with closing(sqlite3.connect(export)) as connection, connection:
        connection.execute("UPDATE element SET name = name || ' (renamed)'")
    changed = run_local(
        export, config, output, "--images", SAMPLE / "images", "--resume", check=False
    )
    assert changed.returncode == 2
    assert "the exports changed" in changed.stderr, changed.stderr[-2000:]
