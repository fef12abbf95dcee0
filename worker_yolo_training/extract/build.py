"""Building a set's samples: each dataset element read with what it holds, its sample built by
the mode and packed with its objects measured (the CPU part of the extraction), its label file
written, by chunks of elements, in worker processes when there are several CPUs, results in the
elements' order.

Worker processes get a chunk's dataset element rows (plain tuples), read their descendants or
classifications from the export themselves (`ChunkReader`, one connection each), and send back
packed samples (arrays and text): pickling costs a fraction of building them. They are forked
when the extraction starts, before any download thread; what they log is sent back with their
results and logged here, in order, as if built in this process.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.pool import AsyncResult, Pool
from pathlib import Path

from worker_yolo_training.config import TrainingConfig
from worker_yolo_training.core import Skip, disk_space, move_if_same, write_text
from worker_yolo_training.export import ChunkReader, PageChunk, SetElements, page_of
from worker_yolo_training.extract.dataset import DatasetFormat
from worker_yolo_training.extract.sample import PackedSample, pack_samples

# A chunk takes as many elements as make about this many rows (elements and their descendants:
# objects measured together, shapely and numpy cost per call more than per object), at the rows
# per element of the set's chunks read so far, and at most this many elements
CHUNK_ROWS = 4096
CHUNK_ELEMENTS = 256
# The first chunks take this many elements until the rows of one are known, and each next one
# at most twice as many as the one before: the worker processes start at once, and an export
# of pages with thousands of lines makes no large chunk before it is known
FIRST_CHUNK_ELEMENTS = 4
# Chunks in flight per worker process: one being built, one waiting
AHEAD = 2
# Seconds a stopping pool is given (`terminate`)
TERMINATE_WAIT = 2.0
# A wait for a chunk checks this often (seconds) that the worker processes are still there
WATCH_INTERVAL = 0.2

# (dataset element id, its sample or why it has none)
Built = tuple[str, PackedSample | Skip]


def usable_cpus() -> int:
    """The CPUs this process may run on (a container's or a scheduler's limit included)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class ChunkSizes:
    """How many elements the next chunk (of a set, or of an export's sets one after the other)
    takes: `FIRST_CHUNK_ELEMENTS`, then about `CHUNK_ROWS` rows at the rows per element `seen`
    so far, or at the last chunk's when its elements held more (pages that get heavier make
    smaller chunks at once)."""

    def __init__(self) -> None:
        self.elements = self.rows = 0
        self.last_elements = self.last_rows = 0
        self.size = FIRST_CHUNK_ELEMENTS

    def seen(self, elements: int, rows: int) -> None:
        """A chunk of `elements` elements was read: `rows` rows with theirs."""
        self.elements += elements
        self.rows += rows
        self.last_elements, self.last_rows = elements, rows

    def next(self) -> int:
        if self.rows:
            fitting = min(
                CHUNK_ROWS * self.elements // self.rows,
                CHUNK_ROWS * self.last_elements // self.last_rows,
            )
            self.size = max(1, min(fitting, 2 * self.size, CHUNK_ELEMENTS))
        return self.size


@dataclass(frozen=True)
class LabelFiles:
    """Where the label files of a split's samples go (`DatasetFormat.label_path`), and the
    dataset of a previous run in the same folder, whose identical label files are taken back
    (`move_if_same`) rather than written again."""

    root: Path  # the dataset folder
    split: str
    previous: Path | None = None  # the previous run's dataset folder, moved aside


def _always() -> bool:
    return True


@dataclass(frozen=True)
class SetBuild:
    """A set's elements to build (`SampleBuilder.build_sets`), their label files written in
    `labels`; `truth` asked before each chunk is built whether its samples' truth objects are
    still wanted (they cost as much as their labels, and most training elements' are not
    written).

    With `overlap`, its first chunks go to the worker processes while the previous set's last
    ones are built, not after: for a set of another split than the previous one. In one split,
    an element of both sets keeps the label file of the first, which the writer removes when
    its image fails: the second set's chunks must be built after that."""

    elements: SetElements
    labels: LabelFiles | None = None
    truth: Callable[[], bool] = _always
    overlap: bool = False


@dataclass(frozen=True)
class ChunkBuilt:
    """A chunk's elements built, in order, and how many rows reading them took."""

    built: list[Built]
    rows: int


