"""The console script in local mode: extraction, errors before downloads, and the sample end to end."""

import hashlib
import json
import os
import platform
import subprocess
import sys
import tarfile

import pytest
import yaml
import zstandard
from PIL import Image

from tests.exports import ExportBuilder, rectangle
from tests.helpers import SAMPLE, polygon_points, run_local, write_config
from worker_yolo_training.cli import ExportDigests


@pytest.fixture
def small_export(tmp_path):
    """Two pages with offsets, sets train/dev/test plus an extra set, images in a folder."""
    images = tmp_path / "images"
    images.mkdir()
    builder = ExportBuilder(tmp_path / "export.sqlite")
    dataset = builder.dataset(sets=("train", "dev", "test", "extra"))
    pages = {}
    for set_name in ("train", "dev", "test", "extra"):
        image = builder.image(400, 300)
        Image.new("RGB", (400, 300), "white").save(images / f"{image.id}.jpg")
        page = builder.element("page", rectangle(100, 50, 200, 100), image)
        builder.element("text_line", rectangle(120, 60, 100, 50), image, parents=(page,))
        builder.element("illustration", rectangle(250, 120, 100, 100), image, parents=(page,))
        builder.element("word", rectangle(120, 60, 10, 10), image, parents=(page,))
        builder.add_to_set(dataset, set_name, page)
        pages[set_name] = page
    builder.close()
    return builder.path, images, pages


def test_extract_only_writes_the_dataset_and_does_not_train(tmp_path, small_export):
    database, images, pages = small_export
    config = write_config(tmp_path / "config.yml")
    output = tmp_path / "out"
    ultralytics_dir = tmp_path / "ultralytics"
    process = run_local(
        database,
        config,
        output,
        "--images",
        images,
        env=dict(os.environ, YOLO_CONFIG_DIR=str(ultralytics_dir)),
    )
    dataset = output / "dataset"
    # crop (100, 50) 200×100: the line is x 20..120, y 10..60 → 0.1..0.6, 0.1..0.6;
    # the illustration is clipped to x 150..200, y 70..100 → 0.75..1.0, 0.7..1.0
    expected = {
        "0": {
            ("0.100000", "0.100000"),
            ("0.600000", "0.100000"),
            ("0.600000", "0.600000"),
            ("0.100000", "0.600000"),
        },
        "1": {
            ("0.750000", "0.700000"),
            ("1.000000", "0.700000"),
            ("1.000000", "1.000000"),
            ("0.750000", "1.000000"),
        },
    }
    for split, set_name in (("train", "train"), ("val", "dev"), ("test", "test")):
        lines = (dataset / "labels" / split / f"{pages[set_name]}.txt").read_text().splitlines()
        assert {line.split()[0]: polygon_points(line) for line in lines} == expected
        assert len(lines) == 2
        with Image.open(dataset / "images" / split / f"{pages[set_name]}.jpg") as image:
            assert image.size == (200, 100)
    data = yaml.safe_load((dataset / "data.yaml").read_text())
    assert data["path"] == str(dataset.resolve())
    assert (data["train"], data["val"], data["test"]) == (
        "images/train",
        "images/val",
        "images/test",
    )
    assert data["names"] == {0: "text_line", 1: "illustration"}
    summary = json.loads((dataset / "summary.json").read_text())
    assert summary["splits"]["train"]["objects"] == {"text_line": 1, "illustration": 1}
    assert summary["splits"]["train"]["skipped"] == {"type not requested": 1}
    assert "'extra' is not a training set" in process.stderr
    # a folder's scans are decoded here: one per CPU at once, not a download's 32
    cpus = len(os.sched_getaffinity(0))
    assert f"Images from the folder {images}, {cpus} at once" in process.stderr
    assert not (output / "training").exists() and not (output / "model").exists()
    # Ultralytics' environment is prepared, but its plots' fonts only for a run that trains
    assert (ultralytics_dir / "weights").is_dir()
    assert not (ultralytics_dir / "Ultralytics").exists()
    assert "font" not in process.stderr


def test_unknown_class_names_fail_before_any_image(tmp_path, small_export):
    database, _images, _ = small_export
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({"class_names": ["text_lines"]}))
    process = run_local(
        database,
        config,
        tmp_path / "out",
        extract_only=False,
        check=False,
    )
    assert process.returncode == 2
    assert "text_lines" in process.stderr and "text_line (4)" in process.stderr
    assert not (tmp_path / "out" / "dataset").exists()


def test_missing_pretrained_weights_stop_before_any_image(tmp_path, small_export):
    database, images, _ = small_export
    config = write_config(tmp_path / "c.yml", ultralytics_model_size="v8s")
    output = tmp_path / "out"
    process = run_local(
        database, config, output, "--images", images, extract_only=False, check=False
    )
    assert process.returncode == 2
    assert "yolov8s-seg.pt" in process.stderr and "advanced.pretrained: false" in process.stderr
    assert not (tmp_path / "out" / "dataset").exists()


