"""Entry point: `worker-yolo-training`. `--database` selects local mode (no Arkindex at all).

Process-wide settings are made here, and only here: how the garbage collector treats the
program's modules, how glibc's allocator keeps freed memory, how many threads numpy's BLAS
starts. The `--database` export starts being hashed here too, while the program is imported."""

from __future__ import annotations

import ctypes
import gc
import hashlib
import os
import stat
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

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


class ExportDigests:
    """The SHA-256 of exports (what `--resume` compares, in run.json), each computed once, in a
    daemon thread. Those given at the start begin at once: `main` gives the `--database` export,
    hashed (a second per 450 MB) on a CPU that the program's imports leave idle; the digest of
    another path is computed when it is asked for."""

    def __init__(self, paths: Iterable[Path] = ()):
        self.threads: dict[str, threading.Thread] = {}
        self.digests: dict[str, str | Exception] = {}
        for path in paths:
            key = os.path.abspath(path)
            if _regular_file(key):  # opening a FIFO would wait: the worker says what is wrong
                thread = threading.Thread(
                    target=self._hash, args=(key,), name="export-digest", daemon=True
                )
                self.threads[key] = thread
                thread.start()

    def __call__(self, path: Path) -> str:
        """The hexadecimal SHA-256 of the file at `path`; raises OSError when it cannot be read."""
        key = os.path.abspath(path)
        thread = self.threads.get(key)
        if thread is None:
            self._hash(key)
        else:
            thread.join()
        digest = self.digests[key]
        if isinstance(digest, Exception):
            raise digest
        return digest

    def _hash(self, key: str) -> None:
        try:
            with open(key, "rb") as file:
                self.digests[key] = hashlib.file_digest(file, "sha256").hexdigest()
        except Exception as error:  # raised where the digest is asked for, not in the thread
            self.digests[key] = error


def _regular_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def database_argument(argv: list[str]) -> Path | None:
    """The `--database` path of the command line, if any, read before the program is imported
    (its argument parser comes with base-worker's)."""
    for index, arg in enumerate(argv):
        if arg == "--database" and index + 1 < len(argv):
            return Path(argv[index + 1])
        if arg.startswith("--database="):
            return Path(arg.partition("=")[2])
    return None


def is_local(argv: list[str]) -> bool:
    """Local mode is decided before the worker exists, as base-worker builds its API client in
    its constructor (help needs no client either)."""
    return any(
        arg in ("--database", "-h", "--help") or arg.startswith("--database=") for arg in argv
    )


def main() -> None:
    keep_freed_memory()
    single_threaded_blas()  # before numpy is imported
    database = database_argument(sys.argv[1:])
    digests = ExportDigests([database] if database else [])  # hashed while the rest is imported
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
    YoloTrainingWorker(local=is_local(sys.argv[1:]), digests=digests).run()


if __name__ == "__main__":
    main()