def build_chunk(
    layout: DatasetFormat,
    config: TrainingConfig,
    chunk: PageChunk,
    reader: ChunkReader,
    labels: LabelFiles | None = None,
    truth: bool = True,
) -> ChunkBuilt:
    """Each element of a chunk read (`reader`), its sample built and packed (with its truth
    objects when `truth`), or why it has none; with `labels`, their label files."""
    rows = reader.page_rows(chunk)
    pages = [page_of(page_rows) for page_rows in rows]
    built = layout.build_samples(pages, config)
    packed = pack_samples(config.mode, [s for s in built if not isinstance(s, Skip)], truth)
    if labels is not None:
        write_labels(layout, labels, packed)
    samples = iter(packed)
    return ChunkBuilt(
        [
            (page.id, sample if isinstance(sample, Skip) else next(samples))
            for page, sample in zip(pages, built, strict=True)
        ],
        sum(1 + len(children) + len(labels) for _, children, labels in rows),
    )


def write_labels(layout: DatasetFormat, labels: LabelFiles, samples: list[PackedSample]) -> None:
    """Each sample's label file, where the sample is built (a file written is the largest part
    of what the main process did per element). An element whose label the split has already
    keeps it: written for an earlier set, whose sample the writer keeps. The writer removes the
    label of an element whose image then fails. A previous run's label file that is the same
    is moved here instead of written (a rerun's labels are mostly the same)."""
    with disk_space(labels.root):
        for sample in samples:
            path = layout.label_path(labels.root, labels.split, sample)
            if path is None or path.exists():
                continue
            if labels.previous is not None:
                previous = layout.label_path(labels.previous, labels.split, sample)
                if move_if_same(previous, path, sample.label):
                    continue
            write_text(path, sample.label)


