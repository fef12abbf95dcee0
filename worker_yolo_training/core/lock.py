"""One run at a time in an output folder: a lock the kernel releases when its process ends.

`flock` is tied to the open file: a run killed by any signal (even SIGKILL) leaves the file but
not the lock, so a stale lock never blocks the next run. The file says who holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class OutputFolderError(Exception):
    """The output folder cannot be used by this run; the message names it and what to do."""


def _holder(file) -> str:
    file.seek(0)
    try:
        holder = json.loads(file.read() or "{}")
        return f"pid {holder['pid']} on {holder['host']}, started {holder['started']}"
    except (ValueError, KeyError, TypeError):
        return "a process that did not say who it is"


@contextmanager
def output_lock(path: Path) -> Iterator[None]:
    """Hold the lock at `path` for the block.

    :raises OutputFolderError: another live process holds it (naming its pid and start).
    """
    with open(path, "a+") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputFolderError(
                f"{path.parent} is in use by another run ({_holder(file)}): wait for it to "
                "end, or choose another --output"
            ) from None
        file.truncate(0)
        started = time.strftime("%Y-%m-%d %H:%M:%S %z")
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": started}
        file.write(json.dumps(holder))
        file.flush()
        yield
