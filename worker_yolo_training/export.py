"""Reading the Arkindex SQLite export (arkindex-export's peewee models).

A set is read with two streamed statements whatever its size: one for its dataset elements with
their images, one recursive query for all their descendants. Both are ordered by dataset element
id and merged, so one page and its objects are in memory at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from arkindex_export import (
    Dataset,
    DatasetElement,
    Element,
    ElementPath,
    Image,
    ImageServer,
    open_database,
)
from arkindex_export import database as export_database
from peewee import JOIN, fn


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


@dataclass(frozen=True)
class Child:
    """A descendant of a dataset element, as stored in the export."""

    id: str
    type: str
    image_id: str | None
    polygon: list | None
    worker_run_id: str | None


@dataclass
class Page:
    """A dataset element (usually a page) and all its descendants (any depth, each once)."""

    id: str
    name: str
    type: str
    polygon: list | None
    rotation_angle: int
    mirrored: bool
    image: ImageInfo | None
    children: list[Child] = field(default_factory=list)


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


def split_sets(sets: str) -> tuple[str, ...]:
    """The export stores a dataset's sets as one comma-separated text."""
    return tuple(name.strip() for name in (sets or "").split(",") if name.strip())


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


def _descendants(dataset_id: str, set_name: str):
    """(root id, descendant) rows for every dataset element of the set, each pair once.

    UNION (not UNION ALL) keeps a descendant once per root even when it has several parents, and
    stops on cycles.
    """
    roots = (
        ElementPath.select(DatasetElement.element.alias("root_id"), ElementPath.child)
        .join(DatasetElement, on=(ElementPath.parent == DatasetElement.element))
        .where(DatasetElement.dataset == dataset_id, DatasetElement.set_name == set_name)
        .cte("descendants", recursive=True, columns=("root_id", "child_id"))
    )
    deeper = ElementPath.alias()
    recursion = deeper.select(roots.c.root_id, deeper.child).join(
        roots, on=(deeper.parent == roots.c.child_id)
    )
    tree = roots.union(recursion)
    return (
        Element.select(
            tree.c.root_id,
            Element.id,
            Element.type,
            Element.image,
            Element.polygon,
            Element.worker_run,
        )
        .with_cte(tree)
        .from_(tree)
        .join(Element, on=(Element.id == tree.c.child_id))
        .order_by(tree.c.root_id, Element.id)
        .tuples()
        .iterator()
    )


def _polygon(text: str | None) -> list | None:
    return json.loads(text) if text else None


class Export:
    """An open SQLite export (see `open_export`): its datasets, counts and pages."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def list_datasets(self) -> list[DatasetInfo]:
        return [
            DatasetInfo(id=dataset.id, name=dataset.name, sets=split_sets(dataset.sets))
            for dataset in Dataset.select().order_by(Dataset.name)
        ]

    def element_type_counts(self) -> dict[str, int]:
        """How many elements of each type the export holds."""
        query = Element.select(Element.type, fn.COUNT(Element.id)).group_by(Element.type)
        return dict(query.tuples())

    def set_sizes(self, dataset_id: str) -> dict[str, int]:
        """Number of elements in each set of a dataset (one statement)."""
        query = (
            DatasetElement.select(DatasetElement.set_name, fn.COUNT(DatasetElement.id))
            .where(DatasetElement.dataset == dataset_id)
            .group_by(DatasetElement.set_name)
        )
        return dict(query.tuples())

    def iter_pages(self, dataset_id: str, set_name: str) -> Iterator[Page]:
        """Every dataset element of a set with all its descendants, streamed in id order."""
        descendants = _descendants(dataset_id, set_name)
        pending = next(descendants, None)
        previous_id = None
        for row in _dataset_elements(dataset_id, set_name):
            (element_id, name, type_, polygon, angle, mirrored) = row[:6]
            image_id, url, width, height, version = row[6:]
            if element_id == previous_id:
                continue
            previous_id = element_id
            page = Page(
                id=element_id,
                name=name,
                type=type_,
                polygon=_polygon(polygon),
                rotation_angle=angle or 0,
                mirrored=bool(mirrored),
                image=ImageInfo(image_id, url, width, height, version or 2) if image_id else None,
            )
            # Both streams are sorted by dataset element id: skip descendants of earlier roots
            while pending is not None and pending[0] < element_id:
                pending = next(descendants, None)
            while pending is not None and pending[0] == element_id:
                _, child_id, child_type, child_image, child_polygon, worker_run = pending
                page.children.append(
                    Child(child_id, child_type, child_image, _polygon(child_polygon), worker_run)
                )
                pending = next(descendants, None)
            yield page


@contextmanager
def open_export(path: Path) -> Iterator[Export]:
    """Open a SQLite export for reading; closed on exit.

    arkindex-export binds its models to one process-wide database: one export is open at a time.
    """
    open_database(Path(path))
    try:
        yield Export(path)
    finally:
        if not export_database.is_closed():
            export_database.close()
