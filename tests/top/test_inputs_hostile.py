"""Hostile and broken inputs (issue 13, input side): broken export files, malformed polygons and
image sizes, duplicate set names, broken configuration files and training arguments. Each case
was reproduced on main first (a traceback, a silent wrong result, or minutes of CPU)."""

import logging
import sqlite3
import time

import pytest
from arkindex_export import database

from tests.exports import ExportBuilder, damaged_at_the_descendants, rectangle
from tests.helpers import run_local, summary, write_config
from worker_yolo_training.config import (
    MAX_CONFIG_BYTES,
    ConfigurationError,
    TrainingConfig,
    read_config_file,
)
from worker_yolo_training.core import Box, Skip
from worker_yolo_training.export import (
    SUPPORTED_EXPORT_VERSIONS,
    ExportError,
    check_export_file,
    open_export,
)
from worker_yolo_training.modes import spec_for

CONFIG = TrainingConfig(class_names=("text_line",), image_size=320)


def build_sample(page, config):
    return spec_for(config.mode).build_samples([page], config)[0]


def small_export(path, sets=("train", "dev", "test")) -> tuple[str, str]:
    """An export with one page (and one line) per set; returns the dataset id and the train page."""
    builder = ExportBuilder(path)
    dataset = builder.dataset(sets=sets)
    for set_name in dict.fromkeys(sets):
        image = builder.image(600, 800)
        page = builder.element("page", rectangle(50, 40, 500, 700), image, element_id=set_name)
        builder.element("text_line", rectangle(100, 100, 200, 40), image, parents=(page,))
        builder.add_to_set(dataset, set_name, page)
    builder.close()
    return dataset, "train"


def edit(path, *statements) -> None:
    """What a user (or a bad tool) does to an export with the sqlite3 shell."""
    with sqlite3.connect(path) as connection:
        for statement in statements:
            connection.execute(statement)
    connection.close()


@pytest.fixture
def built(tmp_path):
    path = tmp_path / "export.sqlite"
    dataset, page = small_export(path)
    return path, dataset, page


# ---------------------------------------------------------------- export files


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
        (lambda p: p.write_text("<html>Not found</html>"), "is not a SQLite database"),
        (lambda p: p.write_bytes(p.read_bytes()[:5000]), "is truncated: 5000 bytes of"),
        (lambda p: p.write_bytes(b"\x28\xb5\x2f\xfd" + p.read_bytes()), "is zstd-compressed"),
        (lambda p: edit(p, "DROP TABLE dataset_element"), "lacks table dataset_element"),
        (
            lambda p: edit(p, "ALTER TABLE image_server DROP COLUMN version"),
            "lacks column image_server.version",
        ),
        (lambda p: edit(p, "DELETE FROM export_version"), "has no single export version"),
        (lambda p: edit(p, "UPDATE export_version SET version = 99"), "version 99, this worker"),
        (lambda p: edit(p, "UPDATE export_version SET version = 8"), "version 8, this worker"),
        (lambda p: edit(p, "UPDATE export_version SET version = 'x'"), "version 'x', this worker"),
    ],
)
def test_broken_export_files_are_refused_at_open_naming_the_file(built, damage, expected):
    path = built[0]
    damage(path)
    with pytest.raises(ExportError) as error, open_export(path) as opened:
        opened.list_datasets()
    message = str(error.value)
    assert str(path) in message and expected in message


def test_newer_and_older_versions_say_what_to_do_and_which_are_supported(built):
    path, _, _ = built
    edit(path, "UPDATE export_version SET version = 12")
    with pytest.raises(ExportError, match="reads export versions 9 to 11: update worker-yolo"):
        check_export_file(path)
    edit(path, "UPDATE export_version SET version = 8")
    with pytest.raises(ExportError, match="9 to 11: export the dataset again"):
        check_export_file(path)


@pytest.mark.parametrize("version", list(SUPPORTED_EXPORT_VERSIONS))
def test_supported_versions_open(built, version):
    path, dataset, _ = built
    edit(path, f"UPDATE export_version SET version = {version}")
    assert check_export_file(path) == version
    with open_export(path) as opened:
        assert [page.id for page in opened.iter_pages(dataset, "train")] == ["train"]


