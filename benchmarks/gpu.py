"""GPU benchmark: the worker's training as it runs (AMP on) against the reference trainer's FP32.

On a CUDA machine: generate an export (`generate_export.py`, 400 pages, images in a local folder),
extract it once (`--extract-only`: fills the image cache), then run the worker end to end in local
mode twice on that dataset and cache, `v8s`, `image_size: 640`, `advanced.pretrained: false`:
`ours` as the worker runs (AMP, 8 loader workers, batch 16), and `reference` with
`advanced.training_kwargs: {amp: false}`. The worker's `train()` puts its device's `amp` after the
training kwargs, so the wrapper (`gpu_wrapper.py`) also turns the device's `amp` off for `reference`.
The wrapper adds Ultralytics callbacks (epoch times, the trainer's final `amp`, peak GPU memory)
and times Ultralytics' `check_amp` (offline, it first tries to download yolo26n.pt). The report:
median epoch (first left out), wall time, peak memory, val/test box and mask mAP50-95
(`metrics.json`), AMP state and check, ratios, a Markdown table.

Epochs (20): 320 train images are 20 batches of 16; on an H100 YOLOv8s-seg at 640 should train an
epoch in 2-4 s (the loader's mosaics are the likely limit) and validate 40 images in 1-2 s: about
5 s an epoch with AMP, 6-8 s without, plus about 60 s per run of fixed cost (imports, AMP check,
plots, evaluation of 3 splits, packaging): 2 x 60 + 20 x (5 + 8) = 380 s, 40 s of setup, about
7 minutes, a 1.5x margin on the epoch estimate inside 9 minutes. `--budget-s` stops an overrun.

The GPU machine has Python 3.12, PyTorch, torchvision, numpy, Pillow, matplotlib, OpenCV, PyYAML,
requests, httpx, lxml, psutil, tqdm, nvidia-ml-py, cloudpickle, no network, and none of these,
which the worker imports at run time (`scripts/gpu_wheels.sh` downloads them into `.whl/`, 42.6
MiB, with Debian's libmagic1, unpacked only when the machine lacks libmagic):

    ultralytics-opencv-headless 8.4.190, ultralytics-thop 2.2.3, ultralytics-platform 0.1.99,
    polars 2.1.0, polars-runtime-32 2.1.0 (repacked with LZMA: 31 MiB instead of 51),
    arkindex-base-worker 0.6.0, arkindex-client 1.3.0, arkindex-export 0.2.5,
    peewee 3.17.0 (PyPI has no wheel: built here without its optional C extensions),
    teklia-toolbox 0.3.2, typesystem 0.4.1, python-gnupg 0.5.6, python-magic 0.4.27,
    humanize 4.16.0, shapely 2.1.2, zstandard 0.25.0, tenacity 9.2.1

    python3 benchmarks/gpu.py                      # there (benchmarks/README.md: the tool call)
    .venv/bin/python benchmarks/gpu.py --dry-run   # here: 6 small pages, v8n, 64 px, 1 epoch, CPU
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes.util
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

CLASSES = ("text_line", "illustration")
CARRIED_WHEELS = (
    "ultralytics-opencv-headless==8.4.190", "ultralytics-thop==2.2.3",
    "ultralytics-platform==0.1.99", "polars==2.1.0", "polars-runtime-32==2.1.0",
    "arkindex-base-worker==0.6.0", "arkindex-client==1.3.0", "arkindex-export==0.2.5",
    "peewee==3.17.0", "teklia-toolbox==0.3.2", "typesystem==0.4.1", "python-gnupg==0.5.6",
    "python-magic==0.4.27", "humanize==4.16.0", "shapely==2.1.2", "zstandard==0.25.0",
    "tenacity==9.2.1",
)  # fmt: skip
# Ultralytics' answers in its log (utils/checks.py check_amp)
AMP_LINE = re.compile(r"AMP: (checks passed|checks skipped|checks failed)|amp=(True|False)")


@dataclass(frozen=True)
class Setting:
    name: str
    amp: bool


SETTINGS = (Setting("ours", amp=True), Setting("reference", amp=False))


@dataclass
class RunResult:
    setting: str
    status: str = "not run"
    wall_s: float | None = None
    stats: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    amp_log: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- the harness
def machine_summary(cuda: bool) -> dict:
    """Device, versions, CPUs and /dev/shm: what explains the figures. The dry run does not import
    torch here (seconds of CPU the test does not need)."""
    from importlib.metadata import version

    summary = {
        "python": platform.python_version(),
        "torch": version("torch"),
        "cpus": os.cpu_count(),
        "device": "cpu",
    }
    if cuda:
        import torch

        summary["device"] = torch.cuda.get_device_name(0)
        summary["cuda"] = torch.version.cuda
    with contextlib.suppress(OSError):
        summary["shm_free_mib"] = round(shutil.disk_usage("/dev/shm").free / 2**20)
    return summary


def libmagic_env(wheels: Path, scratch: Path) -> dict[str, str]:
    """python-magic needs libmagic.so.1: unpack the carried Debian package when the system lacks it."""
    if ctypes.util.find_library("magic"):
        return {}
    packages = sorted(wheels.glob("libmagic1_*.deb"))
    if not packages or not shutil.which("dpkg-deb"):
        print("libmagic not found and no libmagic1 .deb in", wheels, flush=True)
        return {}
    target = scratch / "libmagic"
    subprocess.run(["dpkg-deb", "-x", str(packages[0]), str(target)], check=True)
    libs = [str(path.parent) for path in target.rglob("libmagic.so.1")]
    return {"LD_LIBRARY_PATH": os.pathsep.join([*libs, os.environ.get("LD_LIBRARY_PATH", "")])}


def write_config(path: Path, args: argparse.Namespace, setting: Setting) -> Path:
    """The worker's YAML configuration for one setting (only `amp` differs)."""
    advanced = {"pretrained": False}
    if not setting.amp:
        advanced["training_kwargs"] = {"amp": False}
    config = {
        "class_names": list(CLASSES),
        "mode": "segment",
        "ultralytics_model_size": args.model_size,
        "image_size": args.image_size,
        "num_epochs": args.epochs,
        "batch_size": args.batch_size,
        "advanced": advanced,
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def worker_command(database: Path, config: Path, output: Path, args: argparse.Namespace) -> list:
    return [
        "--dev", "--database", str(database), "--config", str(config), "--output", str(output),
        "--images", str(args.workdir / "images"), "--cache-dir", str(args.workdir / "cache"),
    ]  # fmt: skip


def run_setting(setting: Setting, database: Path, args, env: dict, timeout: float) -> RunResult:
    """One end-to-end run of the worker through the wrapper; parses its stats, metrics and log."""
    result = RunResult(setting.name)
    folder = args.workdir / setting.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    config = write_config(folder / "config.yml", args, setting)
    stats_path, log_path = folder / "stats.json", folder / "worker.log"
    command = [sys.executable, str(REPO / "benchmarks" / "gpu_wrapper.py"), str(stats_path)]
    command += ["--fp32"] if not setting.amp else []
    command += ["--", *worker_command(database, config, folder / "output", args)]
    start = time.perf_counter()
    with log_path.open("w") as log:
        try:
            process = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout
            )
            result.status = "ok" if process.returncode == 0 else f"exit {process.returncode}"
        except subprocess.TimeoutExpired:
            result.status = f"stopped at {timeout:.0f} s (budget)"
    result.wall_s = time.perf_counter() - start
    if stats_path.is_file():
        result.stats = json.loads(stats_path.read_text())
    metrics_path = folder / "output" / "metrics.json"
    if metrics_path.is_file():
        result.metrics = json.loads(metrics_path.read_text())
    log_text = log_path.read_text(errors="replace")
    result.amp_log = sorted({m.group(0) for m in AMP_LINE.finditer(log_text)})
    if result.status != "ok":
        print(f"--- {setting.name}: {result.status}, end of {log_path}:\n{log_text[-3000:]}")
    return result


