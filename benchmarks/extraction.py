"""Benchmark dataset extraction: reference teklia-yolo 0.3.0 versus worker-yolo-training.

Generates a synthetic export once (``generate_export.py``), serves its images over a
loopback IIIF server (``tests/iiif_server.py``) with a configurable per-request latency, and
runs each extractor as a subprocess, measuring:

* wall time, CPU time (user + system) and peak RSS of the child (``os.wait4`` rusage of
  that child alone, so runs do not pollute each other);
* HTTP requests answered by the server during the run, and the server's own CPU time
  (the harness process does nothing else while a child runs);
* SQL statements: the reference is run through a small bootstrap that counts peewee's
  query log records; ours prints a log line (see ``SQL_LINE``).

Extractors:

* ``ref``: ``teklia-yolo extract object segment`` from ``--ref-venv`` (created with
  ``pip install teklia-yolo==0.3.0`` when missing);
* ``ref-warm``: the reference again on the same output (it skips existing images);
* ``ours-cold``: ``worker-yolo-training --dev --database EXPORT --config CONFIG.yml
  --output DIR --extract-only`` on an empty output folder and cache;
* ``ours-warm``: the same command again, same output folder and cache;
* ``ours-local``: ours on the generated scans themselves (``--images DIR --no-cache``, full-size
  files decoded and cropped locally, no server), on an empty output folder;
* ``base-cold``, ``base-warm``: the same two runs with another build (``--base-bin``, e.g. the
  code before a change), against the same server, so that both builds meet the same load.

Ours (and ``--base-bin``) is byte-compiled first, as a regular pip install is: the reference's
venv is, and an editable install under PYTHONDONTWRITEBYTECODE would compile at every start.
An extractor whose program is missing is reported as ``n/a``. ``--repeat N`` runs the
extractors N times in turn (each round in its own folder): this machine's timings vary.
``--pages`` takes several counts (``--pages 1000 10000``): each gets its own export, and a last
table gives each extractor's wall time and peak memory per count, with the ratio to the first.

    .venv/bin/python benchmarks/extraction.py --pages 200 --latency-ms 0 100
    .venv/bin/python benchmarks/extraction.py --pages 1000 10000 --lines-per-page 65 \
        --extractors ours-cold ours-local  # scale, and local folder against IIIF
    .venv/bin/python benchmarks/extraction.py --lines-per-page 65 --repeat 2  # 66,000 objects
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generate_export import generate, rebase_export

from tests.iiif_server import IIIFServer

REPO = Path(__file__).resolve().parents[1]
REF_PACKAGE = "teklia-yolo==0.3.0"
CLASSES = ["text_line", "illustration"]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}

# Counts peewee's DEBUG query records (one per executed statement) in the reference.
REF_BOOTSTRAP = """
import atexit, logging, sys
class _Count(logging.Handler):
    n = 0
    def emit(self, record):
        _Count.n += 1
_logger = logging.getLogger("peewee")
_logger.setLevel(logging.DEBUG)
_logger.addHandler(_Count())
_logger.propagate = False
atexit.register(lambda: print(f"BENCH_SQL_STATEMENTS={_Count.n}", file=sys.stderr, flush=True))
sys.argv = ["teklia-yolo", *sys.argv[1:]]
from teklia_yolo.cli import main
main()
"""

# worker-yolo-training logs "Extraction SQL statements: N"
SQL_LINE = re.compile(r"BENCH_SQL_STATEMENTS=(\d+)|(?i:sql (?:statements|queries)\D{0,12}(\d+))")


@dataclass
class RunResult:
    extractor: str
    latency_ms: float
    status: str  # ok, failed (rc), n/a, timeout
    pages: int = 0
    round: int = 1
    returncode: int | None = None
    wall_s: float | None = None
    cpu_s: float | None = None
    user_s: float | None = None
    sys_s: float | None = None
    peak_rss_mib: float | None = None
    http_requests: int | None = None
    http_errors: int | None = None
    server_cpu_s: float | None = None
    sql_statements: int | None = None
    pages_per_s: float | None = None
    images_out: int | None = None
    labels_out: int | None = None
    log: str | None = None
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- setup
def ensure_ref_venv(venv: Path) -> Path:
    """The reference's python, creating the venv when it is missing."""
    python = venv / "bin" / "python"
    if (venv / "bin" / "teklia-yolo").exists():
        return python
    print(f"Creating {venv} with {REF_PACKAGE} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # teklia-yolo 0.3.0 does not depend on torch; if a later resolver pulls it,
    # pin "torch==2.14.1" "torchvision==0.29.1" here.
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", REF_PACKAGE],
        check=True,
    )
    return python


