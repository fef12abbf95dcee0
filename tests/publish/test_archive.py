"""The files that leave the worker are complete or absent: a full disk while writing the weights
or the results archive names the path and the space needed, and leaves nothing that looks done."""

from __future__ import annotations

import errno
import shutil
import tarfile
from pathlib import Path

import pytest
import zstandard

from worker_yolo_training.core import DiskFullError, RunLayout
from worker_yolo_training.publish import archive, build_model_dir, build_results_archive


def finished_run(root: Path) -> RunLayout:
    layout = RunLayout(root)
    weights = layout.training / "weights"
    weights.mkdir(parents=True)
    (weights / "best.pt").write_bytes(b"w" * 3_000_000)
    (layout.training / "results.csv").write_text("epoch\n1\n")
    (layout.evaluation("val") / "pages").mkdir(parents=True)
    (layout.evaluation("val") / "pages" / "predictions.jsonl").write_text("{}\n")
    layout.metrics.write_text("{}")
    return layout


def members(path: Path) -> list[str]:
    with (
        path.open("rb") as file,
        zstandard.ZstdDecompressor().stream_reader(file) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        return sorted(member.name for member in tar)


def test_the_archive_holds_the_members_without_weights(tmp_path):
    layout = finished_run(tmp_path / "out")
    build_results_archive(layout, ["val"], layout.archive)
    names = members(layout.archive)
    assert "metrics.json" in names and "eval_val/pages/predictions.jsonl" in names
    assert "training/results.csv" in names and not any(".pt" in name for name in names)
    # Nothing else is left in the output folder
    assert sorted(path.name for path in layout.root.iterdir()) == [
        "eval_val", "metrics.json", "results.tar.zst", "training",
    ]  # fmt: skip


def half_then_full(source, destination, *args, **kwargs):
    """A write of `source` to `destination` that finds the disk full after 1000 bytes."""
    Path(destination).write_bytes(
        Path(source).read_bytes()[:1000] if Path(source).is_file() else b"x"
    )
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_writing_the_weights_leaves_no_model(tmp_path, monkeypatch):
    layout = finished_run(tmp_path / "out")
    monkeypatch.setattr(shutil, "copyfile", half_then_full)
    with pytest.raises(DiskFullError, match=rf"{layout.model_dir} .*about 3\.0 MB are needed"):
        build_model_dir(layout.training / "weights" / "best.pt", layout)
    assert list(layout.model_dir.iterdir()) == []


def test_a_full_disk_while_writing_the_archive_leaves_no_archive(tmp_path, monkeypatch):
    layout = finished_run(tmp_path / "out")
    build_results_archive(layout, ["val"], layout.archive)  # an earlier, complete one
    monkeypatch.setattr(archive, "create_tar_zst_archive", half_then_full)
    with pytest.raises(DiskFullError, match=rf"{layout.root} and the temporary folder .* MB are"):
        build_results_archive(layout, ["val"], layout.archive)
    assert sorted(path.name for path in layout.root.iterdir()) == [
        "eval_val", "metrics.json", "results.tar.zst", "training",
    ]  # fmt: skip
    # The earlier archive is the one left: complete
    assert "metrics.json" in members(layout.archive)
