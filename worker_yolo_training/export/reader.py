"""Reading the Arkindex SQLite export (arkindex-export's peewee models).

A set's dataset elements with their images are read with one streamed statement, in id order;
their descendants (or, in classify mode, their classifications) by chunks of elements, one
statement each, where the chunk is built (`chunks.py`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from arkindex_export import (
    Classification,
    Dataset,
    DatasetElement,
    Element,
    Image,
    ImageServer,
    open_database,
)
from arkindex_export import database as export_database
from peewee import JOIN, DatabaseError, fn

from worker_yolo_training.core import Skip, printable
from worker_yolo_training.export.chunks import ChunkReader, PageRows, SetElements
from worker_yolo_training.export.file import check_export_file, damaged

logger = logging.getLogger(__name__)

SHOWN_CHARACTERS = 80
# Elements read at once by `Export.iter_pages`
READ_CHUNK = 256


@dataclass(frozen=True)
class ImageInfo:
    """An image of the export, and how to ask its IIIF server for it."""

    id: str
    url: str
    width: int
    height: int
    iiif_version: int


@dataclass(frozen=True)
class DatasetInfo:
    id: str
    name: str
    sets: tuple[str, ...]


class Child(NamedTuple):
    """A descendant of a dataset element, as stored in the export (a named tuple: a page makes
    one per descendant, four times faster than a frozen dataclass, which sets each field through
    `object.__setattr__`)."""

    id: str
    type: str
    image_id: str | None
    polygon: Any  # a list of [x, y] when well formed (see `polygon_problem`), or None
    worker_run_id: str | None


@dataclass(frozen=True)
class ClassificationInfo:
    """A classification of a dataset element, as stored in the export (manual: no worker run)."""

    class_name: str
    confidence: float
    worker_run_id: str | None


@dataclass
class Page:
    """A dataset element (usually a page) and all its descendants (any depth, each once), or
    its classifications (classify mode)."""

    id: str
    name: str
    type: str
    polygon: Any  # a list of [x, y] when well formed (see `polygon_problem`), or None
    rotation_angle: int
    mirrored: bool
    image: ImageInfo | None
    children: list[Child] = field(default_factory=list)
    classifications: list[ClassificationInfo] = field(default_factory=list)


class StatementCounter:
    """Counts the SQL statements sent to the export while active (reads must stay bounded)."""

    def __init__(self):
        self.count = 0

    def __enter__(self) -> StatementCounter:
        original = export_database.execute_sql

        def counted(*args, **kwargs):
            self.count += 1
            return original(*args, **kwargs)

        export_database.execute_sql = counted
        return self

    def __exit__(self, *exc) -> None:
        del export_database.execute_sql  # back to the class' method


def split_sets(sets: str, dataset: str = "") -> tuple[str, ...]:
    """The export stores a dataset's sets as one comma-separated text; each set once, in order."""
    names = [name.strip() for name in (sets or "").split(",") if name.strip()]
    unique = tuple(dict.fromkeys(names))
    if len(unique) < len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        logger.warning(
            f"Dataset {dataset} lists the set(s) {', '.join(twice)} more than once: each is read once"
        )
    return unique


def _dataset_elements(dataset_id: str, set_name: str):
    return (
        DatasetElement.select(
            Element.id,
            Element.name,
            Element.type,
            Element.polygon,
            Element.rotation_angle,
            Element.mirrored,
            Image.id,
            Image.url,
            Image.width,
            Image.height,
            ImageServer.version,
        )
        .join(Element, on=(DatasetElement.element == Element.id))
        .join(Image, JOIN.LEFT_OUTER, on=(Element.image == Image.id))
        .join(ImageServer, JOIN.LEFT_OUTER, on=(Image.server == ImageServer.id))
        .where(DatasetElement.dataset == dataset_id, DatasetElement.set_name == set_name)
        .order_by(Element.id)
        .tuples()
        .iterator()
    )


