"""Samples built in worker processes: the same samples, in the same order, with the same warnings
as when built in the main process; the processes stop with the builder."""

from __future__ import annotations

import gc
import itertools
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.exports import ExportBuilder, damaged_at_the_descendants, rectangle, seed_ids
from worker_yolo_training.config import parse_config
from worker_yolo_training.core import Mode, Skip
from worker_yolo_training.export import ExportError, SetElements, open_export
from worker_yolo_training.extract import SampleBuilder, WorkerStopped
from worker_yolo_training.extract.build import (
    CHUNK_ELEMENTS,
    CHUNK_ROWS,
    FIRST_CHUNK_ELEMENTS,
    ChunkPool,
    ChunkSizes,
    LabelFiles,
    SetBuild,
)
from worker_yolo_training.modes.registry import spec_for

PAGES = 400


def one_set(builder: SampleBuilder, elements, labels=None, truth=lambda: True) -> Iterator:
    """The samples of one set, as `build_sets` gives them, without its end."""
    built = builder.build_sets([SetBuild(elements, labels, truth)])
    return (sample for _, sample in built if sample is not None)


def varied_export(path) -> tuple:
    """Pages of every kind: rotated, mirrored, nested zones, objects of other types or outside,
    without image, with a bad image size; classified or not."""
    seed_ids(7)
    builder = ExportBuilder(path)
    dataset = builder.dataset()
    bad_image = builder.image(0, 100)
    for index in range(PAGES):
        image = builder.image(1000 + index, 800)
        kind = index % 10
        page = builder.element(
            "page",
            None if kind == 8 else rectangle(10, 20, 900, 700),
            bad_image if kind == 9 else (None if kind == 8 else image),
            rotation_angle=90 * (index % 4) if kind < 4 else 0,
            mirrored=kind == 5,
        )
        if kind == 6:
            builder.element("zone", rectangle(50, 50, 800, 600), image, parents=(page,))
        for line in range(25):
            polygon = rectangle(60 + line, 60 + 20 * line, 400 + 3 * index, 12)
            builder.element("text_line", polygon, image, parents=(page,))
        builder.element("text_line", rectangle(2000, 2000, 30, 30), image, parents=(page,))
        builder.element("illustration", rectangle(500, 100, 40 + index, 90), image, parents=(page,))
        if kind != 7:
            builder.classification(page, "illustrated" if index % 3 else "text")
        builder.add_to_set(dataset, "train", page)
    builder.close()
    return builder.path, dataset


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return varied_export(tmp_path_factory.mktemp("build") / "export.sqlite")


def comparable(built) -> list:
    """Built samples as plain values (arrays as lists)."""
    values = []
    for element_id, sample in built:
        if isinstance(sample, Skip):
            values.append((element_id, sample))
            continue
        shape = sample.shape
        figures = [np.asarray(a).tolist() for a in (shape.thickness, shape.width, shape.height)]
        values.append(
            (
                element_id,
                sample.frame,
                sample.request,
                sample.label,
                sample.objects,
                sample.skipped,
                sample.several_parts,
                sample.truth,
                shape.classes,
                figures,
                shape.nested,
            )
        )
    return values


def build(database, dataset, mode: str, classes: list[str], processes: int, labels=None) -> list:
    config = parse_config({"class_names": classes, "mode": mode, "image_size": 640})
    spec = spec_for(config.mode)
    with open_export(database) as opened, SampleBuilder(spec, config, processes) as builder:
        return list(one_set(builder, spec.set_elements(opened, dataset, "train"), labels))


@pytest.mark.parametrize(
    ("mode", "classes"),
    [
        ("segment", ["zone", "text_line", "illustration"]),
        ("obb", ["text_line", "illustration"]),
        ("classify", ["text", "illustrated"]),
    ],
)
def test_worker_processes_build_the_same_samples_in_order(export, mode, classes):
    database, dataset = export
    here = build(database, dataset, mode, classes, processes=1)
    there = build(database, dataset, mode, classes, processes=2)
    assert len(here) == PAGES
    assert comparable(there) == comparable(here)
    reasons = Counter(sample for _, sample in here if isinstance(sample, Skip))
    assert reasons[Skip.NoImage] == PAGES // 10
    if mode == "segment":
        nested = Counter()
        for _, sample in here:
            if not isinstance(sample, Skip):
                nested.update(sample.shape.nested)
        assert nested[("text_line", "zone")] == 25 * PAGES // 10


