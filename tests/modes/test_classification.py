"""Classify mode: which class an element gets, the dataset layout Ultralytics reads, the checks
before any download, the evaluation figures, and a whole run through the CLI."""

from __future__ import annotations

import json

import pytest
import yaml
from PIL import Image

from tests.exports import ExportBuilder, rectangle
from tests.helpers import run_local, summary
from worker_yolo_training import export
from worker_yolo_training.config import ConfigurationError, parse_config
from worker_yolo_training.core import Skip
from worker_yolo_training.evaluate import (
    ElementPrediction,
    calibrate_classifier,
    element_figures,
)
from worker_yolo_training.modes import choose_class, spec_for

# Unsorted, with a slash, a space and non-ASCII letters: folder names cannot be class names
AWKWARD = ["with space", "a/b", "Ünïcode"]
COLOURS = {"with space": (30, 200, 30), "a/b": (220, 30, 30), "Ünïcode": (30, 30, 220)}
RUN_A = "aaaaaaaa-0000-4000-8000-000000000001"
RUN_B = "bbbbbbbb-0000-4000-8000-000000000002"


class ClassifiedExport:
    """An export of small plain-colour pages with classifications, images in a folder."""

    def __init__(self, root):
        self.root = root
        self.images = root / "images"
        self.images.mkdir(parents=True)
        self.builder = ExportBuilder(root / "export.sqlite")
        self.dataset = self.builder.dataset()
        for run in (RUN_A, RUN_B):
            self.builder.worker_run(run)
        self.ids: dict[str, str] = {}

    def page(self, key: str, set_name: str, *classifications, colour=(128, 128, 128)) -> str:
        """A page in a set; each classification is (class, confidence, worker run or None)."""
        image = self.builder.image(64, 48)
        Image.new("RGB", (64, 48), colour).save(self.images / f"{image.id}.jpg")
        element = self.builder.element("page", rectangle(0, 0, 64, 48), image, name=key)
        for class_name, confidence, run in classifications:
            self.builder.classification(element, class_name, confidence, run)
        self.builder.add_to_set(self.dataset, set_name, element)
        self.ids[key] = element
        return element

    def classified(self, sets: dict[str, int], classes=AWKWARD) -> None:
        """`count` manually classified pages of each class in each set."""
        for set_name, count in sets.items():
            for name in classes:
                for index in range(count):
                    key = f"{set_name}-{name}-{index}"
                    self.page(key, set_name, (name, 1.0, None), colour=COLOURS.get(name))

    def finish(self, **config) -> None:
        self.builder.close()
        self.config = self.root / "config.yml"
        values = {"class_names": AWKWARD, "mode": "classify", "image_size": 32, **config}
        self.config.write_text(yaml.safe_dump(values, allow_unicode=True))

    def run(self, output, extract_only=True, check=True):
        return run_local(
            self.builder.path, self.config, output, "--images", self.images, "--no-cache",
            extract_only=extract_only, check=check,
        )  # fmt: skip


# ---------------------------------------------------------------- which class an element gets

CASES = {
    # key: classifications (class, confidence, worker run)
    "sources agree": [("text", 1.0, None), ("text", 0.2, RUN_A), ("text", 0.9, RUN_B)],
    "manual wins": [("blank", 0.4, None), ("text", 0.99, RUN_A)],
    "confidence": [("text", 0.6, RUN_A), ("blank", 0.9, RUN_B)],
    "tie": [("text", 0.8, RUN_A), ("blank", 0.8, RUN_B)],
    "manual tie": [("text", 1.0, None), ("blank", 1.0, None), ("text", 0.99, RUN_A)],
    "none": [],
    "other class": [("cover", 1.0, None)],
    "run B only": [("blank", 0.7, RUN_B)],
}
EXPECTED = {
    (): {
        "sources agree": "text", "manual wins": "blank", "confidence": "blank",
        "tie": Skip.Ambiguous, "manual tie": Skip.Ambiguous, "none": Skip.Unclassified,
        "other class": Skip.Unclassified, "run B only": "blank",
    },
    (RUN_A,): {
        "sources agree": "text", "manual wins": "text", "confidence": "text", "tie": "text",
        "manual tie": "text", "none": Skip.Unclassified, "other class": Skip.Unclassified,
        "run B only": Skip.Unclassified,
    },
    ("manual",): {
        "sources agree": "text", "manual wins": "blank", "confidence": Skip.Unclassified,
        "tie": Skip.Unclassified, "manual tie": Skip.Ambiguous, "none": Skip.Unclassified,
        "other class": Skip.Unclassified, "run B only": Skip.Unclassified,
    },
    ("manual", RUN_B): {
        "sources agree": "text", "manual wins": "blank", "confidence": "blank", "tie": "blank",
        "manual tie": Skip.Ambiguous, "none": Skip.Unclassified,
        "other class": Skip.Unclassified, "run B only": "blank",
    },
}  # fmt: skip