class NotJSON(str):
    """Polygon text of the export that is not JSON, kept for the report."""


# A text with 16 digits in a row has its integers read as floats: a 400-digit integer becomes
# infinity, which the checks reject, instead of an int that overflows later. A decoder made once
# is faster than `json.loads`. The integers of other texts are read by the decoder itself, as
# ints: under 10^15, a float holds each exactly, and calling `float` on every one took two
# thirds of a polygon's time. The digits are found by a byte table (a regular expression took as
# long as the parsing): each digit a 0, anything else a space.
_DIGITS = bytes(48 if 48 <= code <= 57 else 32 for code in range(256))
_SIXTEEN_DIGITS = b"0" * 16
_LONG_NUMBERS_DECODER = json.JSONDecoder(parse_int=float)
_DECODER = json.JSONDecoder()


def _polygon(text: Any) -> Any:
    if type(text) is not str:
        text = _as_text(text)
    if not text:
        return None
    long_number = _SIXTEEN_DIGITS in text.encode(errors="replace").translate(_DIGITS)
    decoder = _LONG_NUMBERS_DECODER if long_number else _DECODER
    try:
        # The C scanner: a JSON value that spans the whole text (no surrounding spaces) is what
        # `decode` returns, without its Python-level steps
        value, end = decoder.scan_once(text, 0)
        if end == len(text):
            return value
    except (StopIteration, ValueError, RecursionError):
        pass  # `decode` says what is wrong
    try:
        return decoder.decode(text)
    except (ValueError, RecursionError):
        return NotJSON(text)


