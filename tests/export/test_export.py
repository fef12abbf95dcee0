"""Reading exports: descendants at any depth, each once, in a bounded number of statements."""

import json
import math
import random
import re
import sqlite3
import threading

import pytest
from arkindex_export import database

from tests.exports import ExportBuilder, rectangle
from worker_yolo_training import export
from worker_yolo_training.export import reader as export_reader


@pytest.fixture
def builder(tmp_path):
    builder = ExportBuilder(tmp_path / "export.sqlite")
    yield builder
    builder.close()


def test_pages_with_grandchildren_multi_parent_children_and_no_image(builder):
    image = builder.image(1000, 800)
    dataset = builder.dataset()
    page = builder.element(
        "page", rectangle(0, 0, 1000, 800), image, rotation_angle=90, mirrored=True
    )
    zone = builder.element("text_zone", rectangle(10, 10, 500, 500), image, parents=(page,))
    line = builder.element("text_line", rectangle(20, 20, 100, 20), image, parents=(zone,))
    # a line reachable twice: child of the zone and of the page
    shared = builder.element("text_line", rectangle(20, 60, 100, 20), image, parents=(zone, page))
    no_image = builder.element("page")
    builder.add_to_set(dataset, "train", page)
    builder.add_to_set(dataset, "train", no_image)
    builder.add_to_set(dataset, "test", page)

    with export.open_export(builder.path) as opened:
        pages = {page.id: page for page in opened.iter_pages(dataset, "train")}
        assert set(pages) == {page, no_image}
        children = sorted(child.id for child in pages[page].children)
        assert children == sorted([zone, line, shared])
        assert pages[page].rotation_angle == 90 and pages[page].mirrored is True
        assert pages[page].image.width == 1000 and pages[page].image.iiif_version == 2
        assert pages[no_image].image is None and pages[no_image].children == []
        assert [p.id for p in opened.iter_pages(dataset, "test")] == [page]
        assert opened.set_sizes(dataset) == {"train": 2, "test": 1}
        assert opened.element_type_counts() == {"page": 2, "text_zone": 1, "text_line": 2}
        assert [opened.has_element_type(name) for name in ("text_zone", "zone")] == [True, False]
        assert opened.list_datasets()[0].sets == ("train", "dev", "test")


@pytest.mark.parametrize("pages", [3, 60])
def test_statements_grow_with_chunks_not_with_pages_or_descendants(tmp_path, pages):
    builder = ExportBuilder(tmp_path / f"export-{pages}.sqlite")
    dataset = builder.dataset()
    with database.atomic():
        for _ in range(pages):
            image = builder.image(100, 100)
            page = builder.element("page", rectangle(0, 0, 100, 100), image)
            for _ in range(3):
                zone = builder.element("zone", rectangle(1, 1, 10, 10), image, parents=(page,))
                builder.element("text_line", rectangle(1, 1, 5, 5), image, parents=(zone,))
            builder.add_to_set(dataset, "train", page)
    builder.close()
    with (
        export.open_export(builder.path) as opened,
        export.StatementCounter() as counter,
        export.ChunkReader() as reader,
    ):
        elements = opened.set_elements(dataset, "train")
        chunk = elements.chunk(100)
        assert elements.chunk(100) is None
        rows = reader.page_rows(chunk)
    assert counter.count == 1  # the set's elements
    assert reader.statements == chunk.statements == 1  # their descendants, at any depth
    assert len(rows) == pages and {len(children) for _, children, _ in rows} == {6}


