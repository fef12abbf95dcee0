"""The annotations kept for the page-level evaluation, and its images: without contrast when the
training images have it (the inference worker has no contrast step)."""

from __future__ import annotations

import json

from PIL import Image, ImageDraw

from tests.exports import ExportBuilder, rectangle
from tests.helpers import run_local, write_config
from worker_yolo_training.core import read_truths
from worker_yolo_training.extract.truth import MAX_TRAIN_ELEMENTS


def coloured_export(tmp_path):
    builder = ExportBuilder(tmp_path / "export.sqlite")
    dataset = builder.dataset()
    images = tmp_path / "images"
    images.mkdir()
    pages = {}
    for set_name in ("train", "dev"):
        image = builder.image(200, 100)
        picture = Image.new("RGB", (200, 100), (200, 40, 40))
        ImageDraw.Draw(picture).rectangle([20, 20, 120, 40], fill=(20, 20, 200))
        picture.save(images / f"{image.id}.jpg")
        page = builder.element("page", rectangle(0, 0, 200, 100), image)
        builder.element("text_line", rectangle(20, 20, 100, 20), image, parents=(page,))
        builder.add_to_set(dataset, set_name, page)
        pages[set_name] = page
    builder.close()
    return builder.path, images, pages


def test_contrast_runs_evaluate_on_images_without_contrast(tmp_path):
    database, images, pages = coloured_export(tmp_path)
    config = write_config(
        tmp_path / "c.yml", class_names=["text_line"], advanced={"contrast": True}
    )
    output = tmp_path / "out"
    process = run_local(database, config, output, "--images", images, "--no-cache")
    assert "`advanced.contrast` is on" in process.stderr
    truths = read_truths(output / "dataset", ["train", "val"])
    (element,) = truths["val"]
    assert element.element_id == pages["dev"]
    assert element.image.parent == output / "dataset" / "evaluation" / "val"
    assert (element.width, element.height) == (200, 100)
    assert element.objects == (
        ("text_line", ((20.0, 20.0), (20.0, 40.0), (120.0, 40.0), (120.0, 20.0), (20.0, 20.0))),
    )
    trained = output / "dataset" / "images" / "val" / element.image.name
    with Image.open(element.image) as plain, Image.open(trained) as enhanced:
        # The training image is grey (equalised), the evaluation image keeps its colours
        red, green, _ = plain.convert("RGB").getpixel((5, 5))
        assert red > 150 and green < 90
        assert len(set(enhanced.convert("RGB").getpixel((5, 5)))) == 1


def test_without_contrast_the_training_images_are_evaluated(tmp_path):
    database, images, _ = coloured_export(tmp_path)
    config = write_config(tmp_path / "c.yml", class_names=["text_line"])
    output = tmp_path / "out"
    run_local(database, config, output, "--images", images, "--no-cache")
    record = json.loads((output / "dataset" / "truth" / "train.jsonl").read_text())
    assert record["image"].startswith("images/train/")
    assert not (output / "dataset" / "evaluation").exists()


def test_the_train_truth_holds_the_first_written_elements_up_to_its_limit(tmp_path):
    # Predicting on every training element would cost an epoch: the first MAX_TRAIN_ELEMENTS
    # written ones (in element order) are kept; one whose image fails does not count
    builder = ExportBuilder(tmp_path / "export.sqlite")
    dataset = builder.dataset()
    images = tmp_path / "images"
    images.mkdir()
    pages = []
    for index in range(MAX_TRAIN_ELEMENTS + 7):  # the first in dev
        image = builder.image(40, 30)
        if index != 3:  # its image is missing: the element is dropped
            Image.new("RGB", (40, 30), (index % 256, 90, 90)).save(images / f"{image.id}.jpg")
        page = builder.element("page", rectangle(0, 0, 40, 30), image)
        builder.element("text_line", rectangle(5, 5, 20, 10), image, parents=(page,))
        builder.add_to_set(dataset, "train" if index else "dev", page)
        pages.append((page, index))
    builder.close()
    config = write_config(tmp_path / "c.yml", class_names=["text_line"])
    output = tmp_path / "out"
    run_local(builder.path, config, output, "--images", images, "--no-cache")
    written = [page for page, index in sorted(pages) if index not in (0, 3)]
    truths = read_truths(output / "dataset", ["train"])["train"]
    assert [element.element_id for element in truths] == written[:MAX_TRAIN_ELEMENTS]
    assert all(element.objects for element in truths)
