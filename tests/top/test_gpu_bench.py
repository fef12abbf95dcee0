"""benchmarks/gpu.py: its CPU dry run (both settings end to end), its report, and the wheel list
that a GPU machine without our dependencies needs."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu.py"
spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
gpu = importlib.util.module_from_spec(spec)
sys.modules["gpu_bench"] = gpu  # dataclasses look their module up there
spec.loader.exec_module(gpu)

# Python packages of the lent GPU machines' image ('cuda'), as /work/.library/device/KINDS.md
# listed them on 2026-11-17 (normalised names); our wheels must bring everything else.
GPU_IMAGE_LIST = """
absl-py accelerate aiofiles anyio attrs certifi charset-normalizer click cloudpickle contourpy
cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cycler filelock fonttools fsspec h11
httpcore httpx humanize idna jinja2 joblib kiwisolver lxml markupsafe matplotlib mpmath networkx
numpy nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13
nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx
opencv-python-headless packaging pandas pillow pip psutil pyparsing python-dateutil pyyaml
requests rich scipy setuptools six sympy torch torchvision tqdm triton typing-extensions urllib3
"""
GPU_IMAGE = set(GPU_IMAGE_LIST.split())


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """One CPU dry run of the whole script: 6 pages, v8n at 64 px, 1 epoch, both settings."""
    workdir = tmp_path_factory.mktemp("gpubench")
    process = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--workdir", str(workdir),
         "--out", str(workdir / "out")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert process.returncode == 0, process.stdout[-4000:] + process.stderr[-4000:]
    return process.stdout, json.loads((workdir / "out" / "report.json").read_text())


def table(stdout: str) -> dict[str, dict[str, str]]:
    """The printed Markdown table, by setting and column."""
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]
    return {row[0]: dict(zip(header, row, strict=True)) for row in rows}


def test_dry_run_prints_both_settings_with_sane_values(dry_run):
    stdout, _ = dry_run
    rows = table(stdout)
    assert list(rows) == ["ours", "reference"]
    for row in rows.values():
        assert row["status"] == "ok"
        assert row["AMP on"] == "False"  # CPU: no AMP, and no AMP check
        assert row["AMP check"] == "not run"
        assert row["epochs"] == "1"
        assert 0 < float(row["median train epoch s"]) <= float(row["median epoch s (with val)"])
        assert float(row["median epoch s (with val)"]) < float(row["wall s"])
        assert row["peak GPU MiB allocated"] == "n/a"
        for column in ("val box", "val mask", "test box", "test mask"):
            assert 0 <= float(row[f"{column} mAP50-95"]) <= 1
    assert re.search(r"reference / ours, train epoch: \d+\.\d\dx", stdout)
    assert "warm-up extraction (--extract-only, fills the cache)" in stdout


def test_reference_setting_asks_for_fp32_and_ours_does_not(dry_run):
    _, report = dry_run
    stats = {r["setting"]: r["stats"] for r in report["results"]}
    assert stats["reference"].get("forced_fp32") is True
    assert "forced_fp32" not in stats["ours"]
    assert stats["ours"]["worker_device"] == {"argument": "cpu", "amp": False, "gpus": 0}


def test_everything_the_worker_imports_is_on_the_gpu_image_or_carried(dry_run):
    _, report = dry_run
    carried = {re.sub(r"[-_.]+", "-", w.split("==")[0]).lower() for w in gpu.CARRIED_WHEELS}
    for result in report["results"]:
        imported = set(result["stats"]["distributions"])
        assert "ultralytics-opencv-headless" in imported
        assert imported - GPU_IMAGE - carried - {"worker-yolo-training"} == set()


def test_wheel_script_downloads_exactly_the_carried_wheels():
    script = (ROOT / "scripts" / "gpu_wheels.sh").read_text()
    pinned = set(re.findall(r"\b([a-z][a-z0-9-]+==[0-9][0-9.]*)\b", script))
    assert pinned == set(gpu.CARRIED_WHEELS)


def test_ratios_and_median_leave_out_the_first_epoch():
    ours = gpu.RunResult("ours", "ok", 100.0, {"train_epoch_s": [9.0, 1.0, 1.0, 1.2]})
    reference = gpu.RunResult("reference", "ok", 150.0, {"train_epoch_s": [9.0, 2.0, 2.0, 2.4]})
    ours.metrics = {"val": {"all": {"box": {"mAP50-95": 0.5}, "mask": {"mAP50-95": 0.4}}}}
    reference.metrics = {"val": {"all": {"box": {"mAP50-95": 0.45}, "mask": {"mAP50-95": 0.4}}}}
    lines = gpu.ratios([ours, reference])
    assert "reference / ours, train epoch: 2.00x" in lines
    assert "reference / ours, wall: 1.50x" in lines
    assert "ours - reference, val box mAP50-95: +0.050" in lines
    assert "ours - reference, test mask mAP50-95: n/a" in lines


def test_without_cuda_the_full_benchmark_refuses_at_once(capsys):
    assert gpu.main([]) == 2
    assert "--dry-run" in capsys.readouterr().err


def test_wrapper_times_the_amp_check_the_trainer_calls(tmp_path):
    """On CPU Ultralytics' check_amp answers False at once; the hook must sit on the name the
    trainer calls (ultralytics.engine.trainer.check_amp) and record the answer and its duration."""
    code = (
        "import json, sys, torch; sys.path.insert(0, 'benchmarks'); import gpu_wrapper; stats = {}; "
        "gpu_wrapper._install_hooks(stats); from ultralytics.engine import trainer; "
        "print(json.dumps([trainer.check_amp(torch.nn.Linear(1, 1)), stats]))"
    )
    process = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert process.returncode == 0, process.stderr[-3000:]
    answer, stats = json.loads(process.stdout.strip().splitlines()[-1])
    assert answer is False and stats["amp_check"] is False
    assert 0 <= stats["amp_check_s"] < 5
    row = gpu.table_rows([gpu.RunResult("ours", "ok", 1.0, stats)])[0]
    assert row[gpu.HEADER.index("AMP check")].startswith("failed (0.")