def forest(builder, pages: int, seed: int) -> tuple[str, dict[str, list[str]]]:
    """A set of pages whose descendants (three levels, some with two parents, a cycle) are created
    in random order; each page with the ids of its descendants, each once, computed here."""
    rng = random.Random(seed)
    image = builder.image(100, 100)
    dataset = builder.dataset()
    children: dict[str, list[str]] = {}
    with database.atomic():
        roots = [builder.element("page", rectangle(0, 0, 100, 100), image) for _ in range(pages)]
        nodes = list(roots)
        for _ in range(pages * 6):
            parent = rng.choice(nodes)
            child = builder.element("text_line", rectangle(1, 1, 9, 9), image, parents=(parent,))
            children.setdefault(parent, []).append(child)
            nodes.append(child)
            if rng.random() < 0.2:  # a second parent, maybe under another page
                other = rng.choice(nodes[:-1])
                if other == parent:
                    continue
                builder.link(other, child)
                children.setdefault(other, []).append(child)
        # a cycle: a page below one of its own descendants
        below = children[roots[0]][0]
        builder.link(below, roots[0])
        children.setdefault(below, []).append(roots[0])
        for root in rng.sample(roots, len(roots)):
            builder.add_to_set(dataset, "train", root)
    expected = {}
    for root in roots:
        seen, queue = set(), list(children.get(root, []))
        while queue:
            node = queue.pop()
            if node not in seen:
                seen.add(node)
                queue.extend(children.get(node, []))
        expected[root] = sorted(seen)
    return dataset, expected


@pytest.mark.parametrize("chunk", [3, 256])
def test_descendants_come_page_by_page_each_once_in_id_order(builder, monkeypatch, chunk):
    # read by chunks of `chunk` elements; some pages are listed twice in the set (read once)
    monkeypatch.setattr(export_reader, "READ_CHUNK", chunk)
    dataset, expected = forest(builder, pages=40, seed=5)
    for page in sorted(expected)[::7]:
        builder.add_to_set(dataset, "train", page)
    with export.open_export(builder.path) as opened:
        pages = list(opened.iter_pages(dataset, "train"))
    assert [page.id for page in pages] == sorted(expected)
    assert {page.id: [child.id for child in page.children] for page in pages} == expected
    # the page in a cycle is its own descendant, as the export says
    assert any(page.id in [child.id for child in page.children] for page in pages)


def test_descendant_text_stored_as_blobs_reads_as_text(builder):
    # Descendants are read from the SQLite cursor, not through peewee: a BLOB in a text column (a
    # hand-made export) must still read as peewee's text fields read it
    image = builder.image(100, 100)
    dataset = builder.dataset()
    page = builder.element("page", rectangle(0, 0, 100, 100), image)
    line = builder.element("text_line", rectangle(10, 10, 50, 20), image, parents=(page,))
    builder.add_to_set(dataset, "train", page)
    builder.close()
    with sqlite3.connect(builder.path) as connection:
        connection.execute(
            "UPDATE element SET type = CAST(type AS BLOB), polygon = CAST(polygon AS BLOB), "
            "image_id = CAST(image_id AS BLOB) WHERE id = ?",
            (line,),
        )
        (stored,) = connection.execute("SELECT typeof(polygon) FROM element WHERE id = ?", (line,))
        assert stored == ("blob",)
    connection.close()
    with export.open_export(builder.path) as opened:
        (read,) = opened.iter_pages(dataset, "train")
    (child,) = read.children
    assert (child.id, child.type, child.image_id) == (line, "text_line", image.id)
    assert child.polygon == rectangle(10, 10, 50, 20)


def test_descendant_polygons_not_stored_as_text_are_read_as_their_text(builder):
    # A hand-made export may hold a number, or bytes that are not UTF-8, in the polygon column:
    # read as text (what peewee does), they are polygons the checks then report, not a crash
    image = builder.image(100, 100)
    dataset = builder.dataset()
    page = builder.element("page", rectangle(0, 0, 100, 100), image)
    number = builder.element("text_line", rectangle(10, 10, 50, 20), image, parents=(page,))
    garbled = builder.element("text_line", rectangle(10, 30, 50, 40), image, parents=(page,))
    builder.add_to_set(dataset, "train", page)
    builder.close()
    with sqlite3.connect(builder.path) as connection:
        connection.execute("UPDATE element SET polygon = 7 WHERE id = ?", (number,))
        connection.execute("UPDATE element SET polygon = x'5bff5d' WHERE id = ?", (garbled,))
    connection.close()
    with export.open_export(builder.path) as opened:
        (read,) = opened.iter_pages(dataset, "train")
    polygons = {child.id: child.polygon for child in read.children}
    # the number as JSON reads it; the bytes decoded, U+FFFD for what is not UTF-8: not JSON
    assert polygons[number] == 7.0
    assert str(polygons[garbled]) == "[\ufffd]"
    assert not isinstance(polygons[garbled], list)


