"""Getting the images of a stream of samples with bounded concurrency, results as they come."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from worker_yolo_training.core import Frame
from worker_yolo_training.images.request import CropRequest, ImageError
from worker_yolo_training.images.store import CropStore


class Fetchable(Protocol):
    """What a fetch needs of an element (the extraction's `Sample`)."""

    request: CropRequest
    frame: Frame


Item = TypeVar("Item", bound=Fetchable)


@dataclass(frozen=True)
class Fetched:
    """The outcome of getting one element's image."""

    path: Path | None = None
    cached: bool = False
    reused: bool = False
    error: ImageError | None = None


def fetch(store: CropStore, sample: Item) -> Fetched:
    """One sample's image from the store (cache or source); a failure is a value, not raised."""
    try:
        path, cached = store.get(sample.request, sample.frame)
    except ImageError as error:
        return Fetched(error=error)
    return Fetched(path, cached=cached)


@contextmanager
def thread_pool(concurrency: int) -> Iterator[ThreadPoolExecutor]:
    """Threads for downloads; when interrupted or failing, queued downloads are dropped, not
    waited for."""
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="image")
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def fetch_all(
    samples: Iterable[Item],
    store: CropStore,
    known: Callable[[Item], Fetched | None],
    concurrency: int,
) -> Iterator[tuple[Item, Fetched]]:
    """Each sample with its image, at most 2×concurrency downloads in flight; samples that
    `known` answers (already on disk) need no thread.

    Threads report to one queue: waiting on it costs nothing per pending download (unlike
    `concurrent.futures.wait`, which arms every pending future at each call). An exception in a
    thread is raised here, in the caller's thread.
    """
    results: queue.SimpleQueue = queue.SimpleQueue()
    pending = 0

    def work(sample: Item) -> None:
        try:
            results.put((sample, fetch(store, sample)))
        except BaseException as error:  # re-raised in the caller's thread, not lost
            results.put((sample, error))

    def collect(block: bool) -> Iterator[tuple[Item, Fetched]]:
        nonlocal pending
        while pending and (block or not results.empty()):
            sample, outcome = results.get()
            pending -= 1
            if isinstance(outcome, BaseException):
                raise outcome
            yield sample, outcome
            block = False

    with thread_pool(concurrency) as pool:
        for sample in samples:
            outcome = known(sample)
            if outcome is not None:
                yield sample, outcome
                continue
            pool.submit(work, sample)
            pending += 1
            yield from collect(block=pending >= 2 * concurrency)
        while pending:
            yield from collect(block=True)
