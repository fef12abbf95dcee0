"""A set's dataset elements by chunks, and each chunk's descendants or classifications read where
the chunk is built.

The main process reads a set's dataset elements with their images (`SetElements`, one streamed
statement) and cuts them into chunks (`PageChunk`); the process that builds a chunk reads what
its elements hold with one statement (`ChunkReader`), on its own read-only connection. The rows
are not sent from one process to another, the processes read at once, and no statement waits for
a whole set's recursive query to be sorted before its first row.
"""

from __future__ import annotations

import functools
import itertools
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

from arkindex_export import Classification, Element, ElementPath
from peewee import Select

from worker_yolo_training.export.file import damaged

# A dataset element's row, its descendants' rows, its classifications' rows (`ChunkReader`), each
# of the latter two starting with the dataset element's id
PageRows = tuple[tuple, list[tuple], list[tuple]]


@dataclass(frozen=True)
class PageChunk:
    """Consecutive dataset elements of a set (their rows: id, name, type, polygon, rotation,
    mirror, then their image's), each once, in id order; what they hold is read where the chunk
    is built (`ChunkReader.page_rows`)."""

    export: Path
    elements: tuple[tuple, ...]
    children: bool = True
    classifications: bool = False

    @property
    def statements(self) -> int:
        """How many statements reading it takes."""
        return self.children + self.classifications


@dataclass(frozen=True)
class SetElements:
    """A set's dataset elements as the export's rows (each once, in id order), to be cut into
    chunks; with `children`, each chunk reads its elements' descendants, with `classifications`
    their classifications."""

    export: Path
    rows: Iterator[tuple]
    children: bool = True
    classifications: bool = False

    def chunk(self, size: int) -> PageChunk | None:
        """The next `size` elements (fewer at the end), None when all were taken."""
        elements = tuple(itertools.islice(self.rows, size))
        if not elements:
            return None
        return PageChunk(self.export, elements, self.children, self.classifications)


def _descendants(root_ids: list) -> Select:
    """(root id, descendant) rows for these dataset elements, each pair once, by root then
    descendant id.

    The children are read apart from the deeper descendants: only the grandchildren, when there
    are any, start a recursion (a recursion from the children cost a fifth more of the
    statement's time, for pages with no grandchild). UNION (not UNION ALL) keeps a descendant
    once per root even when it has several parents, and stops on cycles.
    """
    child, grandchild, deeper_path = ElementPath.alias(), ElementPath.alias(), ElementPath.alias()
    deeper = (
        child.select(child.parent.alias("root_id"), grandchild.child.alias("child_id"))
        .join(grandchild, on=(grandchild.parent == child.child))
        .where(child.parent.in_(root_ids))
        .cte("deeper", recursive=True, columns=("root_id", "child_id"))
    )
    recursion = deeper_path.select(deeper.c.root_id, deeper_path.child).join(
        deeper, on=(deeper_path.parent == deeper.c.child_id)
    )
    deeper = deeper.union(recursion)
    children = ElementPath.select(ElementPath.parent, ElementPath.child).where(
        ElementPath.parent.in_(root_ids)
    )
    below = ElementPath.select(deeper.c.root_id, deeper.c.child_id).from_(deeper)
    tree = children.union(below).cte("tree", columns=("root_id", "child_id"))
    # Text as peewee's text fields read it: a BLOB (a hand-made export may hold one) decoded.
    # Not the polygon: casting its text costs a third of the statement's time, and `_polygon`
    # reads any value as text
    text = (Element.id, Element.type, Element.image, Element.worker_run)
    id_, type_, image, worker_run = (column.cast("TEXT") for column in text)
    return (
        Element.select(tree.c.root_id, id_, type_, image, Element.polygon, worker_run)
        .with_cte(deeper, tree)
        .from_(tree)
        .join(Element, on=(Element.id == tree.c.child_id))
        .order_by(tree.c.root_id, Element.id)
    )