def _median(values: list[float] | None) -> float | None:
    """The median epoch; the first epoch (worker start-up, cuDNN tuning) is left out when possible."""
    if not values:
        return None
    return statistics.median(values[1:] if len(values) > 2 else values)


def _map(result: RunResult, split: str, kind: str) -> float | None:
    return result.metrics.get(split, {}).get("all", {}).get(kind, {}).get("mAP50-95")


def _fmt(value, spec: str = ".2f") -> str:
    if value is None:
        return "n/a"
    return format(value, spec) if isinstance(value, float) else str(value)


def table_rows(results: list[RunResult]) -> list[list[str]]:
    """One row per setting: what the README quotes."""
    rows = []
    for r in results:
        s = r.stats
        check = "not run" if "amp_check" not in s else ("passed" if s["amp_check"] else "failed")
        if "amp_check_s" in s:
            check += f" ({s['amp_check_s']:.1f} s)"
        rows.append(
            [
                r.setting, r.status, _fmt(s.get("amp")), check, _fmt(len(s.get("epoch_s", []))),
                _fmt(_median(s.get("train_epoch_s"))), _fmt(_median(s.get("epoch_s"))),
                _fmt(r.wall_s, ".1f"), _fmt(s.get("max_allocated_mib"), ".0f"),
                _fmt(s.get("max_reserved_mib"), ".0f"),
                *(_fmt(_map(r, split, kind), ".3f") for split in ("val", "test") for kind in ("box", "mask")),
            ]
        )  # fmt: skip
    return rows