# Polygon texts as an export may hold them, and what reading each alone gives
POLYGON_TEXTS = [
    "[[0, 0], [10, 0], [10, 10]]",
    " [[1, 2], [3, 4], [5, 6]] ",  # spaces around
    "[[1e999, 0], [0, 1], [1, 1]]",  # infinity: rejected later, not here
    "[[12345678901234567890123, 0]]",  # an integer read as a float
    '[[0, "a\\u00e9"]]',
    "1,2",  # these three are not JSON alone, but joined they would be: [1,2,[3,4]]
    "[3",
    "4]",
    "[[NaN, 0], [1, 1], [0, 1]]",  # JSON to Python, not to SQLite
    "not json",
    "",
]


@pytest.mark.parametrize("texts", [POLYGON_TEXTS[:5], POLYGON_TEXTS, POLYGON_TEXTS[5:8]])
def test_polygon_texts_are_read_as_json_or_kept_as_text(builder, texts):
    image = builder.image(100, 100)
    dataset = builder.dataset()
    page = builder.element("page", rectangle(0, 0, 100, 100), image)
    line = rectangle(0, 0, 1, 1)
    children = [builder.element("text_line", line, image, parents=(page,)) for _ in texts]
    builder.add_to_set(dataset, "train", page)
    builder.close()
    with sqlite3.connect(builder.path) as connection:
        for child, text in zip(children, texts, strict=True):
            connection.execute("UPDATE element SET polygon = ? WHERE id = ?", (text, child))
    with export.open_export(builder.path) as opened:
        (read,) = opened.iter_pages(dataset, "train")
    polygons = {child.id: child.polygon for child in read.children}
    for child, text in zip(children, texts, strict=True):
        # integers as JSON reads them, but in a text with 16 digits in a row (an integer not
        # exact as a float, or too large for one) as floats: infinity, which the checks reject
        long_number = re.search(r"\d{16}", text) is not None
        decoder = json.JSONDecoder(parse_int=float if long_number else int)
        try:
            expected = decoder.decode(text) if text else None
        except ValueError:
            expected = text  # kept, for the report
        assert polygons[child] == expected or (
            math.isnan(expected[0][0]) and math.isnan(polygons[child][0][0])
        ), text
        # text that is not JSON is kept as text
        assert isinstance(polygons[child], str) == isinstance(expected, str), text
        assert repr(polygons[child]) == repr(expected) or isinstance(expected, str), text
    read_as = {text: polygons[child] for child, text in zip(children, texts, strict=True)}
    if POLYGON_TEXTS[0] in read_as:
        assert repr(read_as[POLYGON_TEXTS[0]]) == "[[0, 0], [10, 0], [10, 10]]"
        assert repr(read_as[POLYGON_TEXTS[3]]) == "[[1.2345678901234568e+22, 0.0]]"


def test_a_reader_left_by_its_thread_closes_from_another(builder):
    # The reader of a build abandoned mid-set is closed where the garbage collector runs
    dataset, expected = forest(builder, pages=3, seed=2)
    builder.close()
    reader = export.ChunkReader()
    with export.open_export(builder.path) as opened:
        rows = reader.page_rows(opened.set_elements(dataset, "train").chunk(10))
    assert [len(children) for _, children, _ in rows] == [len(expected[row[0]]) for row, *_ in rows]
    closing = threading.Thread(target=reader.close)
    closing.start()
    closing.join()
    assert reader.connections == {}
