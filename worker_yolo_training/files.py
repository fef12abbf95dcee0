"""Writing files so that a failure never leaves a truncated one, and a full disk says where."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(Exception):
    """No space left where the run writes; the message names the folder."""


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link a cached image into the dataset (no copy), or copy across file systems; a
    copy is written beside the target then renamed, so that no truncated image is left."""
    try:
        os.link(source, target)
    except FileExistsError:
        target.unlink()
        os.link(source, target)
    except OSError as error:
        if error.errno in DISK_FULL:
            raise
        partial = target.with_name(f".{target.name}.partial")
        try:
            shutil.copyfile(source, partial)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """Write a file beside its final name then rename it: never a truncated label file."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(text)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


@contextmanager
def disk_space(folder: Path) -> Iterator[None]:
    """A full disk stops the run with a message naming the folder, not a traceback."""
    try:
        yield
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise
        raise DiskFullError(
            f"No space left to write in {folder} ({error.strerror}): free some space, or "
            "choose another folder."
        ) from error
