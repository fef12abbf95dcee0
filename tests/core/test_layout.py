"""A run's outputs: a previous run's are removed at start, files are never left truncated, a full
disk is reported with its folder, long or unsafe element ids make safe file names."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.exports import ExportBuilder, rectangle
from tests.helpers import run_local, write_config
from worker_yolo_training.core import (
    OutputFolderError,
    RunLayout,
    clear_previous_run,
    files,
    safe_name,
)


def previous_run(root: Path, proof: bool = True) -> RunLayout:
    """Outputs as an earlier run left them (with its run.json unless `proof` is False)."""
    layout = RunLayout(root)
    written = [layout.summary, layout.metrics, layout.model_dir / "model.pt"]
    for path in written + ([layout.fingerprint] if proof else []):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("old")
    (layout.evaluation("test") / "old.png").parent.mkdir(parents=True)
    (layout.evaluation("test") / "old.png").write_text("old")
    return layout


def test_previous_run_is_moved_aside_then_deleted(tmp_path, caplog):
    layout = previous_run(tmp_path / "out")
    (layout.root / "notes.txt").write_text("the user's own file")
    with caplog.at_level(logging.INFO):
        removal = clear_previous_run(layout)
    # Nothing of the old run is visible as soon as the function returns
    assert sorted(path.name for path in layout.root.iterdir() if not path.name.startswith(".")) == [
        "notes.txt"
    ]
    # its dataset waits aside, whole, for the new extraction to take back what it can
    removal.thread.join()
    assert (removal.dataset / "summary.json").read_text() == "old"
    assert [path.name for path in removal.dataset.parent.iterdir()] == ["dataset"]
    removal.finish()
    assert [path.name for path in layout.root.iterdir()] == ["notes.txt"]
    assert "dataset" in caplog.text and "eval_test" in caplog.text and "metrics.json" in caplog.text


def test_only_the_outputs_of_a_run_are_cleared(tmp_path):
    layout = previous_run(tmp_path / "out")
    (layout.root / "eval_notes").mkdir()
    (layout.root / "my-data").mkdir()
    clear_previous_run(layout).finish()
    assert sorted(path.name for path in layout.root.iterdir()) == ["eval_notes", "my-data"]


def test_outputs_without_the_run_json_of_a_run_are_refused_and_kept(tmp_path):
    layout = previous_run(tmp_path / "out", proof=False)
    before = sorted(path.relative_to(layout.root) for path in layout.root.rglob("*"))
    with pytest.raises(OutputFolderError, match=r"out holds dataset, metrics\.json.* no run\.json"):
        clear_previous_run(layout)
    assert sorted(path.relative_to(layout.root) for path in layout.root.rglob("*")) == before


def test_a_previous_run_without_dataset_is_deleted_whole(tmp_path):
    layout = previous_run(tmp_path / "out")
    shutil.rmtree(layout.dataset)
    removal = clear_previous_run(layout)
    assert removal.dataset is None
    removal.thread.join()
    assert sorted(path.name for path in layout.root.iterdir()) == []


def test_nothing_to_clear(tmp_path):
    (tmp_path / "out").mkdir()
    assert clear_previous_run(RunLayout(tmp_path / "out")) is None


def test_extract_only_removes_the_previous_model_and_metrics(tmp_path):
    builder = ExportBuilder(tmp_path / "export.sqlite")
    dataset = builder.dataset()
    image = builder.image(100, 100)
    page = builder.element("page", rectangle(0, 0, 100, 100), image)
    builder.element("text_line", rectangle(10, 10, 50, 20), image, parents=(page,))
    for set_name in ("train", "dev"):
        builder.add_to_set(dataset, set_name, page)
    builder.close()
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (100, 100), "white").save(images / f"{image.id}.jpg")
    layout = previous_run(tmp_path / "out")
    process = run_local(
        builder.path,
        write_config(tmp_path / "c.yml", class_names=["text_line"]),
        layout.root,
        "--images",
        images,
    )
    assert "Removing the previous run's outputs" in process.stderr
    assert not layout.metrics.exists() and not layout.model_dir.exists()
    assert not layout.evaluation("test").exists()
    assert (layout.dataset / "data.yaml").is_file()


def label_files(dataset: Path) -> dict[str, tuple[bytes, int]]:
    """Each label file of a dataset: its bytes and its modification time."""
    labels = dataset / "labels"
    return {
        str(path.relative_to(labels)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in labels.rglob("*.txt")
    }


def test_a_rerun_takes_back_the_label_files_that_are_the_same(tmp_path):
    """A previous run's label file that the rerun would write again, byte for byte, is moved
    into the new dataset (its data neither freed nor written again); the others are written, and
    the previous dataset is gone at the end. The result is exactly a fresh run's."""
    from PIL import Image

    builder = ExportBuilder(tmp_path / "export.sqlite")
    dataset = builder.dataset()
    images = tmp_path / "images"
    images.mkdir()
    pages, lines = [], []
    for index in range(4):
        image = builder.image(200, 100)
        Image.new("RGB", (200, 100), "white").save(images / f"{image.id}.jpg")
        pages.append(builder.element("page", rectangle(0, 0, 200, 100), image))
        polygon = rectangle(10, 10 + index, 50, 20)
        lines.append(builder.element("text_line", polygon, image, parents=(pages[-1],)))
        builder.add_to_set(dataset, "train" if index < 3 else "dev", pages[-1])
    builder.close()
    config = write_config(tmp_path / "c.yml", class_names=["text_line"])
    output = tmp_path / "out"
    run_local(builder.path, config, output, "--images", images)
    first = label_files(output / "dataset")
    for path in (output / "dataset" / "labels").rglob("*.txt"):
        os.utime(path, ns=(10**18, 10**18))  # what the rerun takes back keeps this date
    # between the runs, one line moves and one page leaves the dataset
    with sqlite3.connect(builder.path) as export:
        moved = json.dumps(rectangle(30, 30, 50, 20))
        export.execute("UPDATE element SET polygon = ? WHERE id = ?", (moved, lines[0]))
        export.execute("DELETE FROM dataset_element WHERE element_id = ?", (pages[1],))
    export.close()
    run_local(builder.path, config, output, "--images", images)
    second = label_files(output / "dataset")
    run_local(builder.path, config, tmp_path / "fresh", "--images", images)
    assert {name: text for name, (text, _) in second.items()} == {
        name: text for name, (text, _) in label_files(tmp_path / "fresh" / "dataset").items()
    }
    taken_back = {name for name, (_, mtime) in second.items() if mtime == 10**18}
    assert taken_back == {f"train/{pages[2]}.txt", f"val/{pages[3]}.txt"}
    assert second[f"train/{pages[0]}.txt"][0] != first[f"train/{pages[0]}.txt"][0]
    assert f"train/{pages[1]}.txt" not in second
    assert [path.name for path in output.iterdir() if path.name.startswith(".previous")] == []


