"""Checking an export file before reading it: a complete SQLite database, with the tables and
columns our queries read, of an export version this worker knows. Only the header and the schema
are read (about a millisecond), so the check runs at each opening."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

# Export versions whose schema holds every column below: 9 is what arkindex-export's
# `create_database` builds in our tests and sample, 10 what arkindex-cli 0.5.0 writes, 11 the
# current version in Arkindex's export documentation. arkindex-export 0.2.5 itself names no version.
SUPPORTED_EXPORT_VERSIONS = range(9, 12)
# What our queries read (older exports lack `image_server.version`, for instance)
REQUIRED_COLUMNS = {
    "export_version": ("version",),
    "dataset": ("id", "name", "sets"),
    "dataset_element": ("id", "dataset_id", "element_id", "set_name"),
    "element": (
        "id", "name", "type", "image_id", "polygon", "rotation_angle", "mirrored", "worker_run_id",
    ),
    "element_path": ("parent_id", "child_id"),
    "image": ("id", "server_id", "url", "width", "height"),
    "image_server": ("id", "version"),
    "classification": ("element_id", "class_name", "confidence", "worker_run_id"),
}  # fmt: skip
SQLITE_HEADER = b"SQLite format 3\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class ExportError(Exception):
    """The export file cannot be read as an Arkindex export; the message names it and says why."""


def damaged(path: Path, error: Exception) -> ExportError:
    """The error for a damaged part of an export met while reading it."""
    return ExportError(f"Export {path} is damaged ({error}): download it again")


def _check_header(path: Path) -> None:
    """A SQLite file, complete: its header tells its page count and size (no full read)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            header = file.read(100)
    except OSError as error:
        raise ExportError(f"Export {path} cannot be read: {error.strerror}") from None
    if size == 0:
        raise ExportError(f"Export {path} is empty (0 bytes): download it again")
    if header.startswith(ZSTD_MAGIC):
        raise ExportError(f"Export {path} is zstd-compressed: decompress it (unzstd) first")
    if not header.startswith(SQLITE_HEADER) or len(header) < 100:
        raise ExportError(f"Export {path} is not a SQLite database (an Arkindex export is one)")
    page_size = int.from_bytes(header[16:18], "big")
    expected = int.from_bytes(header[28:32], "big") * (65536 if page_size == 1 else page_size)
    # The page count is valid when the change counter matches its "version valid for" copy
    if header[24:28] == header[92:96] and expected > size:
        raise ExportError(
            f"Export {path} is truncated: {size} bytes of {expected}; download it again"
        )


def _read_schema(connection: sqlite3.Connection) -> tuple[list[str], list]:
    """Missing tables or columns, and the rows of `export_version`."""
    missing = []
    for table, columns in REQUIRED_COLUMNS.items():
        present = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
        if not present:
            missing.append(f"table {table}")
        else:
            missing += [f"column {table}.{column}" for column in columns if column not in present]
    if missing:
        return missing, []
    return [], connection.execute("SELECT DISTINCT version FROM export_version").fetchall()


def check_export_file(path: Path) -> int:
    """Check that a file is a complete Arkindex export of a version this worker reads, before
    anything else reads it; returns its version.

    :raises ExportError: naming the file and what is wrong.
    """
    path = Path(path)
    _check_header(path)
    uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        with closing(sqlite3.connect(uri, uri=True)) as connection:
            missing, versions = _read_schema(connection)
    except sqlite3.DatabaseError as error:
        raise ExportError(f"Export {path} is not a readable SQLite database: {error}") from None
    supported = f"{SUPPORTED_EXPORT_VERSIONS[0]} to {SUPPORTED_EXPORT_VERSIONS[-1]}"
    if missing:
        raise ExportError(
            f"Export {path} is not an Arkindex export this worker can read: it lacks "
            f"{', '.join(missing)} (export versions {supported} have them)"
        )
    if len(versions) != 1:
        found = ", ".join(str(row[0]) for row in versions) or "none"
        raise ExportError(f"Export {path} has no single export version (found: {found})")
    (version,) = versions[0]
    if version not in SUPPORTED_EXPORT_VERSIONS:
        newer = isinstance(version, int) and version > SUPPORTED_EXPORT_VERSIONS[-1]
        hint = "update worker-yolo-training" if newer else "export the dataset again"
        raise ExportError(
            f"Export {path} has version {version!r}, this worker reads export versions "
            f"{supported}: {hint}"
        )
    return version