@pytest.mark.parametrize("processes", [1, 2])
def test_chunks_built_once_truth_is_no_longer_wanted_pack_none(export, processes):
    # The writer says before each chunk whether truth objects are still wanted (at most 300
    # training elements have theirs written): once not, the samples come without, the rest the same
    database, dataset = export
    config = parse_config({"class_names": ["text_line"], "mode": "segment", "image_size": 640})
    spec = spec_for(config.mode)
    asked = []

    def wanted() -> bool:
        asked.append(len(asked) < 3)
        return asked[-1]

    with open_export(database) as opened, SampleBuilder(spec, config, processes) as builder:
        built = list(one_set(builder, spec.set_elements(opened, dataset, "train"), truth=wanted))
    full = build(database, dataset, "segment", ["text_line"], processes)
    samples = [sample for _, sample in built if not isinstance(sample, Skip)]
    with_truth = sum(sample.truth is not None for sample in samples)
    assert len(asked) > 3 and 0 < with_truth < len(samples)
    assert all(sample.truth is None for sample in samples[with_truth:])
    assert [value[:7] + value[8:] for value in comparable(built)] == [
        value[:7] + value[8:] for value in comparable(full)
    ]


def test_warnings_of_worker_processes_are_logged_in_the_elements_order(export, caplog):
    database, dataset = export
    logged = {}
    for processes in (1, 2):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            build(database, dataset, "segment", ["text_line"], processes)
        logged[processes] = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(logged[1]) == PAGES // 10  # the pages with an image of width 0
    assert "has width 0" in logged[1][0]
    assert logged[2] == logged[1]


@dataclass(frozen=True)
class WhereBuilt:
    """A layout that says which process built each element, and how its garbage collector was
    (automatic or not, objects frozen)."""

    def build_samples(self, pages, config):
        state = f"{gc.isenabled()} {gc.get_freeze_count()}"
        for page in pages:
            logging.getLogger("tests.where").warning(f"{page.id} {os.getpid()} {state}")
        return [Skip.NoImage for _ in pages]


def test_samples_are_built_in_other_processes_that_stop_with_the_builder(export, caplog):
    database, dataset = export
    config = parse_config({"class_names": ["text_line"], "mode": "segment"})
    spec = spec_for(Mode.Segment)
    with caplog.at_level(logging.WARNING), open_export(database) as opened:
        with SampleBuilder(WhereBuilt(), config, 2) as builder:
            assert len(multiprocessing.active_children()) == 2
            built = list(one_set(builder, spec.set_elements(opened, dataset, "train")))
        assert not multiprocessing.active_children()
    pids = {int(r.getMessage().split()[1]) for r in caplog.records if r.name == "tests.where"}
    assert len(built) == PAGES
    assert pids and os.getpid() not in pids


def where_built(export, caplog, processes: int) -> list[list[str]]:
    """(process id, collector on, objects frozen) for each element, as `WhereBuilt` logs them."""
    database, dataset = export
    config = parse_config({"class_names": ["text_line"], "mode": "segment"})
    rows = spec_for(Mode.Segment).set_elements
    caplog.clear()
    with (
        caplog.at_level(logging.WARNING),
        open_export(database) as opened,
        SampleBuilder(WhereBuilt(), config, processes) as builder,
    ):
        assert len(list(one_set(builder, rows(opened, dataset, "train")))) == PAGES
    return [r.getMessage().split()[1:] for r in caplog.records if r.name == "tests.where"]


def test_worker_processes_build_without_collecting_what_they_inherited(export, caplog):
    # Collecting while a chunk is built cost a third of the building time; what a worker
    # inherits is frozen (never traversed). The main process' collector is left as it is.
    there = {(on, int(frozen) > 0) for _, on, frozen in where_built(export, caplog, 2)}
    here = {(on, frozen) for _, on, frozen in where_built(export, caplog, 1)}
    assert there == {("False", True)}
    assert here == {(str(gc.isenabled()), str(gc.get_freeze_count()))}
    assert gc.isenabled()


def test_an_error_stops_the_worker_processes_at_once(export):
    database, dataset = export
    config = parse_config({"class_names": ["text_line"], "mode": "segment"})
    spec = spec_for(Mode.Segment)
    with (
        open_export(database) as opened,
        pytest.raises(KeyboardInterrupt),
        SampleBuilder(spec, config, 2) as builder,
    ):
        for _ in one_set(builder, spec.set_elements(opened, dataset, "train")):
            raise KeyboardInterrupt
    assert not multiprocessing.active_children()