def test_the_check_reads_no_more_than_the_schema(tmp_path):
    """The check runs at each opening: it must not scan the file."""
    path = tmp_path / "big.sqlite"
    builder = ExportBuilder(path)
    with database.atomic():
        image = builder.image(100, 100)
        for index in range(3000):
            builder.element("page", rectangle(0, 0, 10, 10), image, name=f"{index:>200}")
    builder.close()
    started = time.perf_counter()
    for _ in range(10):
        check_export_file(path)
    assert (time.perf_counter() - started) / 10 < 0.02


def test_damage_met_while_reading_is_an_export_error(tmp_path):
    path = tmp_path / "export.sqlite"
    builder = ExportBuilder(path)
    dataset = builder.dataset()
    image = builder.image(1000, 1000)
    for _ in range(400):
        page = builder.element("page", rectangle(0, 0, 500, 500), image, name="p" * 200)
        builder.add_to_set(dataset, "train", page)
    builder.close()
    data = bytearray(path.read_bytes())
    # Garbage over the last pages (element rows), the header and schema pages intact
    data[-40960:] = b"\xff" * 40960
    path.write_bytes(bytes(data))
    check_export_file(path)
    with pytest.raises(ExportError, match=f"Export {path} is damaged"), open_export(path) as opened:
        list(opened.iter_pages(dataset, "train"))


def test_cli_broken_export_exits_2_with_a_clean_message(tmp_path):
    path = tmp_path / "export.sqlite"
    path.write_text("not a database")
    config = write_config(tmp_path / "config.yml")
    process = run_local(path, config, tmp_path / "out", check=False)
    assert process.returncode == 2
    assert f"Export {path} is not a SQLite database" in process.stderr
    assert "Traceback" not in process.stderr


# ---------------------------------------------------------------- dataset element geometry


def one_page(path, dataset):
    with open_export(path) as opened:
        (page,) = opened.iter_pages(dataset, "train")
    return page


@pytest.mark.parametrize(
    ("polygon", "problem"),
    [
        ("not json", "is not JSON: 'not json'"),
        ('{"x": 1}', "is not a list of [x, y] points"),
        ("[[0, 0], [1, 2, 3], [5, 5]]", "holds [1, 2, 3], not an [x, y] point"),
        ('[["a", "b"], [1, 2], [3, 4]]', "holds 'a', not a number"),
        ("[[0, 0], [Infinity, 0], [10, 10]]", "holds inf, not a finite number"),
        ("[[0, 0], [1e400, 0], [10, 10]]", "holds inf, not a finite number"),
        (f"[[0, 0], [1{'0' * 400}, 0], [10, 10]]", "holds inf, not a finite number"),
        ("[[NaN, 0], [600, 0], [600, 800]]", "holds nan, not a finite number"),
        ("[[0, 0], [600, 0], [600, NaN], [0, 800]]", "holds nan, not a finite number"),
        ("[[0, 0], [true, 0], [10, 10]]", "holds True, not a number"),
        ("[" * 100000, "is not JSON"),
    ],
)
def test_malformed_element_polygon_is_skipped_counted_and_named(built, caplog, polygon, problem):
    path, dataset, page_id = built
    edit(path, f"UPDATE element SET polygon = '{polygon}' WHERE id = '{page_id}'")
    page = one_page(path, dataset)
    with caplog.at_level(logging.WARNING):
        assert build_sample(page, CONFIG) is Skip.ElementMalformed
    assert f"Element {page_id} skipped: its polygon {problem}" in caplog.text
    # Values are shortened: a polygon may be megabytes
    assert max(map(len, caplog.messages)) < 250


def test_child_polygon_that_is_not_json_or_overflows_is_counted_as_malformed(built):
    path, dataset, page_id = built
    edit(
        path,
        "UPDATE element SET polygon = 'oops' WHERE type = 'text_line'",
    )
    with open_export(path) as opened:
        pages = {page.id: page for page in opened.iter_pages(dataset, "train")}
    sample = build_sample(pages[page_id], CONFIG)
    assert sample.skipped == {Skip.Malformed: 1} and sample.label == ""
    huge = f"[[100, 100], [1{'0' * 400}, 100], [300, 140]]"
    edit(path, f"UPDATE element SET polygon = '{huge}' WHERE type = 'text_line'")
    sample = build_sample(one_page(path, dataset), CONFIG)
    assert sample.skipped == {Skip.Malformed: 1}