@pytest.mark.parametrize("worker_runs", list(EXPECTED))
def test_class_choice_rules_on_an_export(tmp_path, worker_runs):
    exported = ClassifiedExport(tmp_path)
    for key, classifications in CASES.items():
        exported.page(key, "train", *classifications)
    exported.finish()
    with export.open_export(exported.builder.path) as opened, export.StatementCounter() as sql:
        pages = list(
            opened.iter_pages(exported.dataset, "train", children=False, classifications=True)
        )
    # The set's elements: one statement whatever the size (their classifications: one per chunk)
    assert sql.count == 1
    chosen = {
        page.name: choose_class(page.classifications, ["text", "blank"], worker_runs)
        for page in pages
    }
    assert chosen == EXPECTED[worker_runs]


# ---------------------------------------------------------------- the dataset layout


def test_layout_with_awkward_class_names(tmp_path):
    """Folders are class indices, `.ndjson.yaml` names them: Ultralytics learns `class_names` in
    their order, every split holds every class folder, and skipped elements are counted."""
    exported = ClassifiedExport(tmp_path)
    exported.classified({"train": 2, "dev": 1}, classes=["with space", "a/b"])
    exported.page("ambiguous", "train", ("a/b", 0.5, RUN_A), ("with space", 0.5, RUN_B))
    exported.page("unclassified", "train")
    exported.page("unicode", "test", ("Ünïcode", 1.0, None))
    exported.finish()
    output = tmp_path / "out"
    exported.run(output)
    root = output / "dataset"
    names = {0: "with space", 1: "a/b", 2: "Ünïcode"}
    assert yaml.safe_load((root / ".ndjson.yaml").read_text(encoding="utf-8")) == {"names": names}
    for split in ("train", "val", "test"):
        assert sorted(path.name for path in (root / split).iterdir()) == ["0", "1", "2"]
    files = {path.relative_to(root).as_posix() for path in root.glob("*/*/*.jpg")}
    ids = exported.ids
    assert files == {
        f"train/0/{ids['train-with space-0']}.jpg", f"train/0/{ids['train-with space-1']}.jpg",
        f"train/1/{ids['train-a/b-0']}.jpg", f"train/1/{ids['train-a/b-1']}.jpg",
        f"val/0/{ids['dev-with space-0']}.jpg", f"val/1/{ids['dev-a/b-0']}.jpg",
        f"test/2/{ids['unicode']}.jpg",
    }  # fmt: skip
    splits = summary(output)["splits"]
    assert splits["train"]["objects"] == {"with space": 2, "a/b": 2, "Ünïcode": 0}
    assert splits["train"]["skipped"] == {Skip.Unclassified.value: 1, Skip.Ambiguous.value: 1}
    assert splits["test"]["objects"] == {"with space": 0, "a/b": 0, "Ünïcode": 1}

    # What Ultralytics makes of it: the names in order, each image under its class index
    from ultralytics.cfg import get_cfg
    from ultralytics.data.dataset import ClassificationDataset
    from ultralytics.data.utils import check_cls_dataset

    assert check_cls_dataset(root)["names"] == names
    dataset = ClassificationDataset(root / "train", get_cfg(overrides={"imgsz": 32}), names=names)
    indices = {sample[0].split("/")[-1][:-4]: sample[1] for sample in dataset.samples}
    assert indices == {
        ids["train-with space-0"]: 0, ids["train-with space-1"]: 0,
        ids["train-a/b-0"]: 1, ids["train-a/b-1"]: 1,
    }  # fmt: skip