@dataclass(frozen=True)
class KilledWhileBuilding:
    """A layout whose worker processes are killed as they build a chunk (SIGKILL, what the
    system's out-of-memory killer sends)."""

    main: int  # the process of the test, where nothing is killed

    def build_samples(self, pages, config):
        if os.getpid() != self.main:
            os.kill(os.getpid(), signal.SIGKILL)
        return [Skip.NoImage for _ in pages]


def test_a_worker_process_killed_while_building_stops_the_extraction_with_a_clear_error(export):
    # multiprocessing's pool would wait for the chunk of a killed worker forever
    database, dataset = export
    config = parse_config({"class_names": ["text_line"], "mode": "segment"})
    rows = spec_for(Mode.Segment).set_elements
    raised = []

    def extract() -> None:
        builder = SampleBuilder(KilledWhileBuilding(os.getpid()), config, 2)
        try:
            with open_export(database) as opened, builder:
                list(one_set(builder, rows(opened, dataset, "train")))
        except WorkerStopped as error:
            raised.append(error)

    extracting = threading.Thread(target=extract, daemon=True)
    extracting.start()
    extracting.join(30)  # a liveness bound, not a timing: the build must end
    assert not extracting.is_alive()
    assert raised and raised[0].exitcode == -signal.SIGKILL
    assert "was killed by SIGKILL" in str(raised[0]) and "out of memory" in str(raised[0])
    assert not multiprocessing.active_children()


def pool_result(size: int) -> bytes:
    return b"x" * size