class _Records(logging.Handler):
    """Keeps the records logged in a worker process, to be logged by the main one."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args = record.getMessage(), None  # arguments may not pickle
        record.exc_info = record.exc_text = None
        self.records.append(record)


# A worker process' reader of chunks (its connections to the exports, kept from one chunk to
# the next), made by `_start_worker`: the one thing a worker process keeps between chunks. The
# main process never sets it.
_worker_reader: ChunkReader | None = None


def _build_logged(
    layout: DatasetFormat,
    config: TrainingConfig,
    chunk: PageChunk,
    labels: LabelFiles | None,
    truth: bool,
) -> tuple[ChunkBuilt, list[logging.LogRecord]]:
    """`build_chunk` in a worker process, with what it logged.

    The cyclic garbage collector is off while a chunk is built: a chunk's objects hold no cycle
    and are freed as soon as it is sent, but collecting while they are made cost a third of the
    building time. It runs as usual between chunks.
    """
    root = logging.getLogger()
    handlers, root.handlers = root.handlers, [_Records()]
    gc.disable()
    try:
        built = build_chunk(layout, config, chunk, _worker_reader, labels, truth)
        return built, root.handlers[0].records
    finally:
        gc.enable()
        root.handlers = handlers


def _start_worker() -> None:
    global _worker_reader
    _worker_reader = ChunkReader()
    # Ctrl-C reaches the whole process group: the main process alone decides what to do. A
    # stop ends a worker at once (`Pool.terminate`), without the main process' handler.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # What the worker inherits from the main process (modules, the run's values) lives as long
    # as it does: out of the collector's reach, it is never traversed (nor its pages written)
    gc.freeze()


class ChunkPool(Pool):
    """multiprocessing's process pool, whose thread that maintains the worker processes wakes
    only when one exits or the pool changes (a message on its notifier: the last result taken,
    close, terminate).

    CPython's (3.11 here, the same since 3.8) also wakes it whenever its result pipe is
    readable, which that thread never reads: while a result is on its way (a chunk's are
    hundreds of kilobytes, read in pieces by another thread), it wakes at once, again and
    again. A warm extraction of 1000 pages woke it 2500 times: 45 ms of CPU, and as many
    handovers of the interpreter lock taken from this process' other threads.
    """

    def _get_sentinels(self) -> list:
        return [self._change_notifier._reader]


class WorkerStopped(RuntimeError):
    """A worker process that stopped while the pool was building: killed by the system (out of
    memory) or crashed. multiprocessing's pool would wait for its chunk forever
    (python/cpython#96062)."""

    def __init__(self, exitcode: int):
        self.exitcode = exitcode
        try:
            how = f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:  # a positive status, or a signal Python does not name
            how = f"ended with status {exitcode}"
        super().__init__(
            f"A worker process of the extraction {how}: SIGKILL usually means the machine ran "
            "out of memory. Give the run more memory, or fewer CPUs (one worker process runs "
            "per usable CPU: `taskset`, a container's CPU limit)."
        )


def terminate(pool: Pool) -> None:
    """Stop the worker processes at once. `Pool.terminate` stops them, then waits for its
    thread that sends chunks: when that thread was pickling a chunk as the pool began to stop,
    it then writes it to a pipe that nobody reads any more (a chunk is larger than a pipe
    holds) and waits forever. It is given `TERMINATE_WAIT` seconds, then left behind (a
    daemon thread, blocked), so that a stopped run never hangs."""
    stopping = threading.Thread(target=_terminated, args=(pool,), name="pool-stop", daemon=True)
    stopping.start()
    stopping.join(TERMINATE_WAIT)


def _terminated(pool: Pool) -> None:
    pool.terminate()
    pool.join()


class SampleBuilder:
    """Builds samples by chunks, in `processes` worker processes (a context manager: they start
    on entry and stop on exit, at once when leaving on an error or an interruption), or in this
    process when `processes` is 1 or processes cannot be forked."""

    def __init__(self, layout: DatasetFormat, config: TrainingConfig, processes: int = 1):
        self.layout = layout
        self.config = config
        forkable = "fork" in multiprocessing.get_all_start_methods()
        self.processes = processes if forkable else 1
        self.pool: Pool | None = None
        self.workers: list[multiprocessing.process.BaseProcess] = []  # the pool's, as started
        # SQL statements the chunks took, wherever they were read (the log's count)
        self.statements = 0

    def __enter__(self) -> SampleBuilder:
        if self.processes > 1:
            context = multiprocessing.get_context("fork")
            before = set(multiprocessing.active_children())
            self.pool = ChunkPool(self.processes, initializer=_start_worker, context=context)
            self.workers = [p for p in multiprocessing.active_children() if p not in before]
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        pool, self.pool = self.pool, None
        workers, self.workers = self.workers, []
        if pool is None:
            return
        # a worker killed while taking a chunk would keep the others from taking their stop
        if error_type is None and all(worker.exitcode is None for worker in workers):
            pool.close()
            pool.join()
        else:
            terminate(pool)

    def build_sets(self, sets: Iterable[SetBuild]) -> Iterator[tuple[int, Built | None]]:
        """Each set's elements' samples (or why each has none), in the order of its elements,
        set after set, each with its set's index, then (index, None) once the set's are all
        given. Elements are read by chunks (`ChunkSizes`); each sample's label file is written
        before the sample comes (`SetBuild.labels`). A set that may `overlap` sends its first
        chunks while the previous set's last ones are built: the worker processes do not wait
        for one set to end before the next begins. The sets are of one export: the chunk sizes
        go on from one set to the next (`ChunkSizes`), the rows per element of one telling
        those of the next (a set's pages are the corpus' as much as the previous set's)."""
        if self.pool is None:
            yield from self._build_here(sets)
            return
        window: deque[tuple[int, int, AsyncResult | None]] = deque()
        in_flight = 0
        sizes = ChunkSizes()  # the rows per element of one set tell those of the next

        def oldest() -> Iterator[tuple[int, Built | None]]:
            nonlocal in_flight
            index, count, result = window.popleft()
            if result is None:  # the set's last chunk was the one before
                yield index, None
                return
            in_flight -= 1
            done = _replayed(self._result(result))
            sizes.seen(count, done.rows)
            for built in done.built:
                yield index, built

        for index, chosen in enumerate(sets):
            while window and not chosen.overlap:
                yield from oldest()
            while chunk := chosen.elements.chunk(sizes.next()):
                self.statements += chunk.statements
                task = (self.layout, self.config, chunk, chosen.labels, chosen.truth())
                result = self.pool.apply_async(_build_logged, task)
                window.append((index, len(chunk.elements), result))
                in_flight += 1
                while in_flight >= AHEAD * self.processes:
                    yield from oldest()
            window.append((index, 0, None))
        while window:
            yield from oldest()

    def _build_here(self, sets: Iterable[SetBuild]) -> Iterator[tuple[int, Built | None]]:
        sizes = ChunkSizes()
        with ChunkReader() as reader:
            for index, chosen in enumerate(sets):
                while chunk := chosen.elements.chunk(sizes.next()):
                    self.statements += chunk.statements
                    done = build_chunk(
                        self.layout, self.config, chunk, reader, chosen.labels, chosen.truth()
                    )
                    sizes.seen(len(chunk.elements), done.rows)
                    for built in done.built:
                        yield index, built
                yield index, None

    def _result(self, result: AsyncResult) -> tuple[ChunkBuilt, list[logging.LogRecord]]:
        """A chunk's result, once it comes; raises `WorkerStopped` as soon as a worker process
        is seen stopped, as the pool would wait for its chunk forever (and, when it was killed
        while taking a chunk, no other worker could take one)."""
        while not result.ready():
            result.wait(WATCH_INTERVAL)
            stopped = [p.exitcode for p in self.workers if p.exitcode is not None]
            if stopped and not result.ready():
                raise WorkerStopped(stopped[0])
        return result.get()


def _replayed(result: tuple[ChunkBuilt, list[logging.LogRecord]]) -> ChunkBuilt:
    built, records = result
    for record in records:
        logging.getLogger(record.name).handle(record)
    return built