# ---------------------------------------------------------------- checks before any download


def test_unknown_class_lists_the_classes_there(tmp_path):
    exported = ClassifiedExport(tmp_path)
    exported.classified({"train": 2, "dev": 1})
    exported.page("cover", "train", ("cover", 1.0, None))
    exported.finish(class_names=["with space", "a/b", "cover page"])
    process = exported.run(tmp_path / "out", check=False)
    assert process.returncode == 2, process.stderr
    assert "`class_names` cover page not found" in process.stderr
    assert "Classification classes there: a/b (3), cover (1), with space (3), Ünïcode (3)" in (
        process.stderr
    )
    assert not (tmp_path / "out" / "dataset").exists()


@pytest.mark.parametrize(
    ("config", "split", "found"),
    [
        # val holds one class only
        ({}, "val", "with space: 1, a/b: 0, Ünïcode: 0"),
        # the manual classifications of train are filtered out: one class left (run A's)
        ({"advanced.worker_runs": [RUN_A]}, "train", "with space: 0, a/b: 2, Ünïcode: 0"),
    ],
)
def test_train_and_val_need_two_classes(tmp_path, config, split, found):
    exported = ClassifiedExport(tmp_path)
    exported.classified({"train": 2}, classes=["with space", "Ünïcode"])
    for index in range(2):
        exported.page(f"auto-{index}", "train", ("a/b", 0.9, RUN_A), ("a/b", 0.9, None))
    exported.page("dev", "dev", ("with space", 1.0, None))
    exported.page("dev-none", "dev")
    if config:  # then val holds two classes: only train's problem is left
        exported.page("dev-a", "dev", ("a/b", 1.0, RUN_A))
        exported.page("dev-b", "dev", ("with space", 1.0, RUN_A))
    exported.finish(**config)
    process = exported.run(tmp_path / "out", check=False)
    assert process.returncode == 2, process.stderr
    assert f"The {split} split holds elements of 1 class(es) of `class_names` ({found}" in (
        process.stderr
    )
    assert "at least 2 classes in train and in val" in process.stderr
    if split == "val":
        assert f"skipped: {Skip.Unclassified.value}: 1" in process.stderr
    assert not (tmp_path / "out" / "dataset").exists()


def test_an_export_without_classifications_is_refused_when_opened(tmp_path):
    import sqlite3

    exported = ClassifiedExport(tmp_path)
    exported.finish()
    with sqlite3.connect(exported.builder.path) as connection:
        connection.execute("DROP TABLE classification")
    with pytest.raises(export.ExportError, match="lacks table classification"):
        export.check_export_file(exported.builder.path)


def test_fraction_is_refused_in_classify_mode():
    with pytest.raises(ConfigurationError, match="fraction: not available in classify mode"):
        parse_config(
            {
                "class_names": ["a", "b"],
                "mode": "classify",
                "advanced.training_kwargs": {"fraction": 0.5},
            }
        )
    # Other modes keep it
    parse_config({"class_names": ["a"], "advanced.training_kwargs": {"fraction": 0.5}})


# ---------------------------------------------------------------- figures and publication


def prediction(truth: str, predicted: str, confidence: float) -> ElementPrediction:
    return ElementPrediction("e", truth, predicted, confidence)