# What the classifications' columns become, as peewee's fields read them
_CLASSIFICATION_FIELDS = (
    Classification.element,
    Classification.class_name,
    Classification.confidence,
    Classification.worker_run,
)


def _classifications(root_ids: list) -> Select:
    """(element id, class name, confidence, worker run) of every classification of these
    dataset elements, by element id."""
    return (
        Classification.select(*_CLASSIFICATION_FIELDS)
        .where(Classification.element.in_(root_ids))
        .order_by(Classification.element, Classification.id)
    )


@functools.cache
def _sql(query: Callable[[list], Select], count: int) -> tuple[str, int]:
    """The SQL text of `query` for `count` ids, and how many times it lists them: written once
    per query and count (peewee takes 2 ms to write the descendants' statement, a tenth of what
    SQLite takes to run it), the ids given as its parameters."""
    ids = [f"id {index}" for index in range(count)]
    sql, params = query(ids).sql()
    lists = len(params) // max(count, 1)
    if params != ids * lists:
        raise ValueError(f"{query.__name__}'s parameters are not its ids, in order")
    return sql, lists


def _statement(query: Callable[[list], Select], ids: list) -> tuple[str, list]:
    sql, lists = _sql(query, len(ids))
    return sql, ids * lists


class _Groups:
    """A stream of rows ordered by their first value (a dataset element id), taken one element at
    a time while the dataset elements are read in the same order."""

    def __init__(self, rows: list[tuple]):
        # (element id, its rows): grouped by itertools, not row by row in Python
        self.groups = itertools.groupby(rows, key=itemgetter(0))
        self.pending = next(self.groups, None)

    def take(self, element_id: str) -> list[tuple]:
        """The rows of `element_id`, as they are (the element id first: `page_of` skips it);
        earlier elements' rows skipped."""
        while self.pending is not None and self.pending[0] < element_id:
            self.pending = next(self.groups, None)
        if self.pending is None or self.pending[0] != element_id:
            return []
        group = list(self.pending[1])
        self.pending = next(self.groups, None)
        return group


class ChunkReader:
    """Reads what chunks' elements hold, on one read-only connection per export, opened at its
    first chunk and kept (its page cache serves the next chunks: a connection per chunk cost a
    fifth more) until `close`. A context manager."""

    def __init__(self) -> None:
        self.connections: dict[Path, sqlite3.Connection] = {}
        self.statements = 0  # run so far

    def __enter__(self) -> ChunkReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()
        self.connections.clear()

    def page_rows(self, chunk: PageChunk) -> list[PageRows]:
        """Each element's rows (`PageRows`), in the chunk's order.

        :raises ExportError: when the export is damaged where the chunk's rows are.
        """
        ids = [row[0] for row in chunk.elements]
        try:
            children = (
                self._rows(chunk.export, *_statement(_descendants, ids)) if chunk.children else []
            )
            labels = self._classification_rows(chunk.export, ids) if chunk.classifications else []
        except sqlite3.DatabaseError as error:
            raise damaged(chunk.export, error) from None
        descendants, classifications = _Groups(children), _Groups(labels)
        return [
            (row, descendants.take(row[0]), classifications.take(row[0])) for row in chunk.elements
        ]

    def _rows(self, export: Path, sql: str, params: list) -> list[tuple]:
        connection = self.connections.get(export)
        if connection is None:
            uri = f"{Path(export).resolve().as_uri()}?mode=ro"
            # Used by one thread at a time, but maybe closed by another (a generator that holds
            # the reader, finalised by the garbage collector where it runs)
            connection = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self.connections[export] = connection
        self.statements += 1
        with closing(connection.execute(sql, params)) as cursor:
            return cursor.fetchall()

    def _classification_rows(self, export: Path, ids: list) -> list[tuple]:
        converters = [field.python_value for field in _CLASSIFICATION_FIELDS]
        return [
            tuple(convert(value) for convert, value in zip(converters, row, strict=True))
            for row in self._rows(export, *_statement(_classifications, ids))
        ]