def compile_bytecode(binary: Path) -> None:
    """Compile the package a worker-yolo-training program runs, as pip does for a regular install
    (the reference's venv has its bytecode; an editable install under PYTHONDONTWRITEBYTECODE
    would otherwise compile ours again at every start, ~0.07 s a run on this machine)."""
    python = binary.parent / "python"
    locate = "import os, worker_yolo_training as p; print(os.path.dirname(p.__file__))"
    package = subprocess.run(
        [str(python), "-c", locate], check=True, capture_output=True, text=True
    ).stdout.strip()
    subprocess.run([str(python), "-m", "compileall", "-q", package], check=True)


def ensure_export(
    workdir: Path, pages: int, seed: int, regenerate: bool, lines_per_page: int = 10
) -> dict:
    """Generate the export once per (pages, seed, lines per page); its metadata is kept beside
    it."""
    lines = "" if lines_per_page == 10 else f"-{lines_per_page}lines"
    folder = workdir / f"export-{pages}{lines}-seed{seed}"
    meta_path = folder / "meta.json"
    if meta_path.exists() and not regenerate:
        return json.loads(meta_path.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    result = generate(
        folder / "export.sqlite", pages, folder / "images", seed=seed, lines_per_page=lines_per_page
    )
    meta = {
        "path": str(result.path),
        "images_dir": str(result.images_dir),
        "dataset_id": result.dataset_id,
        "pages": pages,
        "lines_per_page": lines_per_page,
        "pages_by_set": {k: len(v) for k, v in result.pages_by_set.items()},
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    print(f"Generated {pages} pages in {time.perf_counter() - start:.1f}s at {folder}", flush=True)
    return meta


def write_ours_config(path: Path, meta: dict, image_size: int) -> Path:
    """worker-yolo-training's YAML configuration (keys of worker_yolo_training.config).

    The dataset and its sets come from the export itself in local mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "\n".join(
            [
                "class_names:",
                *(f"  - {name}" for name in CLASSES),
                "mode: segment",
                f"image_size: {image_size}",
                "",
            ]
        )
    )
    return path


# A child forked straight from this (large) process inherits its RSS high-water mark
# through exec, so ru_maxrss would report the harness' size. This small launcher forks
# the real command from a fresh interpreter and reports that grandchild's rusage.
LAUNCHER = """
import json, os, sys
out, cmd = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
with open(out, "w") as f:
    json.dump({"utime": ru.ru_utime, "stime": ru.ru_stime, "maxrss_kib": ru.ru_maxrss}, f)
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""


@dataclass
class Usage:
    returncode: int | None
    wall_s: float
    user_s: float | None
    sys_s: float | None
    maxrss_kib: int | None
    timed_out: bool


def measure(
    cmd: list[str], cwd: Path, log_path: Path, env: dict, timeout: float, settle: bool = True
) -> Usage:
    """Run cmd through LAUNCHER and return its wall time and the command's own rusage. With
    `settle`, what earlier runs wrote is flushed to disk first (`os.sync`): otherwise the kernel
    writes it back during this run, which then pays for it (a cold run of ours after the
    reference's 2000 files took 3.3 to 4.3 s)."""
    usage_path = log_path.with_suffix(".rusage.json")
    usage_path.unlink(missing_ok=True)
    launcher = [sys.executable, "-S", "-E", "-c", LAUNCHER, str(usage_path), *cmd]
    if settle:
        os.sync()
    with log_path.open("wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(
            launcher, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            returncode = proc.wait()
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
    if usage_path.exists():
        ru = json.loads(usage_path.read_text())
        return Usage(
            returncode, wall, ru["utime"], ru["stime"], ru["maxrss_kib"], timed_out.is_set()
        )
    return Usage(returncode, wall, None, None, None, timed_out.is_set())


def count_outputs(output: Path) -> tuple[int, int]:
    images = labels = 0
    if not output.exists():
        return 0, 0
    for path in output.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES:
            images += 1
        elif path.suffix == ".txt" and "labels" in path.parts:
            labels += 1
    return images, labels


def run_extractor(
    name: str,
    cmd: list[str] | None,
    *,
    latency_ms: float,
    run_dir: Path,
    output: Path,
    server: IIIFServer,
    pages: int,
    env: dict,
    timeout: float,
    settle: bool = True,
) -> RunResult:
    result = RunResult(extractor=name, latency_ms=latency_ms, status="n/a")
    if cmd is None:
        return result
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / f"{name}.log"
    server.reset_counters()
    cpu_before = time.process_time()
    usage = measure(cmd, run_dir, log_path, env, timeout, settle)
    stats = server.stats()
    result.server_cpu_s = time.process_time() - cpu_before
    result.returncode = usage.returncode
    ok = usage.returncode == 0
    result.status = "timeout" if usage.timed_out else ("ok" if ok else f"rc={usage.returncode}")
    result.wall_s = usage.wall_s
    result.user_s = usage.user_s
    result.sys_s = usage.sys_s
    if usage.user_s is not None:
        result.cpu_s = usage.user_s + usage.sys_s
    if usage.maxrss_kib is not None:
        result.peak_rss_mib = usage.maxrss_kib / 1024  # KiB on Linux
    result.http_requests = stats["requests"]
    result.http_errors = stats["errors"]
    result.extra = {"max_in_flight": stats["max_in_flight"], "connections": stats["connections"]}
    result.pages_per_s = pages / usage.wall_s if usage.wall_s else None
    result.images_out, result.labels_out = count_outputs(output)
    result.log = str(log_path)
    text = log_path.read_text(errors="replace")
    matches = SQL_LINE.findall(text)
    if matches:
        last = matches[-1]
        result.sql_statements = int(last[0] or last[1])
    return result


# ------------------------------------------------------------------------ printing
def _fmt(value, spec: str = ".2f") -> str:
    if value is None:
        return "n/a"
    return format(value, spec) if isinstance(value, float) else str(value)


def print_table(results: list[RunResult]) -> None:
    header = [
        "latency",
        "round",
        "extractor",
        "status",
        "wall s",
        "cpu s",
        "peak MiB",
        "HTTP",
        "srv cpu s",
        "SQL",
        "pages/s",
        "imgs/labels",
    ]
    rows = [header]
    for r in results:
        rows.append(
            [
                f"{r.latency_ms:g}ms",
                str(r.round),
                r.extractor,
                r.status,
                _fmt(r.wall_s),
                _fmt(r.cpu_s),
                _fmt(r.peak_rss_mib, ".0f"),
                _fmt(r.http_requests),
                _fmt(r.server_cpu_s),
                _fmt(r.sql_statements),
                _fmt(r.pages_per_s, ".1f"),
                "n/a" if r.images_out is None else f"{r.images_out}/{r.labels_out}",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for index, row in enumerate(rows):
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * w for w in widths))


def print_ratios(results: list[RunResult]) -> None:
    by_key = {(r.latency_ms, r.round, r.extractor): r for r in results}
    lines = []
    for latency, round_ in sorted({(r.latency_ms, r.round) for r in results}):
        ref = by_key.get((latency, round_, "ref"))
        if ref is None or ref.status != "ok":
            continue
        for name in ("ours-cold", "ours-warm", "ours-local", "ref-warm", "base-cold", "base-warm"):
            other = by_key.get((latency, round_, name))
            if other is None:
                continue
            parts = []
            for label, attr in (
                ("wall", "wall_s"),
                ("cpu", "cpu_s"),
                ("rss", "peak_rss_mib"),
                ("http", "http_requests"),
                ("sql", "sql_statements"),
            ):
                a, b = getattr(other, attr), getattr(ref, attr)
                ratio = "n/a" if other.status != "ok" or a is None or not b else f"{a / b:.2f}x"
                parts.append(f"{label} {ratio}")
            lines.append(f"{latency:g}ms round {round_} {name}/ref: " + ", ".join(parts))
    for latency, round_ in sorted({(r.latency_ms, r.round) for r in results}):
        for kind in ("ours", "base"):
            cold = by_key.get((latency, round_, f"{kind}-cold"))
            warm = by_key.get((latency, round_, f"{kind}-warm"))
            if cold and warm and cold.status == warm.status == "ok":
                lines.append(
                    f"{latency:g}ms round {round_} {kind}-warm/{kind}-cold: "
                    f"wall {warm.wall_s / cold.wall_s:.2f}x, cpu {warm.cpu_s / cold.cpu_s:.2f}x"
                )
        cold = by_key.get((latency, round_, "ours-cold"))
        local = by_key.get((latency, round_, "ours-local"))
        if cold and local and cold.status == local.status == "ok":
            lines.append(
                f"{latency:g}ms round {round_} ours-local/ours-cold: "
                f"wall {local.wall_s / cold.wall_s:.2f}x, cpu {local.cpu_s / cold.cpu_s:.2f}x, "
                f"rss {local.peak_rss_mib / cold.peak_rss_mib:.2f}x"
            )
    if lines:
        print("\nRatios (lower is better):")
        print("\n".join(lines))


# ---------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, nargs="+", default=[1000])
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0])
    parser.add_argument(
        "--lines-per-page",
        type=int,
        default=10,
        help="text_line objects per page, besides its illustration (65: 66,000 objects in 1000 "
        "pages)",
    )
    parser.add_argument(
        "--extractors",
        nargs="+",
        default=["ref", "ours-cold", "ours-warm"],
        choices=[
            "ref",
            "ref-warm",
            "ours-cold",
            "ours-warm",
            "ours-local",
            "base-cold",
            "base-warm",
        ],
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="Run the extractors this many times, in turn"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/yolo-extraction-bench"))
    parser.add_argument("--ref-venv", type=Path, default=Path("/tmp/refvenv"))
    parser.add_argument("--ours-bin", type=Path, default=REPO / ".venv/bin/worker-yolo-training")
    parser.add_argument(
        "--base-bin",
        type=Path,
        help="Another build of worker-yolo-training (e.g. before a change), run as base-cold "
        "and base-warm exactly as ours",
    )
    parser.add_argument(
        "--ours-config", type=Path, help="Use this config instead of a generated one"
    )
    parser.add_argument("--ours-arg", action="append", default=[], help="Extra argument for ours")
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--regenerate", action="store_true", help="Rebuild the export")
    parser.add_argument(
        "--server-cache",
        action="store_true",
        help="Cache encoded IIIF responses (less server CPU; favours later runs of same URLs)",
    )
    parser.add_argument(
        "--prime",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Warm the server's response cache with one untimed cold run per extractor "
        "(default), so that timed runs do not share the CPUs with JPEG encoding",
    )
    parser.add_argument(
        "--settle",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Flush earlier runs' writes to disk (sync) before each timed run (default), so that "
        "no run pays for the previous one's writeback",
    )
    parser.add_argument("--server-version", type=int, choices=[2, 3], default=2)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--json", type=Path, help="Also write the results here")
    args = parser.parse_args()

    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    ref_python = (
        ensure_ref_venv(args.ref_venv) if {"ref", "ref-warm"} & set(args.extractors) else None
    )
    if not args.ours_bin.exists() and any(n.startswith("ours") for n in args.extractors):
        print(f"{args.ours_bin} not found: ours is reported as n/a", flush=True)
    for binary in {args.ours_bin, args.base_bin} - {None}:
        if binary.exists():
            compile_bytecode(binary)
    results: list[RunResult] = []
    for pages in args.pages:
        results += run_pages(args, workdir, pages, ref_python)
    if len(args.pages) > 1:
        print_scale(results)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0 if all(r.status in ("ok", "n/a") for r in results) else 1


def run_pages(args, workdir: Path, pages: int, ref_python: Path | None) -> list[RunResult]:
    """Every extractor on an export of `pages` pages, at each latency; prints the tables."""
    meta = ensure_export(workdir, pages, args.seed, args.regenerate, args.lines_per_page)
    export = Path(meta["path"])
    config = args.ours_config or write_ours_config(
        workdir / "ours-config.yml", meta, args.image_size
    )

    def command(name: str, lat_dir: Path) -> tuple[list[str] | None, Path, Path, dict]:
        """(command or None when missing, run folder, output folder, environment)."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if name.startswith("ref"):
            output = lat_dir / "ref" / "output"
            cmd = [
                str(ref_python),
                "-c",
                REF_BOOTSTRAP,
                "extract",
                "object",
                "segment",
                str(export),
                "--output",
                str(output),
                "--dataset-id",
                meta["dataset_id"],
                "--element-type",
                "page",
                "--image-size",
                str(args.image_size),
                "--class",
                *CLASSES,
            ]
            return cmd, lat_dir / "ref", output, env
        kind = name.split("-")[0]  # ours or base
        if name == "ours-local":
            kind = "local"
        binary = args.base_bin if kind == "base" else args.ours_bin
        # the scans themselves, no cache: every run decodes them
        local = ["--images", meta["images_dir"], "--no-cache"] if kind == "local" else []
        output = lat_dir / kind / "output"
        env["XDG_CACHE_HOME"] = str(lat_dir / kind / "xdg-cache")
        if binary is None or not binary.exists():
            return None, lat_dir / kind, output, env
        cmd = [
            str(binary),
            "--dev",
            "--database",
            str(export),
            "--config",
            str(config),
            "--output",
            str(output),
            "--extract-only",
            *(local or ["--cache-dir", str(lat_dir / kind / "cache")]),
            *args.ours_arg,
        ]
        return cmd, lat_dir / kind, output, env

    results: list[RunResult] = []
    with IIIFServer(
        images_dir=Path(meta["images_dir"]),
        version=args.server_version,
        cache_responses=args.server_cache or args.prime,
    ) as server:
        rebase_export(export, server.base_url)
        print(f"IIIF server at {server.base_url}; export {export}", flush=True)
        if args.prime:
            # Untimed cold runs at 0 ms so that the server has every URL each extractor
            # asks for in its response cache: timed runs then cost the server ~no CPU,
            # as with a remote IIIF server, instead of competing for this machine's cores.
            prime_dir = workdir / "runs" / "prime"
            # base asks for the same URLs as ours: priming one of them is enough
            primed_names = dict.fromkeys(
                n.replace("-warm", "-cold").replace("ref-cold", "ref").replace("base", "ours")
                for n in args.extractors
                if n != "ours-local"
            )
            for name in primed_names:
                shutil.rmtree(prime_dir, ignore_errors=True)
                cmd, run_dir, output, env = command(name, prime_dir)
                if cmd is None:
                    continue
                print(f"[prime] {name} ...", flush=True)
                primed = run_extractor(
                    name,
                    cmd,
                    latency_ms=0,
                    run_dir=run_dir,
                    output=output,
                    server=server,
                    pages=pages,
                    env=env,
                    timeout=args.timeout,
                    settle=args.settle,
                )
                print(f"[prime] {name}: {primed.status} in {primed.wall_s:.2f}s", flush=True)
            shutil.rmtree(prime_dir, ignore_errors=True)
        for latency, round_ in itertools.product(args.latency_ms, range(1, args.repeat + 1)):
            server.latency_ms = latency
            lat_dir = workdir / "runs" / f"{pages}p-{latency:g}ms"
            if args.repeat > 1:
                lat_dir = lat_dir / f"round{round_}"
            shutil.rmtree(lat_dir, ignore_errors=True)
            for name in args.extractors:
                cmd, run_dir, output, env = command(name, lat_dir)
                print(f"[{latency:g} ms, round {round_}] {name} ...", flush=True)
                result = run_extractor(
                    name,
                    cmd,
                    latency_ms=latency,
                    run_dir=run_dir,
                    output=output,
                    server=server,
                    pages=pages,
                    env=env,
                    timeout=args.timeout,
                    settle=args.settle,
                )
                result.round = round_
                result.pages = pages
                print(
                    f"[{latency:g} ms, round {round_}] {name}: {result.status}"
                    + (f" in {result.wall_s:.2f}s (log {result.log})" if result.wall_s else ""),
                    flush=True,
                )
                results.append(result)

    objects = pages * (args.lines_per_page + 1)
    print(
        f"\n{pages} pages, {objects} objects, image size {args.image_size}, {os.cpu_count()} CPUs"
    )
    print_table(results)
    print_ratios(results)
    return results


def print_scale(results: list[RunResult]) -> None:
    """Wall time and peak memory of each extractor per page count, and their ratios to the
    smallest count (medians over rounds and latencies)."""
    import statistics

    print("\nScale (median over rounds; ratio to the first page count):")
    by_name: dict[str, dict[int, list[RunResult]]] = {}
    for r in results:
        if r.status == "ok":
            by_name.setdefault(r.extractor, {}).setdefault(r.pages, []).append(r)
    for name, counts in by_name.items():
        first = None
        for pages in sorted(counts):
            wall = statistics.median(r.wall_s for r in counts[pages])
            peak = max(r.peak_rss_mib or 0 for r in counts[pages])
            first = first or (pages, wall, peak)
            ratio = (
                f" (×{pages / first[0]:g} pages: time ×{wall / first[1]:.1f}, "
                f"memory ×{peak / first[2]:.2f})"
                if pages != first[0]
                else ""
            )
            print(f"  {name:10s} {pages:6d} pages: {wall:7.1f} s, peak {peak:5.0f} MiB{ratio}")


if __name__ == "__main__":
    sys.exit(main())