def test_threshold_maximises_macro_f1_and_leaves_the_rest_unclassified():
    val = [
        prediction("a", "a", 0.9), prediction("b", "b", 0.8),
        prediction("b", "a", 0.5),  # wrong, under the best threshold
        prediction("a", "a", 0.4),  # right, but keeping it keeps the wrong one above
    ]  # fmt: skip
    # 0.8: a 1/1 of 2 (F1 2/3), b 1/1 of 2 (F1 2/3): macro 0.667; 0.4: a F1 0.8, b F1 0.667
    assert calibrate_classifier(val, ["a", "b", "c"]) == 0.4
    assert calibrate_classifier(val[:3], ["a", "b"]) == 0.8
    assert calibrate_classifier([prediction("a", "b", 0.9)], ["a", "b"]) is None
    figures = element_figures(val[:3], ["a", "b", "c"], 0.8)
    assert figures["elements"] == 3 and figures["classified"] == 2 and figures["correct"] == 2
    assert figures["accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert figures["classes"]["a"] == {
        "elements": 1, "predicted": 1, "correct": 1, "precision": 1.0, "recall": 1.0, "f1": 1.0
    }  # fmt: skip
    assert figures["classes"]["b"]["recall"] == 0.5
    assert figures["classes"]["c"] == {"elements": 0, "predicted": 0, "correct": 0, "absent": True}
    assert figures["macro_f1"] == pytest.approx((1 + 2 / 3) / 2, abs=1e-4)


def test_published_configuration_holds_only_what_the_classifier_reads():
    config = parse_config({"class_names": ["a", "b"], "mode": "classify", "image_size": 224})
    assert spec_for(config.mode).inference_configuration(config, 0.42, None) == {
        "thumbnail_size": 224,
        "confidence_threshold": 0.42,
    }


# ---------------------------------------------------------------- a whole run


def test_classify_run_end_to_end(tmp_path):
    """1 epoch of yolov8n-cls from its architecture: the model predicts `class_names` in their
    order, and every split has top-1/top-5, the confusion matrix and the classifier's figures."""
    exported = ClassifiedExport(tmp_path)
    exported.classified({"train": 2, "dev": 1, "test": 1})
    exported.finish(
        ultralytics_model_size="v8n", num_epochs=1, batch_size=3,
        **{"advanced.pretrained": False, "advanced.workers": 0},
    )  # fmt: skip
    output = tmp_path / "out"
    exported.run(output, extract_only=False)

    from ultralytics import YOLO

    model = YOLO(str(output / "model" / "model.pt"))
    assert model.task == "classify"
    assert list(model.names.values()) == AWKWARD
    metrics = json.loads((output / "metrics.json").read_text())
    for split, elements in (("train", 2), ("val", 1), ("test", 1)):
        result = metrics[split]
        assert 0 <= result["all"]["top1"] <= 1 and result["all"]["top5"] == 1.0  # 3 classes
        confusion = result["confusion_matrix"]
        assert list(confusion) == AWKWARD
        assert all(sum(row.values()) == elements for row in confusion.values())
        for name in AWKWARD:
            predicted = sum(row[name] for row in confusion.values())
            assert result["classes"][name]["predicted"] == predicted
        pages = metrics["pages"][split]
        assert pages["elements"] == elements * 3
        assert pages["confidence_threshold"] == metrics["pages"]["val"]["confidence_threshold"]
        assert (output / f"eval_{split}" / "confusion_matrix.png").is_file()
        lines = (output / f"eval_{split}" / "pages" / "predictions.jsonl").read_text().splitlines()
        assert {json.loads(line)["truth"] for line in lines} == set(AWKWARD)
    report = (output / "evaluation.md").read_text()
    assert "| true \\ predicted | with space | a/b | Ünïcode |" in report
    assert "Confusion matrix of test" in report and "| val | Ünïcode |" in report
    assert (output / "results.tar.zst").is_file()
    # What would be published: only the classifier's keys, the threshold calibrated on val
    version = json.loads((output / "model_version.json").read_text())
    threshold = metrics["pages"]["val"]["confidence_threshold"]
    assert version["configuration"] == {"thumbnail_size": 32, "confidence_threshold": threshold}
    description = version["description"]
    assert (
        f"## Classifier evaluation (an element whose top-1 confidence is under {threshold:g}"
        in (description)
    )
    assert "Confusion matrix of val" in description and "max detections" not in description
    assert "## Worst elements" not in description
    training = json.loads((output / "training.json").read_text())
    assert training["task"] == "classify" and training["max_detection"] is None
    assert training["confidence_threshold_source"].startswith("calibrated: best macro-F1")
