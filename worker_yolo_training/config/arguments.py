"""The command-line options added to base-worker's, and their checks."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from worker_yolo_training.config.options import ConfigurationError
from worker_yolo_training.core import not_a_file

# Images downloaded at once (a folder's are read one per CPU: `fetch_concurrency`)
DEFAULT_CONCURRENCY = 32
# Seconds: to connect, and between two reads of an image answer
IMAGE_TIMEOUT = 60.0
# Attempts per image on timeouts, connection errors and 5xx
DEFAULT_RETRIES = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This worker's options (local mode, images, cache, downloads)."""
    parser.add_argument("--database", type=Path, help="Local SQLite export: run without Arkindex.")
    parser.add_argument(
        "--output", type=Path, default=Path("output"), help="Output folder in local mode."
    )
    parser.add_argument(
        "--images",
        type=Path,
        help="Folder of full images named <image id>.jpg (or .png, .tif): no IIIF download.",
    )
    parser.add_argument(
        "--extract-only", action="store_true", help="Write the training dataset and stop."
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="Local mode: continue the interrupted run in --output (same export and "
        "configuration): its dataset is reused and training continues from its last epoch.",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="Weights to compare the new model with (e.g. an earlier local run's model file), "
        "evaluated with the configuration that run would publish. Default: the model version "
        "being fine-tuned, else the latest version of target_model_id, else none.",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        help=f"Images fetched at once (default: {DEFAULT_CONCURRENCY} downloads; with --images, "
        "one per CPU).",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="Image cache (local default: $XDG_CACHE_HOME/worker-yolo-training/images, "
        "else ~/.cache/...; in Arkindex: inside the task's data dir).",
    )
    parser.add_argument("--no-cache", action="store_true", help="Keep no image between runs.")
    parser.add_argument(
        "--image-timeout",
        type=float,
        default=IMAGE_TIMEOUT,
        help="Seconds allowed to connect and between two reads of an image answer; each attempt "
        "must also complete within 3× this.",
    )
    parser.add_argument(
        "--image-retries",
        type=int,
        default=DEFAULT_RETRIES,
        help="Attempts per image on timeouts, connection errors and 5xx.",
    )


def check_arguments(args: argparse.Namespace, local: bool) -> None:
    """Command-line mistakes, reported together like configuration ones.

    :raises ConfigurationError: one line per problem.
    """
    problems = []
    if local and args.database is None:
        problems.append("--database: local mode needs an export (a SQLite file)")
    elif local and (why := not_a_file(args.database)):
        problems.append(
            f"--database: no export at {args.database} ({why}): give the SQLite export file"
        )
    if args.resume and not local:
        problems.append("--resume works in local mode only (--database)")
    if args.images is not None and not args.images.is_dir():
        problems.append(f"--images: {args.images} is not a folder")
    if args.baseline is not None and not args.baseline.is_file():
        problems.append(f"--baseline: no weights file at {args.baseline}")
    for name, value, minimum in (
        ("--concurrency", args.concurrency, 1),
        ("--image-retries", args.image_retries, 1),
    ):
        if value is not None and value < minimum:
            problems.append(f"{name} must be at least {minimum}, got {value}")
    if args.image_timeout <= 0:
        problems.append(f"--image-timeout must be positive, got {args.image_timeout}")
    if problems:
        raise ConfigurationError(problems)


def fetch_concurrency(args: argparse.Namespace, cpus: int) -> int:
    """Images fetched at once: --concurrency, else `DEFAULT_CONCURRENCY` downloads (each mostly
    waits for its server), or one per CPU from an --images folder (decoding and resizing a scan
    is all CPU: more threads only wait for each other, each holding a decoded scan)."""
    if args.concurrency is not None:
        return args.concurrency
    return cpus if args.images is not None else DEFAULT_CONCURRENCY


def local_cache(args: argparse.Namespace) -> Path | None:
    """The image cache of a local run: --cache-dir, else the user's cache folder; None with
    --no-cache (crops then go to a scratch folder inside --output)."""
    if args.no_cache:
        return None
    if args.cache_dir:
        return args.cache_dir
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache_home / "worker-yolo-training" / "images"


def _nested(inner: Path, outer: Path) -> bool:
    return inner.resolve().is_relative_to(outer.resolve())


def check_folders(args: argparse.Namespace) -> None:
    """A local run's --output shares no folder with its inputs: it is cleared at start, and
    what it holds goes into the results archive. Checked before anything is written.

    :raises ConfigurationError: one line per overlap, naming both paths.
    """
    output = args.output
    problems = []
    folders = {"--images": args.images, "the image cache": local_cache(args)}
    for name, folder in folders.items():
        if folder is not None and _nested(output, folder):
            problems.append(f"--output {output} is inside {name} {folder}")
        elif folder is not None and _nested(folder, output):
            problems.append(f"{name} {folder} is inside --output {output}")
    if args.database.resolve().parent == output.resolve():
        problems.append(f"--output {output} is the folder of the export {args.database}")
    elif _nested(args.database, output):
        problems.append(f"the export {args.database} is inside --output {output}")
    if problems:
        raise ConfigurationError(
            [f"{problem}: choose an --output folder apart from the inputs" for problem in problems]
        )