def _as_text(value: Any) -> str | None:
    """A value of the export's polygon column that is not text, as peewee's text fields read it:
    a BLOB decoded (what is not UTF-8 is replaced, and then is not JSON), a number written out."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def shorten(value: Any) -> str:
    """A value for a message, at most a line long (polygons can be megabytes)."""
    shown = repr(str(value) if isinstance(value, NotJSON) else value)
    return shown if len(shown) <= SHOWN_CHARACTERS else f"{shown[:SHOWN_CHARACTERS]}…"


def polygon_problem(polygon: Any) -> str | None:
    """What is wrong with a polygon as read from the export; None for a list of [x, y] finite
    numbers. A few checks per point: this runs on every dataset element."""
    if isinstance(polygon, NotJSON):
        return "is not JSON"
    if not isinstance(polygon, list):
        return "is not a list of [x, y] points"
    for point in polygon:
        if not isinstance(point, list) or len(point) != 2:
            return f"holds {shorten(point)}, not an [x, y] point"
        for value in point:
            if type(value) is not float and type(value) is not int:
                return f"holds {shorten(value)}, not a number"
            if not math.isfinite(value):
                return f"holds {value}, not a finite number"
    return None


def _positive_int(value: Any) -> bool:
    return type(value) is int and value > 0


def page_defect(page: Page) -> tuple[Skip, str] | None:
    """Why a dataset element cannot be used as the export stores it, with a warning to log (empty
    when the reason says it all); None when it can be used."""
    image = page.image
    if image is None:
        return Skip.NoImage, ""
    if not (_positive_int(image.width) and _positive_int(image.height)):
        return Skip.BadImageSize, (
            f"Element {printable(page.id)} skipped: its image {printable(image.id)} has width {shorten(image.width)} "
            f"and height {shorten(image.height)} in the export (positive integers expected)"
        )
    if page.polygon is None or page.polygon == []:
        return Skip.NoPolygon, ""
    problem = polygon_problem(page.polygon)
    if problem:
        return Skip.ElementMalformed, (
            f"Element {printable(page.id)} skipped: its polygon {problem}: {shorten(page.polygon)}"
        )
    return None


def page_of(rows: PageRows) -> Page:
    """A dataset element read from its rows (`ChunkReader.page_rows`)."""
    row, children, classifications = rows
    (element_id, name, type_, polygon, angle, mirrored) = row[:6]
    image_id, url, width, height, version = row[6:]
    return Page(
        id=element_id,
        name=name,
        type=type_,
        polygon=_polygon(polygon),
        rotation_angle=angle or 0,
        mirrored=bool(mirrored),
        image=ImageInfo(image_id, url, width, height, version or 2) if image_id else None,
        children=[
            Child(child_id, child_type, child_image, _polygon(child_polygon), worker_run)
            for _, child_id, child_type, child_image, child_polygon, worker_run in children
        ],
        classifications=[ClassificationInfo(*values[1:]) for values in classifications],
    )


class Export:
    """An open SQLite export (see `open_export`): its datasets, counts and pages."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def list_datasets(self) -> list[DatasetInfo]:
        return [
            DatasetInfo(dataset.id, dataset.name, split_sets(dataset.sets, f"{dataset.name}"))
            for dataset in Dataset.select().order_by(Dataset.name)
        ]

    def element_type_counts(self) -> dict[str, int]:
        """How many elements of each type the export holds."""
        query = Element.select(Element.type, fn.COUNT(Element.id)).group_by(Element.type)
        return dict(query.tuples())

    def has_element_type(self, name: str) -> bool:
        """Whether an element has the type `name` (read until the first one)."""
        return Element.select().where(Element.type.cast("TEXT") == name).exists()

    def has_classification(self, name: str) -> bool:
        """Whether a classification has the class `name` (read until the first one)."""
        return (
            Classification.select().where(Classification.class_name.cast("TEXT") == name).exists()
        )

    def classification_counts(self) -> dict[str, int]:
        """How many classifications of each class the export holds."""
        query = Classification.select(
            Classification.class_name, fn.COUNT(Classification.id)
        ).group_by(Classification.class_name)
        return dict(query.tuples())

    def set_sizes(self, dataset_id: str) -> dict[str, int]:
        """Number of elements in each set of a dataset (one statement)."""
        query = (
            DatasetElement.select(DatasetElement.set_name, fn.COUNT(DatasetElement.id))
            .where(DatasetElement.dataset == dataset_id)
            .group_by(DatasetElement.set_name)
        )
        return dict(query.tuples())

    def iter_pages(
        self,
        dataset_id: str,
        set_name: str,
        children: bool = True,
        classifications: bool = False,
    ) -> Iterator[Page]:
        """Every dataset element of a set, streamed in id order, with all its descendants
        (`children`) and/or its classifications (`classifications`), read here by chunks of
        `READ_CHUNK` elements."""
        elements = self.set_elements(dataset_id, set_name, children, classifications)
        with ChunkReader() as reader:
            while chunk := elements.chunk(READ_CHUNK):
                yield from map(page_of, reader.page_rows(chunk))

    def set_elements(
        self,
        dataset_id: str,
        set_name: str,
        children: bool = True,
        classifications: bool = False,
    ) -> SetElements:
        """The dataset elements of a set as the export's rows, each once, in id order, to be read
        by chunks (`SetElements.chunk`, `ChunkReader`) with their descendants (`children`) and/or
        their classifications (`classifications`)."""

        def once() -> Iterator[tuple]:
            previous_id = None
            for row in _dataset_elements(dataset_id, set_name):
                if row[0] != previous_id:  # an element listed twice in the set is read once
                    previous_id = row[0]
                    yield row

        return SetElements(self.path, once(), children, classifications)


@contextmanager
def open_export(path: Path) -> Iterator[Export]:
    """Check then open a SQLite export for reading; closed on exit.

    arkindex-export binds its models to one process-wide database: one export is open at a time.

    :raises ExportError: when the file is not a complete export of a supported version, or when
        a damaged part of it is met while reading.
    """
    check_export_file(path)
    open_database(Path(path))
    try:
        yield Export(path)
    except DatabaseError as error:
        raise damaged(path, error) from None
    finally:
        if not export_database.is_closed():
            export_database.close()
