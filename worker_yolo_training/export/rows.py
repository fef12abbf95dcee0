"""Rows of the export read ahead by another thread."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from queue import Empty, Queue

from arkindex_export import database as export_database

# Descendants' rows read ahead by another thread: batches of this many rows, at most this many
# batches waiting
READ_AHEAD_ROWS = 1024
READ_AHEAD_BATCHES = 8


def read_ahead(statement: Callable[[], Iterable[tuple]]) -> Iterator[tuple]:
    """The rows of a statement run and stepped in another thread, on its own connection (closed
    at the end), in order: SQLite leaves the interpreter to other threads while it steps, so
    the rows are read while this thread uses them. An error there is raised here."""
    rows: Queue = Queue(READ_AHEAD_BATCHES)
    stop = threading.Event()

    def read() -> None:
        try:
            cursor = statement()
            while not stop.is_set():
                batch = cursor.fetchmany(READ_AHEAD_ROWS)
                rows.put(batch)
                if not batch:
                    break
        except BaseException as error:  # raised in the reading thread
            rows.put(error)
        finally:
            export_database.close()

    reader = threading.Thread(target=read, name="export-rows", daemon=True)
    reader.start()
    try:
        while batch := rows.get():
            if isinstance(batch, BaseException):
                raise batch
            yield from batch
    finally:
        stop.set()
        while reader.is_alive():  # a reader waiting to put a batch is let through
            with contextlib.suppress(Empty):
                rows.get(timeout=0.05)
