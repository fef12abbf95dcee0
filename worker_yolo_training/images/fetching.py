"""Getting the images of a stream of samples with bounded concurrency, results in the samples'
order."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
    """Each sample with its image, in the order of `samples` (so that a cold run writes what a
    warm one does), at most 2×concurrency samples ahead of the one yielded; samples that `known`
    answers (already on disk) need no thread.

    Only the oldest download is waited for (`Future.result`), never the whole window; an
    exception in a thread is raised here, in the caller's thread, when its sample's turn comes.
    """
    window: deque[tuple[Item, Fetched | Future]] = deque()

    def oldest() -> tuple[Item, Fetched]:
        sample, outcome = window.popleft()
        return sample, outcome.result() if isinstance(outcome, Future) else outcome

    with thread_pool(concurrency) as pool:
        for sample in samples:
            outcome = known(sample)
            window.append(
                (sample, pool.submit(fetch, store, sample) if outcome is None else outcome)
            )
            # what is ready at the head goes at once; a full window waits for its oldest
            while window and (len(window) >= 2 * concurrency or _ready(window[0][1])):
                yield oldest()
        while window:
            yield oldest()


def _ready(outcome: Fetched | Future) -> bool:
    return not isinstance(outcome, Future) or outcome.done()