def test_sample_end_to_end(tmp_path):
    """The whole job on the bundled sample, for one epoch: every output is there and usable."""
    sample_config = yaml.safe_load((SAMPLE / "config.yml").read_text())
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({**sample_config, "num_epochs": 1}))
    output = tmp_path / "out"
    # A previous run's outputs in the same folder must not end in this run's archive
    for stale in ("run.json", "training/stale.csv", "eval_test/stale.png", "eval_other/mine.png"):
        (output / stale).parent.mkdir(parents=True, exist_ok=True)
        (output / stale).write_text("old run")
    run_local(
        SAMPLE / "export.sqlite",
        config,
        output,
        "--images",
        SAMPLE / "images",
        extract_only=False,
    )
    from ultralytics import YOLO

    model = YOLO(str(output / "model" / "model.pt"))
    assert list(model.names.values()) == ["text_line", "illustration"]
    assert model.task == "segment"
    image = next((output / "dataset" / "images" / "test").glob("*.jpg"))
    size = sample_config["image_size"]
    assert len(model.predict(str(image), imgsz=size, device="cpu", verbose=False)) == 1

    with tarfile.open(fileobj=zstandard.open(output / "results.tar.zst", "rb"), mode="r|") as tar:
        names = tar.getnames()
    roots = {name.split("/")[0] for name in names}
    assert {
        "training",
        "eval_train",
        "eval_val",
        "eval_test",
        "metrics.json",
        "summary.json",
    } <= roots
    assert not any(name.endswith(".pt") for name in names)
    assert "training/results.csv" in names
    assert not any("stale" in name or "eval_other" in name for name in names)
    assert not list(output.rglob("stale*"))
    # Not a name the worker writes: the user's, kept
    assert (output / "eval_other" / "mine.png").read_text() == "old run"

    metrics = json.loads((output / "metrics.json").read_text())
    assert set(metrics) == {"train", "val", "test", "pages"}
    pages = metrics.pop("pages")
    assert set(pages) == {"train", "val", "test"}
    keys = {"instances", "predictions", "matches", "precision", "recall", "f1", "mean_iou"}
    for split, figures in pages.items():
        assert set(figures) == {
            "confidence_threshold",
            "iou_threshold",
            "all",
            "classes",
            "elements",
        }
        assert set(figures["all"]) == keys and set(figures["classes"]) == {
            "text_line",
            "illustration",
        }
        assert figures["all"]["instances"] == sum(
            metrics[split]["classes"][c]["instances"] for c in figures["classes"]
        )
        assert {e["element"] for e in figures["elements"]} == {
            image.stem for image in (output / "dataset" / "images" / split).glob("*.jpg")
        }
        assert any(
            name.startswith(f"eval_{split}/pages/") and name.endswith(".jpg") for name in names
        )
        assert f"eval_{split}/pages/predictions.jsonl" in names
    evaluation = (output / "evaluation.md").read_text()
    assert evaluation.index("| Predictions | Matches |") < evaluation.index("| Box precision |")
    # The report holds what Ultralytics' own validator computes
    own = model.val(
        data=str(output / "dataset" / "data.yaml"), split="val", imgsz=size, batch=4,
        device="cpu", plots=False, verbose=False, project=str(tmp_path), name="check",
    )  # fmt: skip
    assert metrics["val"]["all"]["box"]["mAP50-95"] == round(float(own.box.map), 5)
    assert metrics["val"]["all"]["mask"]["mAP50"] == round(float(own.seg.map50), 5)
    # Against the extraction's own counts (the sample's dev set: 5 pages, 33 lines, 6 pictures)
    extracted = json.loads((output / "dataset" / "summary.json").read_text())["splits"]["val"]
    lines, pictures = extracted["objects"]["text_line"], extracted["objects"]["illustration"]
    assert (lines, pictures) == (33, 6)
    assert metrics["val"]["all"]["instances"] == int(own.nt_per_class.sum()) == lines + pictures
    assert metrics["val"]["classes"]["illustration"]["instances"] == int(own.nt_per_class[1])
    images_with = metrics["val"]["classes"]["illustration"]["images"]
    assert (
        f"| val | illustration | {images_with} | {pictures} |"
        in (output / "evaluation.md").read_text()
    )
    for split in metrics.values():
        assert set(split["all"]) >= {"images", "instances", "box", "mask"}
        assert set(split["classes"]) == {"text_line", "illustration"}


