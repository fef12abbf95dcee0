"""Entry point: `worker-yolo-training`. `--database` selects local mode (no Arkindex at all)."""

from __future__ import annotations

import sys

from worker_yolo_training.worker import YoloTrainingWorker


def is_local(argv: list[str]) -> bool:
    """Local mode is decided before the worker exists, as base-worker builds its API client in
    its constructor (help needs no client either)."""
    return any(
        arg in ("--database", "-h", "--help") or arg.startswith("--database=") for arg in argv
    )


def main() -> None:
    YoloTrainingWorker(local=is_local(sys.argv[1:])).run()


if __name__ == "__main__":
    main()
