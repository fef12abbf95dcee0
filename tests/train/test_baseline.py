"""Which model a run is compared with, and with which configuration: `--baseline` weights and
the configuration their run wrote, a model version of Arkindex (`advanced.baseline_model_version`
or the target model's latest available version: listed, downloaded and extracted through the real
arkindex-client against the fake API), and the task check."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from arkindex import ArkindexClient, options_from_env
from arkindex_worker.utils import create_tar_zst_archive

from tests.arkindex_fake import fake_arkindex_fixture  # noqa: F401
from worker_yolo_training.config import parse_config
from worker_yolo_training.core import RunLayout
from worker_yolo_training.train import (
    BaseModelError,
    choose_baseline,
    local_baseline,
    published_baseline,
    usable_baseline,
)

NAMES = ["text_line", "illustration"]


def checkpoint(path: Path, names=NAMES) -> Path:
    from ultralytics.nn.tasks import SegmentationModel

    network = SegmentationModel("yolov8n-seg.yaml", nc=len(names), verbose=False)
    network.names = dict(enumerate(names))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": network, "train_args": {"imgsz": 64, "task": "segment"}}, path)
    return path


def config(**values):
    return parse_config({"class_names": NAMES, "image_size": 64, **values})


def test_local_weights_take_the_configuration_their_run_wrote(tmp_path, caplog):
    layout = RunLayout(tmp_path / "out")
    weights = checkpoint(layout.model_file)
    published = {"thumbnail_size": 64, "confidence_threshold": 0.42, "max_detection": 7}
    layout.model_version.write_text(json.dumps({"configuration": published}))
    baseline = local_baseline(weights)
    assert (baseline.name, baseline.weights, baseline.explicit) == (str(weights), weights, True)
    assert baseline.configuration == published
    assert (baseline.task, baseline.class_names) == ("segment", tuple(NAMES))
    # Without it: the inference worker's defaults, said
    alone = checkpoint(tmp_path / "alone" / "best.pt")
    assert local_baseline(alone).configuration == {}
    assert "evaluated with the inference worker's defaults" in caplog.text


def test_another_task_is_refused_when_asked_for_and_skipped_otherwise(tmp_path, caplog):
    baseline = local_baseline(checkpoint(tmp_path / "model.pt"))
    with pytest.raises(BaseModelError, match="is a segment model and this run trains a detect"):
        usable_baseline(baseline, config(mode="bbox"), "detect")
    implicit = choose_baseline(config(), "segment", None, None)
    assert implicit is None
    assert usable_baseline(replace(baseline, explicit=False), config(mode="bbox"), "detect") is None
    assert "their predictions cannot be compared: no comparison." in caplog.text
    assert usable_baseline(baseline, config(), "segment") is baseline


@pytest.fixture
def client(fake_arkindex, monkeypatch):
    fake_arkindex.apply_env(monkeypatch)
    return ArkindexClient(**options_from_env())


def archive(tmp_path: Path, name: str) -> bytes:
    folder = tmp_path / name
    checkpoint(folder / "model.pt")
    path = create_tar_zst_archive(folder, tmp_path / f"{name}.tar.zst")[1]
    return Path(path).read_bytes()


def test_the_target_models_latest_available_version(fake_arkindex, client, tmp_path):
    fake = fake_arkindex
    fake.add_model_version(configuration={"confidence_threshold": 0.1}, data=archive(tmp_path, "a"))
    latest = fake.add_model_version(
        configuration={"confidence_threshold": 0.2}, data=archive(tmp_path, "b")
    )
    fake.add_model_version(state="created")  # newer, not uploaded yet
    run_config = config(target_model_id=fake.model_id)
    baseline = published_baseline(client, run_config, tmp_path / "baselines")
    assert baseline.name == f"model version {latest.id}" and not baseline.explicit
    assert baseline.configuration == {"confidence_threshold": 0.2}
    assert baseline.weights == tmp_path / "baselines" / latest.id / "model.pt"
    assert baseline.class_names == tuple(NAMES)
    assert fake.operation_ids() == ["ListModelVersions"]


def test_a_chosen_version_and_one_that_cannot_be_downloaded(fake_arkindex, client, tmp_path):
    fake = fake_arkindex
    chosen = fake.add_model_version(configuration={"max_detection": 9}, data=archive(tmp_path, "a"))
    fake.add_model_version(data=archive(tmp_path, "b"))  # newer, but not the one chosen
    run_config = config(target_model_id=fake.model_id, **{
        "advanced.baseline_model_version": chosen.id.upper()})  # fmt: skip
    baseline = published_baseline(client, run_config, tmp_path / "baselines")
    assert baseline.name == f"model version {chosen.id}" and baseline.explicit
    assert baseline.configuration == {"max_detection": 9}
    pending = fake.add_model_version(state="created")
    run_config = config(**{"advanced.baseline_model_version": pending.id})
    with pytest.raises(BaseModelError, match=r"cannot be downloaded \(state created\): fix"):
        published_baseline(client, run_config, tmp_path / "baselines")
    # No version at all: nothing to compare with
    empty = fake.add_model("Empty")
    assert published_baseline(client, config(target_model_id=empty), tmp_path / "x") is None
