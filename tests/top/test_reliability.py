"""Local mode meets folders that are not what they seem, two runs at once and the user's own files:
each case ends in a clear message (exit 2) or a complete run, and nothing outside the folders the
user named is read or written."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import time

import pytest
import zstandard
from PIL import Image

from tests.exports import ExportBuilder, rectangle
from tests.helpers import ROOT, console_script, run_cli, run_local, summary, write_config
from tests.interrupting import SENT
from worker_yolo_training.extract import usable_cpus


@pytest.fixture
def pages(tmp_path):
    """A train, a dev and a test page, their images in a folder; returns (export, images,
    {set: (page id, image id)})."""
    images = tmp_path / "images"
    images.mkdir()
    builder = ExportBuilder(tmp_path / "export.sqlite")
    dataset = builder.dataset(sets=("train", "dev", "test"))
    made = {}
    for set_name in ("train", "dev", "test"):
        image = builder.image(200, 100)
        Image.new("RGB", (200, 100), "white").save(images / f"{image.id}.jpg")
        page = builder.element("page", rectangle(0, 0, 200, 100), image)
        builder.element("text_line", rectangle(20, 10, 100, 30), image, parents=(page,))
        builder.add_to_set(dataset, set_name, page)
        made[set_name] = (page, image.id)
    builder.close()
    return builder.path, images, made


def local(tmp_path, database, output, *args, check=False):
    config = tmp_path / "config.yml"
    if not config.exists():
        write_config(config, class_names=["text_line"], **{"advanced.max_failed_images": 1.0})
    return run_local(database, config, output, *args, check=check)


def clean_exit_2(process, *expected):
    assert process.returncode == 2, process.stderr[-3000:]
    assert "Traceback" not in process.stderr
    for text in expected:
        assert text in process.stderr, process.stderr[-3000:]


# ------------------------------------------------------------ 1. links out of --images


def test_a_link_out_of_the_images_folder_is_not_read(tmp_path, pages):
    database, images, made = pages
    outside = tmp_path / "elsewhere.jpg"
    Image.new("RGB", (200, 100), "black").save(outside)
    _, test_image = made["test"]
    (images / f"{test_image}.jpg").unlink()
    (images / f"{test_image}.jpg").symlink_to(outside)
    # A link that stays in the folder is read
    _, dev_image = made["dev"]
    (images / f"{dev_image}.jpg").rename(images / "dev-scan.jpg")
    (images / f"{dev_image}.jpg").symlink_to("dev-scan.jpg")
    process = local(tmp_path, database, tmp_path / "out", "--images", images, check=True)
    failures = summary(tmp_path / "out")["splits"]["test"]["failed_images"]
    assert [failure["element"] for failure in failures] == [made["test"][0]]
    assert f"is a link to {outside.resolve()}, outside {images}" in failures[0]["reason"]
    assert f"Element {made['test'][0]} dropped" in process.stderr
    assert summary(tmp_path / "out")["splits"]["val"]["images"] == 1


# ------------------------------------------------------------ 2. output inside an input


@pytest.mark.parametrize(
    "where, expected",
    [
        ("images", "is inside --images"),
        ("images/out", "is inside --images"),
        ("export folder", "is the folder of the export"),
        ("cache/out", "is inside the image cache"),
        ("contains images", "--images {images} is inside --output"),
        ("contains cache", "the image cache {cache} is inside --output"),
        ("contains export", "the export {database} is inside --output"),
    ],
)
def test_an_output_sharing_a_folder_with_an_input_is_refused_before_any_write(
    tmp_path, pages, where, expected
):
    database, images, _ = pages
    work = tmp_path / "work"
    cache = work / "cache" if where.startswith("contains") else tmp_path / "cache"
    if where == "contains export":
        (work / "in").mkdir(parents=True)
        database = database.rename(work / "in" / "export.sqlite")
    if where == "contains images":
        work.mkdir()
        images = images.rename(work / "images")
    output = {
        "images": images,
        "images/out": images / "out",
        "export folder": database.parent,
        "cache/out": cache / "out",
    }.get(where, work)
    write_config(
        tmp_path / "config.yml", class_names=["text_line"], **{"advanced.max_failed_images": 1.0}
    )
    before = sorted(tmp_path.rglob("*"))
    process = local(tmp_path, database, output, "--images", images, "--cache-dir", cache)
    clean_exit_2(
        process,
        expected.format(images=images, cache=cache, database=database),
        "choose an --output folder apart from the inputs",
    )
    assert sorted(tmp_path.rglob("*")) == before


# ------------------------------------------------------------ 3. an export that is not a file


def unix_socket(path):
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    return server


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("directory", "it is a directory"),
        ("fifo", "it is a named pipe (FIFO)"),
        ("device", "it is a character device"),
        ("socket", "it is a socket"),
    ],
)
def test_an_export_that_is_not_a_file_is_refused_at_once(tmp_path, kind, expected):
    path = tmp_path / "export.sqlite"
    server = None
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        server = unix_socket(path)
    else:
        path = "/dev/null"
    try:
        started = time.monotonic()
        process = local(tmp_path, path, tmp_path / "out")
    finally:
        if server is not None:
            server.close()
    assert time.monotonic() - started < 60
    clean_exit_2(process, f"--database: no export at {path} ({expected})")
    assert not (tmp_path / "out").exists()


def test_a_configuration_that_is_a_fifo_is_refused_without_waiting(tmp_path, pages):
    database, images, _ = pages
    fifo = tmp_path / "config.yml"
    os.mkfifo(fifo)
    process = run_local(database, fifo, tmp_path / "out", "--images", images, check=False)
    clean_exit_2(process, f"{fifo}: cannot read the configuration file (it is a named pipe")


# ------------------------------------------------------------ 4. the user's own files


def test_a_new_run_clears_only_what_an_earlier_run_wrote(tmp_path, pages):
    database, images, _ = pages
    output = tmp_path / "out"
    local(tmp_path, database, output, "--images", images, check=True)
    (output / "notes.txt").write_text("mine")
    (output / "my-data").mkdir()
    process = local(tmp_path, database, output, "--images", images, check=True)
    assert "Removing the previous run's outputs" in process.stderr
    assert "dataset" in process.stderr and "run.json" in process.stderr
    assert (output / "notes.txt").read_text() == "mine" and (output / "my-data").is_dir()


def test_a_folder_of_the_user_named_like_an_output_is_never_deleted(tmp_path, pages):
    database, images, _ = pages
    output = tmp_path / "out"
    (output / "dataset").mkdir(parents=True)
    (output / "dataset" / "my-labels.txt").write_text("mine")
    process = local(tmp_path, database, output, "--images", images)
    clean_exit_2(process, f"--output {output} holds dataset but no run.json", "nothing is deleted")
    assert (output / "dataset" / "my-labels.txt").read_text() == "mine"
    assert sorted(path.name for path in output.iterdir() if not path.name.startswith(".")) == [
        "dataset"
    ]


# ------------------------------------------------------------ 6. a damaged run.json


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda text: text[: len(text) // 2], "is damaged ("),
        (lambda text: "[1, 2]", "holds a JSON list, not the record of a run"),
        (lambda text: "{}", "lacks version, exports, configuration, sets, images"),
        (
            lambda text: json.dumps({**json.loads(text), "version": 99}),
            "is of format 99, this worker reads 1",
        ),
        (
            lambda text: json.dumps({**json.loads(text), "configuration": {"num_epochs": 1}}),
            "the configuration changed since the run",
        ),
        (lambda text: "\udcff", "is damaged"),
    ],
)
def test_a_damaged_run_json_is_not_resumed(tmp_path, pages, damage, expected):
    database, images, _ = pages
    output = tmp_path / "out"
    local(tmp_path, database, output, "--images", images, check=True)
    run_json = output / "run.json"
    run_json.write_text(damage(run_json.read_text()), errors="surrogateescape")
    process = local(tmp_path, database, output, "--images", images, "--resume")
    clean_exit_2(process, expected, "run without --resume to start again")
    # Starting again is what the message says to do, and it works
    local(tmp_path, database, output, "--images", images, check=True)


def without_download_counts(written: dict) -> dict:
    for split in written["splits"].values():
        split.pop("images_downloaded"), split.pop("images_from_cache")
    return written


def test_a_damaged_summary_makes_resume_extract_again(tmp_path, pages):
    database, images, _ = pages
    output = tmp_path / "out"
    local(tmp_path, database, output, "--images", images, check=True)
    expected = without_download_counts(summary(output))
    (output / "dataset" / "summary.json").write_text("{}")
    process = local(tmp_path, database, output, "--images", images, "--resume", check=True)
    assert "summary.json is damaged (KeyError: 'splits'): not reused" in process.stderr
    assert "dataset extracted again" in process.stderr
    assert without_download_counts(summary(output)) == expected


# ------------------------------------------------------------ 8. long and control-character ids


def test_an_image_id_too_long_for_a_file_name_skips_its_page(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    builder = ExportBuilder(tmp_path / "export.sqlite")
    dataset = builder.dataset(sets=("train", "dev"))
    long_image = builder.image(200, 100, image_id="x" * 300)
    normal = builder.image(200, 100)
    Image.new("RGB", (200, 100), "white").save(images / f"{normal.id}.jpg")
    for set_name, image in (("train", normal), ("dev", normal), ("dev", long_image)):
        page = builder.element("page", rectangle(0, 0, 200, 100), image)
        builder.element("text_line", rectangle(20, 10, 100, 30), image, parents=(page,))
        builder.add_to_set(dataset, set_name, page)
    builder.close()
    process = local(tmp_path, builder.path, tmp_path / "out", "--images", images, check=True)
    (failure,) = summary(tmp_path / "out")["splits"]["val"]["failed_images"]
    assert failure["element"] == page
    assert "is too long for a file name (305 bytes, at most 255)" in failure["reason"]
    assert summary(tmp_path / "out")["splits"]["val"]["images"] == 1
    assert "File name too long" not in process.stderr


def test_ids_with_control_characters_are_printed_escaped(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    builder = ExportBuilder(tmp_path / "export.sqlite")
    dataset = builder.dataset(sets=("train", "dev"))
    forged = "page\n2026-12-03 00:00:00,000 INFO/forged: all good\x1b[2K"
    image = builder.image(200, 100, image_id="scan\r\x00")
    good = builder.image(200, 100)
    Image.new("RGB", (200, 100), "white").save(images / f"{good.id}.jpg")
    for set_name, page_image, element_id in (
        ("train", good, None),
        ("dev", good, None),
        ("dev", image, forged),
    ):
        page = builder.element("page", rectangle(0, 0, 200, 100), page_image, element_id=element_id)
        builder.element("text_line", rectangle(20, 10, 100, 30), page_image, parents=(page,))
        builder.add_to_set(dataset, set_name, page)
    builder.close()
    process = local(tmp_path, builder.path, tmp_path / "out", "--images", images, check=True)
    assert not any(line.startswith("2026-12-03 00:00:00") for line in process.stderr.splitlines())
    assert "\x1b" not in process.stderr and "\r" not in process.stderr
    assert r"Element page\n2026-12-03 00:00:00,000 INFO/forged: all good\x1b[2K dropped" in (
        process.stderr
    )


# ------------------------------------------------------------ 5. two runs, one output folder


def start(served, output, log):
    return subprocess.Popen(
        [
            console_script(), "--dev", "--database", str(served.database),
            "--config", str(served.config), "--output", str(output), "--extract-only",
            "--cache-dir", str(served.root / "cache"), "--concurrency", "1",
        ],
        stdout=log, stderr=log,
    )  # fmt: skip


def wait_for_lock(output, process):
    lock = output / ".worker-yolo-training.lock"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if lock.is_file() and str(process.pid) in lock.read_text():
            return
        time.sleep(0.1)
    raise AssertionError(f"no lock from {process.pid} (exit {process.poll()})")


def test_a_second_run_on_a_busy_output_is_refused_and_the_first_completes(tmp_path, make_export):
    served = make_export(pages=12, latency_ms=1000)
    output = tmp_path / "out"
    with (tmp_path / "first.log").open("w") as log:
        first = start(served, output, log)
        try:
            wait_for_lock(output, first)
            started = time.monotonic()
            second = served.run(output, "--concurrency", "1", check=False)
            assert time.monotonic() - started < 30
            clean_exit_2(second, f"{output} is in use by another run (pid {first.pid} on ")
            served.server.latency_ms = 0
            first.wait(timeout=300)
        finally:
            first.kill()
    assert first.returncode == 0, (tmp_path / "first.log").read_text()[-3000:]
    assert sum(split["images"] for split in summary(output)["splits"].values()) == 12


def test_the_lock_of_a_killed_run_does_not_block_the_next(tmp_path, make_export):
    served = make_export(pages=12, latency_ms=1000)
    output = tmp_path / "out"
    with (tmp_path / "first.log").open("w") as log:
        first = start(served, output, log)
        wait_for_lock(output, first)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    served.server.latency_ms = 0
    served.run(output)
    assert sum(split["images"] for split in summary(output)["splits"].values()) == 12


# ------------------------------------------------------------ 7. interrupted at every stage


@pytest.fixture(scope="module")
def training_run(tmp_path_factory):
    """A tiny training run's inputs, and the outputs of it uninterrupted."""
    root = tmp_path_factory.mktemp("training")
    images = root / "images"
    images.mkdir()
    builder = ExportBuilder(root / "export.sqlite")
    dataset = builder.dataset(sets=("train", "dev", "test"))
    for index, set_name in enumerate(["train"] * 4 + ["dev", "test"]):
        image = builder.image(160, 120)
        picture = Image.new("RGB", (160, 120), "white")
        picture.paste("black", (10 + 5 * index, 20, 110, 40))
        picture.save(images / f"{image.id}.jpg")
        page = builder.element("page", rectangle(0, 0, 160, 120), image)
        builder.element("text_line", rectangle(10 + 5 * index, 20, 100, 20), image, parents=(page,))
        builder.add_to_set(dataset, set_name, page)
    builder.close()
    config = write_config(
        root / "config.yml",
        class_names=["text_line"],
        ultralytics_model_size="v8n",
        image_size=64,
        num_epochs=2,
        batch_size=2,
        **{"advanced.pretrained": False, "advanced.workers": 0},
    )
    arguments = ["--dev", "--database", builder.path, "--config", config, "--images", images]
    reference = root / "reference"
    run_cli(*arguments, "--output", reference)
    return [str(argument) for argument in arguments], reference