def test_polygon_integers_are_read_exactly(built):
    path, dataset, _ = built
    page = one_page(path, dataset)
    assert page.polygon == rectangle(50, 40, 500, 700)
    assert build_sample(page, CONFIG).frame.crop == Box(50, 40, 500, 700)


@pytest.mark.parametrize(
    ("assignment", "shown"),
    [
        ("width = 0", "width 0 and height 800"),
        ("height = 'abc'", "width 600 and height 'abc'"),
        ("width = ''", "width '' and height 800"),
        ("height = -5", "width 600 and height -5"),
    ],
)
def test_image_without_valid_size_skips_its_element_naming_the_image(
    built, caplog, assignment, shown
):
    path, dataset, page_id = built
    # A hand-made export may hold anything: the real one has CHECK constraints
    edit(path, "PRAGMA ignore_check_constraints = 1", f"UPDATE image SET {assignment}")
    page = one_page(path, dataset)
    with caplog.at_level(logging.WARNING):
        assert build_sample(page, CONFIG) is Skip.BadImageSize
    assert f"Element {page_id} skipped: its image {page.image.id} has {shown}" in caplog.text


def test_cli_bad_geometry_and_sizes_are_counted_without_traceback(tmp_path, make_export):
    served = make_export(pages=12)
    train = [
        element for element in sorted(served.pages) if element in _set_members(served, "train")
    ]
    edit(
        served.database,
        "PRAGMA ignore_check_constraints = 1",
        f"UPDATE element SET polygon = 'not json' WHERE id = '{train[0]}'",
        f"UPDATE element SET polygon = '[[NaN, 0], [9, 9], [0, 9]]' WHERE id = '{train[1]}'",
        f"UPDATE image SET width = 'abc' WHERE id = '{served.pages[train[2]]}'",
        "UPDATE element SET polygon = '{' WHERE id IN (SELECT child_id FROM element_path "
        f"WHERE parent_id = '{train[3]}')",
    )
    process = served.run(tmp_path / "out", check=False)
    assert process.returncode == 0, process.stderr
    assert "Traceback" not in process.stderr
    skipped = summary(tmp_path / "out")["splits"]["train"]["skipped"]
    assert skipped == {
        Skip.ElementMalformed.value: 2,
        Skip.BadImageSize.value: 1,
        Skip.Malformed.value: 1,
    }
    for element in train[:3]:
        assert f"Element {element} skipped" in process.stderr


def _set_members(served, set_name) -> set[str]:
    with sqlite3.connect(served.database) as connection:
        rows = connection.execute(
            "SELECT element_id FROM dataset_element WHERE set_name = ?", (set_name,)
        ).fetchall()
    connection.close()
    return {row[0] for row in rows}


# ---------------------------------------------------------------- duplicate set names


def test_duplicate_set_names_are_read_once_with_a_warning(tmp_path, caplog):
    path = tmp_path / "export.sqlite"
    small_export(path, sets=("train", "train", "dev", "test", "dev"))
    with caplog.at_level(logging.WARNING), open_export(path) as opened:
        (dataset,) = opened.list_datasets()
    assert dataset.sets == ("train", "dev", "test")
    assert "lists the set(s) dev, train more than once" in caplog.text


def test_cli_duplicate_set_names_do_not_double_the_counts(tmp_path, make_export):
    served = make_export(pages=8)
    edit(served.database, "UPDATE dataset SET sets = 'train,train,dev,test'")
    process = served.run(tmp_path / "out")
    train = summary(tmp_path / "out")["splits"]["train"]
    assert train["elements"] == train["images"] == len(_set_members(served, "train"))
    assert train["sets"] == ["train"]
    assert "more than once" in process.stderr