def wakeups(thread: threading.Thread) -> int:
    """How many times a thread has slept and woken (Linux's count of its voluntary switches)."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return int(status.split("voluntary_ctxt_switches:")[1].split()[0])


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="Linux's per-thread counts")
def test_the_pools_maintenance_thread_sleeps_while_results_arrive():
    # CPython's pool wakes the thread that maintains its worker processes whenever its result
    # pipe is readable, which that thread never reads: over a thousand times here. The thread
    # is found by the name Python gives a thread after its function.
    with ChunkPool(2, context=multiprocessing.get_context("fork")) as pool:
        pool.apply(pool_result, (1,))
        (maintainer,) = [t for t in threading.enumerate() if t.name.endswith("(_handle_workers)")]
        before = wakeups(maintainer)
        results = [pool.apply_async(pool_result, (20 << 20,)) for _ in range(4)]
        end = time.perf_counter() + 0.5
        while time.perf_counter() < end:
            pass  # this thread holds the interpreter, as the extraction's does: results wait
        assert [len(result.get()) for result in results] == [20 << 20] * 4
        assert wakeups(maintainer) - before < 50


def sizes_taken(rows_per_element, elements: int, late: int = 0) -> list[int]:
    """The chunk sizes of a set of `elements` elements of `rows_per_element` rows each (a number,
    or a function of the element's index), when the rows of each chunk are known `late` chunks
    after it is cut (chunks in flight)."""
    rows_of = rows_per_element if callable(rows_per_element) else lambda _: rows_per_element
    sizes, taken, cut = ChunkSizes(), [], 0
    while cut < elements:
        taken.append(min(sizes.next(), elements - cut))
        cut += taken[-1]
        if len(taken) > late:
            start = sum(taken[: -1 - late])
            chunk = taken[-1 - late]
            sizes.seen(chunk, sum(rows_of(index) for index in range(start, start + chunk)))
    return taken


def test_a_sets_first_chunks_are_small_then_grow_to_about_the_rows_of_the_largest():
    # The worker processes start on a set after a few elements are read, not a whole chunk;
    # then a chunk takes about CHUNK_ROWS rows, at the rows per element seen so far
    taken = sizes_taken(66, 1000, late=4)
    assert sum(taken) == 1000
    assert taken[:5] == [FIRST_CHUNK_ELEMENTS] * 5  # none known yet
    assert taken[5:8] == [2 * FIRST_CHUNK_ELEMENTS * 2**k for k in range(3)]
    assert set(taken[8:-1]) == {CHUNK_ROWS // 66}


def test_elements_with_many_rows_make_small_chunks_and_few_rows_large_ones():
    # Pages of thousands of lines: no chunk of a whole page range before their rows are known
    assert max(sizes_taken(5000, 40, late=4)) == FIRST_CHUNK_ELEMENTS
    assert set(sizes_taken(5000, 40)) == {FIRST_CHUNK_ELEMENTS, 1}
    assert max(sizes_taken(1, 5000)) == CHUNK_ELEMENTS


def test_pages_that_get_heavier_make_smaller_chunks_at_once():
    # 1000 pages of 10 rows, then pages of 2000: the chunks after the first heavy one fit
    # CHUNK_ROWS at the heavy pages' rows, not at the average of all the set's pages so far
    taken = sizes_taken(lambda index: 10 if index < 1000 else 2000, 2000)
    ends = itertools.accumulate(taken)
    after = [
        size for size, end in zip(taken[1:], ends, strict=False) if end > 1000 + CHUNK_ELEMENTS
    ]
    assert after and max(after) == CHUNK_ROWS // 2000


@pytest.mark.parametrize("processes", [1, 2])
def test_damage_met_where_a_chunk_is_read_is_an_export_error(tmp_path, processes):
    # The descendants are read by the process that builds the chunk: what it meets is raised
    # here, naming the export
    path = tmp_path / "export.sqlite"
    dataset = damaged_at_the_descendants(path)
    config = parse_config({"class_names": ["text_line"], "mode": "segment"})
    spec = spec_for(Mode.Segment)
    with (
        pytest.raises(ExportError, match=f"Export {path} is damaged"),
        open_export(path) as opened,
        SampleBuilder(spec, config, processes) as samples,
    ):
        list(one_set(samples, spec.set_elements(opened, dataset, "train")))
    assert not multiprocessing.active_children()


@pytest.mark.parametrize("processes", [1, 2])
def test_label_files_are_written_where_samples_are_built_keeping_one_already_there(
    export, tmp_path, processes
):
    database, dataset = export
    (tmp_path / "labels" / "train").mkdir(parents=True)
    first = build(database, dataset, "segment", ["text_line"], 1)
    kept = next(element for element, sample in first if not isinstance(sample, Skip))
    # an element written for an earlier set of the split keeps its label
    (tmp_path / "labels" / "train" / f"{kept}.txt").write_text("from an earlier set\n")
    labels = LabelFiles(tmp_path, "train")
    built = build(database, dataset, "segment", ["text_line"], processes, labels)
    samples = {element: s for element, s in built if not isinstance(s, Skip)}
    files = {path.stem: path.read_text() for path in (tmp_path / "labels" / "train").iterdir()}
    assert set(files) == set(samples) and len(files) > PAGES // 2
    assert files.pop(kept) == "from an earlier set\n"
    assert files == {element: samples[element].label for element in files}
    assert all(text.count("\n") == 25 for text in files.values())


def test_classification_has_no_label_files(export, tmp_path):
    database, dataset = export
    labels = LabelFiles(tmp_path, "train")
    built = build(database, dataset, "classify", ["text", "illustrated"], 2, labels)
    assert any(not isinstance(sample, Skip) for _, sample in built)
    assert list(tmp_path.iterdir()) == []


class SlowToSend:
    """A value that takes a while to pickle, into more than a pipe holds."""

    def __reduce__(self):
        time.sleep(0.5)
        return bytes, (b"x" * 1_000_000,)


class SlowToReceive:
    """A value that keeps the worker process that unpickles it busy for a while."""

    def __reduce__(self):
        return time.sleep, (2.0,)


def test_stopping_while_a_large_chunk_is_being_sent_returns(tmp_path):
    # Both workers busy, the thread that sends chunks pickling a large one: `Pool.terminate`
    # stops the workers, then waits for that thread, which then writes the chunk to a pipe
    # nobody reads any more, for ever. The stop must return all the same.
    config = parse_config({"class_names": ["text_line"], "mode": "segment"})

    def rows():
        for index in range(2 * FIRST_CHUNK_ELEMENTS):  # one chunk for each worker
            yield ("busy", SlowToReceive()) if index % FIRST_CHUNK_ELEMENTS == 0 else ("busy",)
        yield ("large", SlowToSend())
        yield from [("large",)] * (FIRST_CHUNK_ELEMENTS - 1)
        time.sleep(0.2)
        raise KeyboardInterrupt  # while the third chunk is being pickled

    def stop() -> None:
        builder = SampleBuilder(spec_for(Mode.Segment), config, 2)
        with pytest.raises(KeyboardInterrupt), builder:
            list(one_set(builder, SetElements(tmp_path / "export.sqlite", rows())))

    stopping = threading.Thread(target=stop, daemon=True)
    stopping.start()
    stopping.join(30)  # a liveness bound, not a timing: the stop must return
    assert not stopping.is_alive()
    assert not multiprocessing.active_children()