@pytest.mark.skipif(usable_cpus() < 2, reason="the extraction forks worker processes")
def test_a_worker_process_killed_during_the_extraction_ends_the_run_at_once(tmp_path, make_export):
    # multiprocessing's pool would wait for the killed process' chunk forever
    export = make_export(pages=12)
    command = [
        sys.executable, "-m", "tests.interrupting", "worker-killed", "--dev", "--database",
        export.database, "--config", export.config, "--output", tmp_path / "out",
        "--extract-only", "--no-cache",
    ]  # fmt: skip
    process = subprocess.run(
        list(map(str, command)), cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    clean_exit_2(process, "A worker process of the extraction was killed by SIGKILL", "memory")


def outputs(output):
    """What must be the same after an interruption and --resume: the metrics' splits and what
    they count, and the archive's members."""
    metrics = json.loads((output / "metrics.json").read_text())
    shape = {split: sorted(values) for split, values in metrics.items()}
    with (
        (output / "results.tar.zst").open("rb") as file,
        zstandard.ZstdDecompressor().stream_reader(file) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        names = sorted(member.name for member in tar)
    return shape, names


def interrupted(arguments, output, stage):
    """Exit status, seconds from the signal to the exit, log of a run interrupted at `stage`."""
    command = [sys.executable, "-m", "tests.interrupting", stage, *arguments, "--output", output]
    log_path = output.parent / f"{stage}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(list(map(str, command)), cwd=ROOT, stdout=log, stderr=log)
        if stage == "training":  # from outside, as soon as an epoch is saved
            last = output / "training" / "weights" / "last.pt"
            deadline = time.monotonic() + 300
            while not last.exists() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            print(f"{SENT} {time.time()}", file=log, flush=True)
            process.send_signal(signal.SIGINT)
        process.wait(timeout=300)
    text = log_path.read_text()
    sent = float(re.search(rf"{SENT} ([0-9.]+)", text).group(1))
    return process.returncode, time.time() - sent, text


@pytest.mark.parametrize("stage", ["extraction", "training", "evaluation", "archiving"])
def test_an_interrupted_run_resumes_to_the_same_outputs(tmp_path, training_run, stage):
    arguments, reference = training_run
    output = tmp_path / "out"
    status, seconds, log = interrupted(arguments, output, stage)
    assert status == 128 + signal.SIGINT, log[-3000:]
    assert seconds < 30, log[-3000:]
    assert "To continue, run the same command with --resume" in log
    assert not (output / "results.tar.zst").exists()
    resumed = run_cli(*arguments, "--output", output, "--resume")
    assert "Resuming the run" in resumed.stderr
    assert outputs(output) == outputs(reference)
    assert not list(output.glob(".*partial")) and not list(output.glob(".results-staging-*"))