HEADER = [
    "setting", "status", "AMP on", "AMP check", "epochs", "median train epoch s",
    "median epoch s (with val)", "wall s", "peak GPU MiB allocated", "peak GPU MiB reserved",
    "val box mAP50-95", "val mask mAP50-95", "test box mAP50-95", "test mask mAP50-95",
]  # fmt: skip


def ratios(results: list[RunResult]) -> list[str]:
    """Reference over ours: above 1 means ours is faster or smaller; mAP as differences."""
    by_name = {r.setting: r for r in results}
    ours, ref = by_name.get("ours"), by_name.get("reference")
    if not ours or not ref:
        return []
    lines = []
    for label, value in (
        ("train epoch", lambda r: _median(r.stats.get("train_epoch_s"))),
        ("epoch with val", lambda r: _median(r.stats.get("epoch_s"))),
        ("wall", lambda r: r.wall_s),
        ("peak GPU memory (allocated)", lambda r: r.stats.get("max_allocated_mib")),
    ):
        a, b = value(ours), value(ref)
        lines.append(f"reference / ours, {label}: " + (f"{b / a:.2f}x" if a and b else "n/a"))
    for split in ("val", "test"):
        for kind in ("box", "mask"):
            a, b = _map(ours, split, kind), _map(ref, split, kind)
            delta = "n/a" if a is None or b is None else f"{a - b:+.3f}"
            lines.append(f"ours - reference, {split} {kind} mAP50-95: {delta}")
    return lines


def print_report(summary: dict, results: list[RunResult], extract_s: float | None) -> None:
    print("\n## GPU benchmark\n")
    print(", ".join(f"{key}: {value}" for key, value in summary.items()))
    print(f"warm-up extraction (--extract-only, fills the cache): {_fmt(extract_s, '.1f')} s")
    for r in results:
        print(f"{r.setting}: Ultralytics log says {r.amp_log or 'nothing about AMP'}")
    print("\n| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for row in table_rows(results):
        print("| " + " | ".join(row) + " |")
    print("\n" + "\n".join(ratios(results)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU: 6 pages, v8n, 64 px, 1 epoch")
    parser.add_argument("--pages", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--model-size", default="v8s")
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--budget-s", type=float, default=540, help="Whole script, setup included")
    parser.add_argument("--settings", nargs="+", default=[s.name for s in SETTINGS])
    parser.add_argument("--wheels", type=Path, default=REPO / ".whl")
    parser.add_argument("--workdir", type=Path, help="Default: a temporary folder")
    parser.add_argument("--out", type=Path, help="Also write report.json and each run's log here")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.pages, args.epochs, args.model_size, args.image_size = 6, 1, "v8n", 64
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("No CUDA device: run with --dry-run for the CPU check", file=sys.stderr)
            return 2
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            args.workdir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="gpubench-"))
            )
        args.workdir = args.workdir.resolve()
        args.workdir.mkdir(parents=True, exist_ok=True)
        return run(args, started)


def run(args: argparse.Namespace, started: float) -> int:
    """Generate, warm the cache, run each setting, report."""
    from generate_export import generate

    size = (240, 320) if args.dry_run else (1200, 1600)
    database = args.workdir / "export.sqlite"
    generate(database, args.pages, args.workdir / "images", width=size[0], height=size[1])
    env = {
        **os.environ,
        **libmagic_env(args.wheels, args.workdir),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        # A fresh Ultralytics folder, as in a new task: no yolo26n.pt for the AMP check
        "YOLO_CONFIG_DIR": str(args.workdir / "ultralytics"),
        "YOLO_OFFLINE": "1",
        "XDG_DATA_HOME": str(args.workdir / "data"),  # base-worker's work dir
        "PYTHONUNBUFFERED": "1",
    }
    first = write_config(args.workdir / "extract.yml", args, SETTINGS[0])
    start = time.perf_counter()
    extraction = subprocess.run(
        [sys.executable, "-m", "worker_yolo_training", "--extract-only",
         *worker_command(database, first, args.workdir / "extract", args)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    extract_s = time.perf_counter() - start
    if extraction.returncode:
        print(extraction.stdout[-3000:], extraction.stderr[-3000:], sep="\n")
        return 1
    results = []
    for setting in (s for s in SETTINGS if s.name in args.settings):
        left = args.budget_s - (time.perf_counter() - started)
        results.append(run_setting(setting, database, args, env, max(left, 1)))
    summary = machine_summary(cuda=not args.dry_run)
    print_report(summary, results, extract_s)
    if args.out:  # stats and metrics are in the report
        args.out.mkdir(parents=True, exist_ok=True)
        results_json = [r.__dict__ for r in results]
        report = {"machine": summary, "extract_s": extract_s, "results": results_json}
        (args.out / "report.json").write_text(json.dumps(report, indent=2))
        for r in results:
            shutil.copyfile(args.workdir / r.setting / "worker.log", args.out / f"{r.setting}.log")
    return 0 if all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
