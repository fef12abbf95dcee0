"""Out of GPU memory: one clear message naming the batch and image sizes in use and what to try.

Ultralytics itself halves the batch and retries, up to 3 times, when the first epoch of a
single-GPU training runs out of memory (`BaseTrainer._do_train`); later, in DDP, or during
validation and prediction, the error stops the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from worker_yolo_training.config import TrainingConfig, key_of

# What PyTorch's caching allocator says (`torch.cuda.OutOfMemoryError` is a RuntimeError; older
# code paths raise a plain RuntimeError with this text)
CUDA_OOM_TEXT = "CUDA out of memory"
AUTOBATCH = -1
SIZE_STRIDE = 32


class OutOfGpuMemory(Exception):
    """The GPU ran out of memory; the message says with which sizes and what to try."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether an error is PyTorch's CUDA out-of-memory error (or carries its message)."""
    import torch

    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and CUDA_OOM_TEXT in str(error)
    )


def _smaller_size(image_size: int) -> int:
    return max(image_size // 2 // SIZE_STRIDE * SIZE_STRIDE, SIZE_STRIDE)


def out_of_memory_message(stage: str, batch_size: int, image_size: int) -> str:
    """What ran out of memory, with which sizes, and what to try."""
    batch, size = key_of("batch_size"), key_of("image_size")
    automatic = " (AutoBatch)" if batch_size == AUTOBATCH else ""
    tries = []
    if batch_size == AUTOBATCH:
        tries.append(f"a fixed `{batch}` below the one AutoBatch chose (in the log above)")
    else:
        tries.append(f"a smaller `{batch}` (e.g. {max(batch_size // 2, 1)})")
        if stage == "training":
            tries.append(f"`{batch}: {AUTOBATCH}` (Ultralytics' AutoBatch picks one that fits)")
    tries.append(f"a smaller `{size}` (e.g. {_smaller_size(image_size)})")
    return (
        f"Out of GPU memory during {stage} with `{batch}` {batch_size}{automatic} and "
        f"`{size}` {image_size}: try " + ", or ".join(tries) + ". No model version is published."
    )


@contextmanager
def gpu_memory(config: TrainingConfig, stage: str) -> Iterator[None]:
    """Turn a CUDA out-of-memory error raised in `stage` into `OutOfGpuMemory`."""
    try:
        yield
    except RuntimeError as error:
        if not is_out_of_memory(error):
            raise
        message = out_of_memory_message(stage, config.batch_size, config.image_size)
        raise OutOfGpuMemory(message) from error