def test_a_train_and_a_val_split_are_needed_before_any_download(tmp_path):
    builder = ExportBuilder(tmp_path / "export.sqlite")
    dataset = builder.dataset(sets=("train", "dev", "test"))
    image = builder.image(100, 100)
    page = builder.element("page", rectangle(0, 0, 100, 100), image)
    builder.element("text_line", rectangle(1, 1, 10, 10), image, parents=(page,))
    builder.add_to_set(dataset, "train", page)
    builder.add_to_set(dataset, "test", page)
    builder.close()
    process = run_local(
        builder.path,
        write_config(tmp_path / "c.yml", class_names=["text_line"]),
        tmp_path / "out",
        check=False,
    )
    assert process.returncode == 2
    assert "No element in a dev or val set" in process.stderr
    assert not (tmp_path / "out").exists()


def test_no_object_to_learn_stops_before_training(tmp_path, small_export):
    database, images, _ = small_export
    unknown_run = "0a0b0c0d-0000-4000-8000-0000000000ff"
    config = write_config(tmp_path / "c.yml", advanced={"worker_runs": [unknown_run]})
    process = run_local(database, config, tmp_path / "out", "--images", images, check=False)
    assert process.returncode == 2
    assert "No object of text_line, illustration in the train split" in process.stderr
    assert "advanced.worker_runs" in process.stderr and "worker run not selected" in process.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--images", "missing-folder"], "--images: missing-folder is not a folder"),
        (["--concurrency", "0"], "--concurrency must be at least 1, got 0"),
        (["--image-timeout", "0"], "--image-timeout must be positive"),
    ],
)
def test_bad_arguments_are_reported_cleanly(tmp_path, small_export, arguments, message):
    database, _, _ = small_export
    process = run_local(
        database,
        write_config(tmp_path / "c.yml"),
        tmp_path / "out",
        *arguments,
        extract_only=False,
        check=False,
    )
    assert process.returncode == 2
    assert message in process.stderr and "Traceback" not in process.stderr


def test_missing_export_is_reported_cleanly(tmp_path):
    process = run_local(
        tmp_path / "nope.sqlite",
        write_config(tmp_path / "c.yml"),
        tmp_path / "out",
        extract_only=False,
        check=False,
    )
    assert process.returncode == 2
    assert "--database: no export at" in process.stderr and "Traceback" not in process.stderr


