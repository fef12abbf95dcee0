"""Fine-tuning a model version with other classes: what is reported, and that the weights of the
classes both share really reach the new model through the worker's own training path."""

import logging
import os

import pytest
import yaml
from PIL import Image

from worker_yolo_training import train as training
from worker_yolo_training.config import parse_config
from worker_yolo_training.modes import spec_for

# The parent's class-head rows: a constant per class, so a copied row is recognised at once
PARENT_ROWS = {"a": 0.25, "b": 0.5}


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    """An offline Ultralytics environment whose process-wide variables are given back after."""
    for name in ("YOLO_CONFIG_DIR", "YOLO_OFFLINE", "YOLO_AUTOINSTALL", "MPLCONFIGDIR"):
        monkeypatch.setenv(name, os.environ.get(name, ""))
    return training.prepare_environment(tmp_path / "yolo")


def architecture(config):
    """The Ultralytics models of the configuration's mode."""
    return spec_for(config.mode).architecture


def class_head(model):
    """The last convolution of each class branch of a YOLO detection head."""
    return [branch[-1] for branch in model.model[-1].cv3]


def write_parent(folder, names, task="detect", image_size=320):
    """A yolov8n checkpoint (untrained) saved as Ultralytics saves one, predicting `names`."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolov8n.yaml", nc=len(names), verbose=False)
    model.names = dict(enumerate(names))
    with torch.no_grad():
        for conv in class_head(model):
            for row, name in enumerate(names):
                conv.weight[row] = PARENT_ROWS[name]
                conv.bias[row] = -PARENT_ROWS[name]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.pt"
    train_args = {"task": task, "imgsz": image_size}
    torch.save({"model": model, "train_args": train_args, "epoch": -1}, path)
    return path


def test_class_changes_are_matched_by_name_as_ultralytics_does():
    changes = training.class_changes(["a", "Text_Line ", "b"], ["text_line", "b", "c"])
    assert changes == training.ClassChanges(kept=["text_line", "b"], new=["c"], dropped=["a"])
    assert str(changes) == (
        "kept (their class-head weights are copied): text_line, b; "
        "new (learned from scratch): c; dropped: a"
    )


def test_finetuning_reports_new_kept_and_dropped_classes_task_and_image_size(
    tmp_path, weights_dir, caplog
):
    write_parent(tmp_path / "parent", ["a", "b"], task="detect", image_size=320)
    config = parse_config({"class_names": ["b", "c"], "mode": "segment", "image_size": 640})
    with caplog.at_level(logging.INFO):
        path = training.resolve_base_model(
            config, architecture(config), weights_dir, finetune_dir=tmp_path / "parent"
        )
    assert path == str(tmp_path / "parent" / "model.pt")
    assert "task detect, classes ['a', 'b'], image_size 320" in caplog.text
    assert (
        "kept (their class-head weights are copied): b; new (learned from scratch): c; "
        "dropped: a" in caplog.text
    )
    assert "trained for the detect task, this training is segment" in caplog.text
    assert "trained at image_size 320, this training uses 640" in caplog.text


def tiny_dataset(root, names):
    """Two 64×64 images with one box each, for train and val."""
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        Image.new("RGB", (64, 64), (200, 180, 160)).save(root / "images" / split / "page.jpg")
        (root / "labels" / split / "page.txt").write_text("0 0.5 0.5 0.5 0.25\n1 0.3 0.3 0.2 0.2\n")
    data = {"path": str(root), "train": "images/train", "val": "images/val"}
    data["names"] = dict(enumerate(names))
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    return root / "data.yaml"


class HeadRead(Exception):
    """Stops training once the head is read, before any optimiser step."""


def test_finetuning_from_a_b_to_b_c_keeps_b_class_head_weights(tmp_path, weights_dir, monkeypatch):
    """Ultralytics' `cls_remap` copies the class-head rows of classes whose names match: through
    `training.train` (the worker's path), b's rows reach the new model, c's are fresh."""
    import torch
    from ultralytics.utils.callbacks import base

    parent = write_parent(tmp_path / "parent", ["a", "b"])
    heads = []

    def read_head(trainer):
        heads.extend(
            (conv.weight.detach().clone(), conv.bias.detach().clone())
            for conv in class_head(trainer.model)
        )
        raise HeadRead

    # Every Ultralytics model starts with a copy of the default callbacks
    monkeypatch.setitem(base.default_callbacks, "on_train_start", [read_head])
    config = parse_config(
        {"class_names": ["b", "c"], "mode": "bbox", "image_size": 64, "batch_size": 2,
         "num_epochs": 1, "advanced.workers": 0}
    )  # fmt: skip
    data_yaml = tiny_dataset(tmp_path / "dataset", ["b", "c"])
    device = training.Device("cpu", amp=False, gpus=0)
    with pytest.raises(HeadRead):
        training.train(config, "detect", str(parent), data_yaml, tmp_path / "out", device, {})
    assert len(heads) == 3  # one class branch per detection scale
    for weight, bias in heads:
        assert weight.shape[0] == 2
        # b (now class 0) is the parent's b, bit for bit
        assert torch.equal(weight[0], torch.full_like(weight[0], PARENT_ROWS["b"]))
        assert bias[0].item() == -PARENT_ROWS["b"]
        # c (class 1) is freshly initialised: neither of the parent's rows
        for value in PARENT_ROWS.values():
            assert not torch.equal(weight[1], torch.full_like(weight[1], value))
        assert weight[1].std() > 0