# ---------------------------------------------------------------- configuration files

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
class_names: *h
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("class_names: [text_line\nmode: bbox\n", ", line 2: invalid YAML: while parsing a flow"),
        ("class_names:\n  - a\n - b\n", ", line 3: invalid YAML"),
        (
            'class_names: !!python/object/apply:os.system ["echo hi"]\n',
            ", line 1: YAML tag !!python/object/apply:os.system is not accepted",
        ),
        ("class_names: !custom [a]\n", ", line 1: invalid YAML: could not determine a constructor"),
        (BILLION_LAUGHS, ", line 2: YAML aliases (*a) are not accepted"),
        ("x: &x 1\nclass_names: [*x]\n", ", line 2: YAML aliases (*x) are not accepted"),
        ("".join(f"{' ' * level}k:\n" for level in range(40)), ", line 17: nested deeper than 16"),
        ("a: " + "[" * 100000, ", line 1: invalid YAML"),
        ("- class_names\n- text_line\n", ": expected a mapping of configuration keys, got list"),
        ("just text\n", ": expected a mapping of configuration keys, got str"),
        ("class_names: [a]\n1: x\n", ": keys must be text, got 1"),
        ('{"configuration": [{"value": 1}]}', ": item 1 of `configuration` needs a `key`"),
        ('{"configuration": [{"key": "mode"}]}', ": item 1 of `configuration` needs a `key` and"),
        ('{"configuration": ["mode"]}', ": item 1 of `configuration` needs a `key`"),
        (
            '{"configuration": [{"key": 3, "value": 1}]}',
            ": item 1 of `configuration` has a key that is not text",
        ),
    ],
)
def test_broken_configuration_files_name_the_file_and_line(tmp_path, text, expected):
    path = tmp_path / "config.yml"
    path.write_text(text)
    started = time.perf_counter()
    with pytest.raises(ConfigurationError) as error:
        read_config_file(path)
    assert time.perf_counter() - started < 1
    assert f"{path}{expected}" in str(error.value)


def test_python_tags_run_nothing(tmp_path):
    witness = tmp_path / "witness"
    path = tmp_path / "config.yml"
    path.write_text(f'x: !!python/object/apply:os.system ["touch {witness}"]\n')
    with pytest.raises(ConfigurationError):
        read_config_file(path)
    assert not witness.exists()


def test_missing_unreadable_large_or_binary_files_are_refused(tmp_path):
    with pytest.raises(ConfigurationError, match=r"missing.yml: cannot read .*No such file"):
        read_config_file(tmp_path / "missing.yml")
    with pytest.raises(ConfigurationError, match=rf"{tmp_path}: cannot read .*it is a directory"):
        read_config_file(tmp_path)
    large = tmp_path / "large.yml"
    large.write_text("class_names: [a]\n" + "#" * MAX_CONFIG_BYTES)
    with pytest.raises(ConfigurationError, match=r"large\.yml: larger than 1 MB"):
        read_config_file(large)
    binary = tmp_path / "model.pt"
    binary.write_bytes(b"PK\x03\x04\xff\xfe")
    with pytest.raises(ConfigurationError, match=r"model\.pt: not UTF-8 text"):
        read_config_file(binary)


def test_anchors_without_aliases_and_empty_files_are_fine(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text("class_names: &names [a, b]\n")
    assert read_config_file(path) == {"class_names": ["a", "b"]}
    path.write_text("")
    assert read_config_file(path) == {}


def test_cli_broken_configuration_exits_2_before_reading_the_export(tmp_path, make_export):
    served = make_export(pages=4)
    served.config.write_text(BILLION_LAUGHS)
    started = time.perf_counter()
    process = served.run(tmp_path / "out", check=False)
    assert time.perf_counter() - started < 30
    assert process.returncode == 2
    assert f"{served.config}, line 2: YAML aliases" in process.stderr
    assert "Traceback" not in process.stderr
    assert served.server.request_count == 0


def test_cli_missing_configuration_file_exits_2(tmp_path, built):
    path = built[0]
    process = run_local(path, tmp_path / "missing.yml", tmp_path / "out", check=False)
    assert process.returncode == 2
    assert f"{tmp_path / 'missing.yml'}: cannot read the configuration file" in process.stderr
    assert "Traceback" not in process.stderr


def test_damage_met_where_descendants_are_read_is_an_export_error(tmp_path):
    # Descendants are read by chunks, on another connection: what it meets is raised where the
    # pages are read (and from worker processes: tests/extract/test_build.py)
    path = tmp_path / "export.sqlite"
    dataset = damaged_at_the_descendants(path)
    with pytest.raises(ExportError, match=f"Export {path} is damaged"), open_export(path) as opened:
        list(opened.iter_pages(dataset, "train"))