def test_set_arguments_choose_the_sets_of_one_dataset(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    builder = ExportBuilder(tmp_path / "export.sqlite")
    chosen, other = builder.dataset("chosen"), builder.dataset("other")
    pages = {}
    for dataset, set_name in (
        (chosen, "train"),
        (chosen, "dev"),
        (chosen, "test"),
        (other, "train"),
    ):
        image = builder.image(100, 100)
        Image.new("RGB", (100, 100), "white").save(images / f"{image.id}.jpg")
        page = builder.element("page", rectangle(0, 0, 100, 100), image)
        builder.element("text_line", rectangle(10, 10, 50, 20), image, parents=(page,))
        builder.add_to_set(dataset, set_name, page)
        pages[dataset, set_name] = page
    builder.close()
    output = tmp_path / "out"
    run_local(
        builder.path,
        write_config(tmp_path / "c.yml", class_names=["text_line"]),
        output,
        "--images",
        images,
        "--set",
        f"{chosen}:train",
        f"{chosen}:dev",
    )
    written = {
        path.parent.name: path.stem for path in (output / "dataset" / "images").glob("*/*.jpg")
    }
    assert written == {"train": pages[chosen, "train"], "val": pages[chosen, "dev"]}
    process = run_local(
        builder.path,
        write_config(tmp_path / "c.yml", class_names=["text_line"]),
        output,
        "--set",
        f"{chosen}:validation",
        check=False,
    )
    assert process.returncode == 2
    assert f"Set {chosen}:validation is not in the export" in process.stderr
    assert f"{other}:train" in process.stderr


def test_the_program_imports_its_modules_without_collecting_then_freezes_them():
    # Collecting while numpy, the Arkindex client and shapely are imported cost up to a sixth of
    # the imports' time; frozen, they are never traversed again. The collector is on for the run.
    probe = (
        "import gc, sys\n"
        "sys.argv = ['worker-yolo-training', '--help']\n"
        "from worker_yolo_training.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    counts = gc.get_freeze_count(), gc.isenabled(), gc.get_stats()[2]['collections']\n"
        "    print('collector', *counts)\n"
    )
    process = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    (line,) = (line for line in process.stdout.splitlines() if line.startswith("collector"))
    frozen, enabled, full_collections = line.split()[1:]
    assert int(frozen) > 50_000 and enabled == "True" and full_collections == "0"


HASHING = """
import hashlib, sys
started = []
file_digest = hashlib.file_digest
def recorded(file, digest):
    started.append("numpy" in sys.modules)
    return file_digest(file, digest)
hashlib.file_digest = recorded
sys.argv = ["worker-yolo-training", "--database", sys.argv[1], "--help"]
from worker_yolo_training.cli import main
try:
    main()
except SystemExit:
    print("numpy imported when hashing began:", *started)
"""


def test_the_database_is_hashed_while_the_program_is_imported(tmp_path):
    # The digest --resume compares takes a second per 450 MB: begun before the imports, on a CPU
    # they leave idle, it no longer delays the extraction
    export = tmp_path / "export.sqlite"
    export.write_bytes(b"SQLite format 3\x00" + bytes(1 << 20))
    process = subprocess.run(
        [sys.executable, "-c", HASHING, str(export)], capture_output=True, text=True, check=True
    )
    assert "numpy imported when hashing began: False" in process.stdout


def test_export_digests_are_sha256_of_those_begun_at_once_or_of_others_when_asked(tmp_path):
    first, second = tmp_path / "first.sqlite", tmp_path / "second.sqlite"
    first.write_bytes(b"first" * 1000)
    second.write_bytes(b"second")
    digests = ExportDigests([first])
    assert digests(first) == hashlib.sha256(first.read_bytes()).hexdigest()
    assert digests(second) == hashlib.sha256(b"second").hexdigest()
    with pytest.raises(FileNotFoundError):
        digests(tmp_path / "missing.sqlite")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_named_pipe_given_as_database_is_not_opened_at_start(tmp_path):
    # Opening it would wait for a writer: the worker then reports it as not a file
    fifo = tmp_path / "export.sqlite"
    os.mkfifo(fifo)
    digests = ExportDigests([fifo])
    assert digests.threads == {}


# A probe's start: with "program", the program makes its process-wide settings (and imports
# itself), as when it runs; with "python", nothing is set
PROGRAM = """
import sys
if sys.argv[1] == "program":
    sys.argv = ["worker-yolo-training", "--help"]
    from worker_yolo_training.cli import main
    try:
        main()
    except SystemExit:
        pass
"""
THREADS = (
    PROGRAM
    + """
import os, numpy
print("threads", len(os.listdir("/proc/self/task")))
"""
)


def threads(setting: str, **environ: str) -> int:
    # OpenBLAS also reads OMP_NUM_THREADS, which importing Ultralytics sets in this process
    chosen = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "GOTO_NUM_THREADS")
    env = {key: value for key, value in os.environ.items() if key not in chosen}
    process = subprocess.run(
        [sys.executable, "-c", THREADS, setting],
        capture_output=True, text=True, check=True, env={**env, **environ},
    )  # fmt: skip
    (line,) = (line for line in process.stdout.splitlines() if line.startswith("threads"))
    return int(line.split()[1])


@pytest.mark.skipif(
    not os.path.isdir("/proc/self/task") or len(os.sched_getaffinity(0)) < 2,
    reason="threads counted in /proc, where OpenBLAS starts one per CPU",
)
def test_numpy_starts_no_blas_threads_unless_the_user_asks_for_them():
    # Each OpenBLAS thread spins for a while once numpy is imported: 0.13 CPU-s a process
    assert threads("python") > 1
    assert threads("program") == 1
    assert threads("program", OPENBLAS_NUM_THREADS="2") == 2


BUFFERS = (
    PROGRAM
    + """
import resource, threading
def images():  # an image thread: a decoded scan, its crop, its resized image, then the next
    for _ in range(20):
        buffers = [bytearray(size << 20) for size in (7, 9, 5)]
        del buffers
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
thread = threading.Thread(target=images)
thread.start()
thread.join()
print("faults", resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
)


def faults(setting: str) -> int:
    process = subprocess.run(
        [sys.executable, "-c", BUFFERS, setting], capture_output=True, text=True, check=True
    )
    (line,) = (line for line in process.stdout.splitlines() if line.startswith("faults"))
    return int(line.split()[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_large_buffers_reuse_freed_memory_instead_of_faulting_it_in_again():
    # From a local folder, 1000 pages took a million page faults (3 s of system time) when
    # glibc gave each freed scan's memory back to the system
    buffer_pages = 21 * 2**20 // 4096
    assert faults("program") < 2 * buffer_pages < 5 * buffer_pages < faults("python")


def test_an_error_of_the_hashing_thread_is_raised_where_the_digest_is_asked_for(
    tmp_path, monkeypatch
):
    # The thread never holds the exit (an input error does not wait for the hash), and what it
    # met is raised in the thread that needs the digest
    export = tmp_path / "export.sqlite"
    export.write_bytes(b"export")
    monkeypatch.setattr(hashlib, "file_digest", lambda file, name: int("not a number"))
    digests = ExportDigests([export])
    assert all(thread.daemon for thread in digests.threads.values()) and digests.threads
    with pytest.raises(ValueError, match="not a number"):
        digests(export)
