"""Entry point: `worker-yolo-training`. `--database` selects local mode (no Arkindex at all).

Process-wide settings are made here, and only here: how the garbage collector treats the
program's modules, how glibc's allocator keeps freed memory, how many threads numpy's BLAS
starts."""

from __future__ import annotations

import ctypes
import gc
import os
import sys

# glibc's `mallopt` parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks under this size come from the allocator's heaps, larger ones are mapped apart (glibc's
# largest threshold on 64 bits); this much free memory at the top of a heap is kept for reuse
MAPPED_FROM = 32 << 20
KEPT_FREE = 64 << 20


def keep_freed_memory() -> bool:
    """Have glibc's allocator keep and reuse the memory of large buffers: decoded scans, crops
    and images of megabytes each, made and freed one after another by the image threads. By
    default, glibc maps such a buffer apart, or gives a heap's top back to the system once it is
    free, and each next buffer is then faulted in again, page by page: from a local folder,
    1000 pages took a million page faults and 3 s of system time more. Whether glibc adapts its
    thresholds in time depended on what the run had freed before (a query of the export did).
    False where the C library has no such setting (musl, macOS, Windows), or refused one."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # TypeError: Windows has no process handle
        return False
    # each on its own: 32-bit glibc refuses the threshold (above its heaps' half), not the rest
    mapped = mallopt(M_MMAP_THRESHOLD, MAPPED_FROM)
    kept = mallopt(M_TRIM_THRESHOLD, KEPT_FREE)
    return bool(mapped and kept)


def single_threaded_blas() -> None:
    """One thread for OpenBLAS, numpy's linear algebra, unless the user chose otherwise: it
    starts a thread per CPU when numpy is imported, and each spins for a while before sleeping
    (0.13 CPU-s a process on this 2-CPU machine, taken from the extraction's worker processes as
    they start). The program's matrix products are of 2 × 4 matrices; torch has its own threads."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def is_local(argv: list[str]) -> bool:
    """Local mode is decided before the worker exists, as base-worker builds its API client in
    its constructor (help needs no client either)."""
    return any(
        arg in ("--database", "-h", "--help") or arg.startswith("--database=") for arg in argv
    )


def main() -> None:
    keep_freed_memory()
    single_threaded_blas()  # before numpy is imported
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