def test_long_and_unsafe_ids_make_short_distinct_safe_names():
    long_id = "x" * 300
    names = {safe_name(long_id), safe_name(long_id + "y"), safe_name("../" + long_id)}
    assert len(names) == 3
    assert all(len(name) <= 110 and "/" not in name for name in names)
    assert safe_name("0a0b-1c") == "0a0b-1c"


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_names_the_folder_and_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "labels" / "page.txt"
    target.parent.mkdir()
    monkeypatch.setattr(Path, "replace", disk_full)
    with pytest.raises(files.DiskFullError, match=str(tmp_path)), files.disk_space(tmp_path):
        files.write_text(target, "0 0.1 0.1 0.2 0.2\n")
    assert list(target.parent.iterdir()) == []


def test_a_copy_across_file_systems_leaves_no_truncated_image(tmp_path, monkeypatch):
    source, target = tmp_path / "cached.jpg", tmp_path / "dataset.jpg"
    source.write_bytes(b"\xff\xd8 image \xff\xd9")

    def cross_device(*args):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def interrupted_copy(src, dst):
        Path(dst).write_bytes(b"\xff\xd8 ima")
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(files.os, "link", cross_device)
    monkeypatch.setattr(files.shutil, "copyfile", interrupted_copy)
    with pytest.raises(OSError):
        files.link_or_copy(source, target)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cached.jpg"]


def test_linking_or_copying_is_decided_once(tmp_path, monkeypatch):
    # A dataset on another file system than the cache: the first link is refused, every image
    # after it is copied without trying a link again
    calls = []

    def cross_device(*args):
        calls.append(args)
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(files.os, "link", cross_device)
    link = files.Linker()
    for index in range(3):
        source, target = tmp_path / f"cached{index}.jpg", tmp_path / f"dataset{index}.jpg"
        source.write_bytes(b"\xff\xd8 image %d \xff\xd9" % index)
        link(source, target)
        assert target.read_bytes() == source.read_bytes()
    assert len(calls) == 1 and link.copies
