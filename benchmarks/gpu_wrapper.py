"""The worker's command line with the GPU benchmark's hooks (`benchmarks/gpu.py` runs it).

    python benchmarks/gpu_wrapper.py STATS.json [--fp32] -- WORKER ARGUMENTS...

Adds Ultralytics callbacks to every trainer (epoch times, the trainer's final `amp`, peak GPU
memory), times Ultralytics' `check_amp` as the trainer calls it, and with `--fp32` turns the
device's AMP off (the reference trainer's FP32). Nothing else changes: the worker runs as
`worker-yolo-training` would. STATS.json is written even when the worker fails, with the
distributions whose modules the process imported.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path


def _install_hooks(stats: dict) -> None:
    """Callbacks on every trainer and a timer on `check_amp`. Runs after the worker's
    `prepare_environment()` (hooked on `training.train`), so Ultralytics is imported as it would be."""
    import torch
    from ultralytics.engine import trainer as trainer_module
    from ultralytics.utils import callbacks

    marks: dict[str, float] = {}

    def on_train_start(trainer) -> None:
        stats.update(amp=bool(trainer.amp), device=str(trainer.device), batch=trainer.batch_size)
        stats["workers"] = trainer.train_loader.num_workers

    def on_train_epoch_start(trainer) -> None:
        marks["start"] = time.perf_counter()

    def on_train_epoch_end(trainer) -> None:
        stats.setdefault("train_epoch_s", []).append(time.perf_counter() - marks["start"])

    def on_fit_epoch_end(trainer) -> None:
        # Also run by `final_eval` (validation of best.pt), after the last epoch: not an epoch
        if "start" in marks:
            stats.setdefault("epoch_s", []).append(time.perf_counter() - marks.pop("start"))

    def on_train_end(trainer) -> None:
        if torch.cuda.is_available():
            stats["max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
            stats["max_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20

    for hook in (on_train_start, on_train_epoch_start, on_train_epoch_end, on_fit_epoch_end, on_train_end):  # fmt: skip
        callbacks.default_callbacks[hook.__name__].append(hook)

    check_amp = trainer_module.check_amp

    def timed_check_amp(model):
        start = time.perf_counter()
        try:
            stats["amp_check"] = check_amp(model)
            return stats["amp_check"]
        finally:
            stats["amp_check_s"] = time.perf_counter() - start

    trainer_module.check_amp = timed_check_amp


def worker_main(stats_path: Path, argv: list[str], force_fp32: bool) -> None:
    """Run the worker's command line with the benchmark hooks; write the stats even on failure."""
    import dataclasses

    from worker_yolo_training import cli
    from worker_yolo_training import train as training

    stats: dict = {}
    train, select_device = training.train, training.select_device

    def hooked_train(*args, **kwargs):
        _install_hooks(stats)
        return train(*args, **kwargs)

    def hooked_select_device(batch_size):
        device = select_device(batch_size)
        stats["worker_device"] = dataclasses.asdict(device)
        if force_fp32:  # the reference's FP32, whatever `train()` does with `training_kwargs`
            stats["forced_fp32"] = True
            return dataclasses.replace(device, amp=False)
        return device

    training.train, training.select_device = hooked_train, hooked_select_device
    sys.argv = ["worker-yolo-training", *argv]
    try:
        cli.main()
    finally:
        stats["distributions"] = imported_distributions()
        stats_path.write_text(json.dumps(stats, indent=2))


def imported_distributions() -> list[str]:
    """The installed distributions whose modules this process imported (normalised names)."""
    from importlib.metadata import packages_distributions

    owners = packages_distributions()
    tops = {name.split(".")[0] for name in list(sys.modules)}
    names = {dist for top in tops for dist in owners.get(top, ())}
    return sorted({re.sub(r"[-_.]+", "-", name).lower() for name in names})


if __name__ == "__main__":
    separator = sys.argv.index("--")
    worker_main(Path(sys.argv[1]), sys.argv[separator + 1 :], "--fp32" in sys.argv[:separator])
