"""File names and writes: a name that stays in its folder, no truncated file after a failure, a
full disk that says where."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# A file name is at most 255 bytes on common file systems; keep room for suffixes
MAX_NAME = 100
# What the common file systems (ext4, XFS, btrfs, APFS, NTFS) accept as one name, in bytes
NAME_MAX_BYTES = 255
# What is not a regular file, as a user would call it
FILE_KINDS = (
    (stat.S_ISDIR, "it is a directory"),
    (stat.S_ISFIFO, "it is a named pipe (FIFO)"),
    (stat.S_ISSOCK, "it is a socket"),
    (stat.S_ISCHR, "it is a character device"),
    (stat.S_ISBLK, "it is a block device"),
)


def printable(text: object) -> str:
    """A value from an export as a log line may show it: control characters (a newline, a NUL,
    an escape sequence) written as Python escapes, so that no id can split or forge a line."""
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in str(text))


def not_a_file(path: Path) -> str | None:
    """Why `path` cannot be read as a file (it is missing, or a directory, a FIFO, a device,
    a socket), or None for a regular file (a link to one included). Never opens it: opening a
    FIFO would wait for a writer."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        return error.strerror
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in FILE_KINDS if test(mode)), "it is not a regular file")


def safe_name(element_id: str) -> str:
    """A file name for an element that cannot escape its folder, collide after sanitising, or
    exceed the file system's name length (long ids are shortened with a hash)."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", element_id)
    if name != element_id or not name or len(name) > MAX_NAME:
        name = f"{name[:MAX_NAME]}_{hashlib.sha1(element_id.encode()).hexdigest()[:8]}"
    return name


class DiskFullError(Exception):
    """No space left where the run writes; the message names the folder."""


def partial_path(path: Path) -> Path:
    """Where `path` is written before it is renamed to its name, complete."""
    return path.with_name(f".{path.name}.partial")


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
        partial = partial_path(target)
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
    partial = partial_path(path)
    try:
        partial.write_text(text)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def move_if_same(previous: Path, path: Path, text: str) -> bool:
    """Move the file `previous` (from a previous run) to `path` when it holds `text` exactly, and
    say so; otherwise remove it. A rename neither writes data nor frees any: where a rerun's
    files are mostly the same, this is a fraction of removing the old file and writing the new
    one (the kernel time of a rerun's label files on ext4)."""
    try:
        same = previous.read_bytes() == text.encode()
    except OSError:  # not there (a new element, or another layout)
        return False
    if same:
        previous.replace(path)
    else:
        previous.unlink(missing_ok=True)
    return same


@contextmanager
def disk_space(folder: Path, needed: int | None = None) -> Iterator[None]:
    """A full disk stops the run with a message naming the folder (and the space the write
    needs, when known), not a traceback."""
    try:
        yield
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise
        size = f"; about {needed / 1e6:.1f} MB are needed" if needed is not None else ""
        raise DiskFullError(
            f"No space left to write in {folder} ({error.strerror}{size}): free some space, or "
            "choose another folder."
        ) from error
