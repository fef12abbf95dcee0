"""File names and writes: a name that stays in its folder, no truncated file after a failure, a
full disk that says where."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# A file name is at most 255 bytes on common file systems; keep room for suffixes
MAX_NAME = 100


def safe_name(element_id: str) -> str:
    """A file name for an element that cannot escape its folder, collide after sanitising, or
    exceed the file system's name length (long ids are shortened with a hash)."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", element_id)
    if name != element_id or not name or len(name) > MAX_NAME:
        name = f"{name[:MAX_NAME]}_{hashlib.sha1(element_id.encode()).hexdigest()[:8]}"
    return name


class DiskFullError(Exception):
    """No space left where the run writes; the message names the folder."""


# Refusals of hard links that hold for every file of the folder: copy from then on
NO_LINKS = (errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP)


class Linker:
    """Puts cached images into the dataset: a hard link (no copy) while the file system allows
    it; once it refuses (another file system, no hard links there), a copy, without asking again.
    A copy is written beside the target then renamed, so that no truncated image is left."""

    def __init__(self) -> None:
        self.copies = False

    def __call__(self, source: Path, target: Path) -> None:
        if not self.copies:
            try:
                _link(source, target)
                return
            except OSError as error:
                if error.errno in DISK_FULL:
                    raise
                self.copies = error.errno in NO_LINKS
        partial = target.with_name(f".{target.name}.partial")
        try:
            shutil.copyfile(source, partial)
            partial.replace(target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except FileExistsError:
        target.unlink()
        os.link(source, target)


def link_or_copy(source: Path, target: Path) -> None:
    """One file into the dataset (`Linker`, for a single file)."""
    Linker()(source, target)


def write_text(path: Path, text: str) -> None:
    """Write a file beside its final name then rename it: never a truncated label file."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(text)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


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
