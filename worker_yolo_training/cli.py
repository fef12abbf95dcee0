"""Entry point: `worker-yolo-training`. `--database` selects local mode (no Arkindex at all)."""

from __future__ import annotations

import gc
import sys


def is_local(argv: list[str]) -> bool:
    """Local mode is decided before the worker exists, as base-worker builds its API client in
    its constructor (help needs no client either)."""
    return any(
        arg in ("--database", "-h", "--help") or arg.startswith("--database=") for arg in argv
    )


def main() -> None:
    # The program's modules are imported with the cyclic garbage collector off, then frozen:
    # they live as long as the process, and collecting while they were made (numpy, the Arkindex
    # client, shapely: over 100,000 objects) cost up to a sixth of the imports' time. Later
    # collections no longer traverse them (nor do the extraction's forked worker processes).
    gc.disable()
    try:
        from worker_yolo_training.worker import YoloTrainingWorker
    finally:
        gc.enable()
    gc.freeze()
    YoloTrainingWorker(local=is_local(sys.argv[1:])).run()


if __name__ == "__main__":
    main()
