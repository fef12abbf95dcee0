"""Sets written one after the other: the next set's samples are built while the previous set's
last ones are, unless both go to one split."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

import yaml
from PIL import Image

from tests.exports import ExportBuilder, rectangle, seed_ids
from tests.helpers import run_local, summary
from tests.iiif_server import IIIFServer
from worker_yolo_training.config import parse_config
from worker_yolo_training.core import Skip
from worker_yolo_training.export import open_export
from worker_yolo_training.extract import SampleBuilder
from worker_yolo_training.extract.build import FIRST_CHUNK_ELEMENTS, SetBuild

# The last chunk of the first set takes this long to build (seconds)
SLOW = 1.0


@dataclass(frozen=True)
class SlowAtTheEnd:
    """A layout that logs when each chunk was built, and is slow on the chunk holding `last`."""

    last: str

    def build_samples(self, pages, config):
        start = time.monotonic()  # one clock for every process
        if any(page.id == self.last for page in pages):
            time.sleep(SLOW)
        ids = " ".join(page.id for page in pages)
        logging.getLogger("tests.chunks").warning(f"{start} {time.monotonic()} {ids}")
        return [Skip.NoImage for _ in pages]


def two_sets(path, train: int = 8, dev: int = 4) -> tuple:
    """An export of `train` train pages and `dev` dev pages, each with a line."""
    seed_ids(11)
    builder = ExportBuilder(path)
    dataset = builder.dataset()
    image = builder.image(1000, 1000)
    pages = {"train": [], "dev": []}
    for index in range(train + dev):
        page = builder.element("page", rectangle(0, 0, 900, 900), image)
        builder.element("text_line", rectangle(10, 10 + index, 300, 20), image, parents=(page,))
        name = "train" if index < train else "dev"
        builder.add_to_set(dataset, name, page)
        pages[name].append(page)
    builder.close()
    return builder.path, dataset, {name: sorted(ids) for name, ids in pages.items()}


def chunks_built(tmp_path, caplog, overlap: bool) -> tuple[list, list[tuple[float, float, set]]]:
    database, dataset, pages = two_sets(tmp_path / "export.sqlite")
    config = parse_config({"class_names": ["text_line"], "mode": "segment"})
    caplog.clear()
    with (
        caplog.at_level(logging.WARNING),
        open_export(database) as opened,
        SampleBuilder(SlowAtTheEnd(pages["train"][-1]), config, 2) as builder,
    ):
        sets = [opened.set_elements(dataset, name) for name in ("train", "dev")]
        built = list(builder.build_sets([SetBuild(sets[0]), SetBuild(sets[1], overlap=overlap)]))
    chunks = []
    for record in caplog.records:
        if record.name == "tests.chunks":
            start, end, *ids = record.getMessage().split()
            chunks.append((float(start), float(end), set(ids)))
    tags = [(index, None if sample is None else sample[0]) for index, sample in built]
    expected = [(0, page) for page in pages["train"]] + [(0, None)]
    expected += [(1, page) for page in pages["dev"]] + [(1, None)]
    assert tags == expected  # each set's samples in order, then its end
    return pages, chunks


def test_the_next_sets_first_chunks_are_built_while_the_previous_sets_last_one_is(tmp_path, caplog):
    pages, chunks = chunks_built(tmp_path, caplog, overlap=True)
    (slow_end,) = [end for _, end, ids in chunks if pages["train"][-1] in ids]
    dev_starts = [start for start, _, ids in chunks if ids <= set(pages["dev"])]
    assert dev_starts and min(dev_starts) < slow_end


def test_a_set_that_may_not_overlap_waits_for_the_previous_sets_last_chunk(tmp_path, caplog):
    pages, chunks = chunks_built(tmp_path, caplog, overlap=False)
    (slow_end,) = [end for _, end, ids in chunks if pages["train"][-1] in ids]
    dev_starts = [start for start, _, ids in chunks if ids <= set(pages["dev"])]
    assert dev_starts and min(dev_starts) >= slow_end


@dataclass(frozen=True)
class Chunks:
    """A layout that logs the elements of each chunk it builds."""

    def build_samples(self, pages, config):
        logging.getLogger("tests.chunks").warning(" ".join(page.id for page in pages))
        return [Skip.NoImage for _ in pages]


def test_the_next_set_takes_chunks_of_the_size_the_previous_set_taught(tmp_path, caplog):
    # a set's first chunks no longer start small again: the export's pages are known
    database, dataset, pages = two_sets(tmp_path / "export.sqlite", train=60, dev=30)
    config = parse_config({"class_names": ["text_line"], "mode": "segment"})
    with (
        caplog.at_level(logging.WARNING),
        open_export(database) as opened,
        SampleBuilder(Chunks(), config, 2) as builder,
    ):
        sets = [SetBuild(opened.set_elements(dataset, name), overlap=True) for name in pages]
        list(builder.build_sets(sets))
    chunks = [r.getMessage().split() for r in caplog.records if r.name == "tests.chunks"]
    assert len(chunks[0]) == FIRST_CHUNK_ELEMENTS
    (first_dev,) = [chunk for chunk in chunks if pages["dev"][0] in chunk]
    assert len(first_dev) > 2 * FIRST_CHUNK_ELEMENTS


def test_an_element_of_two_sets_of_a_split_keeps_its_label_when_its_first_image_fails(tmp_path):
    # dev and val are one split: the element is written once, for val, its image failing for
    # dev; its label file, written for dev and removed with the failed image, must be there
    seed_ids(12)
    served = tmp_path / "served"
    served.mkdir()
    with IIIFServer(images_dir=served, transient_status=503) as server:
        builder = ExportBuilder(tmp_path / "export.sqlite", iiif_base=server.base_url)
        dataset = builder.dataset(sets=("train", "dev", "val"))
        rng = random.Random(5)
        elements = {}
        for index in range(24):
            image = builder.image(400, 400)
            Image.new("RGB", (400, 400), (rng.randint(100, 255),) * 3).save(
                served / f"{image.id}.jpg"
            )
            page = builder.element("page", rectangle(0, 0, 400, 400), image)
            builder.element("text_line", rectangle(40, 40 + index, 200, 30), image, parents=(page,))
            elements[page] = image.id
            builder.add_to_set(dataset, ("train", "dev", "val")[index % 3], page)
        # the last dev element (in id order) is in val too, first there: its image fails once
        both = max(page for index, page in enumerate(elements) if index % 3 == 1)
        builder.add_to_set(dataset, "val", both)
        builder.close()
        server.transient_failures = {elements[both]: 1}
        config = tmp_path / "config.yml"
        config.write_text(
            yaml.safe_dump({"class_names": ["text_line"], "advanced.max_failed_images": 0.5})
        )
        output = tmp_path / "out"
        run_local(builder.path, config, output, "--image-retries", "1", "--no-cache")
    val = summary(output)["splits"]["val"]
    assert [failure["element"] for failure in val["failed_images"]] == [both]
    assert val["images"] == 16 and "element already in the split" not in val["skipped"]
    label = output / "dataset" / "labels" / "val" / f"{both}.txt"
    assert (output / "dataset" / "images" / "val" / f"{both}.jpg").is_file()
    assert label.read_text().startswith("0 ")
