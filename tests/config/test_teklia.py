"""Configurations written for teklia-yolo-worker 1.4.3's training workers: each key is ours, read
as ours with one log line, or refused naming the key and what to do instead."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import yaml

from tests.helpers import TEKLIA_WORKER_PYTHON, teklia_worker_available
from worker_yolo_training.config import TEKLIA_KEYS, ConfigurationError, key_of, parse_config

ROOT = Path(__file__).resolve().parents[2]
CLASSIFY_MANIFEST = ROOT / "arkindex" / "worker-yolo-training-classify.yml"

# As Teklia's detection training worker receives it (worker_yolo/train/detection.py, base.py)
TEKLIA_DETECT = {
    "class_names": ["text_line", "illustration"],
    "target_model_id": "e4c9f9b6-0c55-4a3b-9a8e-4d2b57f3d0a1",
    "mode": "segment",
    "ultralytics_model_size": "v8n",
    "image_size": 640,
    "num_epochs": 10,
    "advanced.batch_size": 4,
    "advanced.patience": 5,
    "advanced.workers": 2,
    "advanced.contrast": False,
    "advanced.worker_runs": [],
    "advanced.training_kwargs": {"lr0": "0.005", "optimizer": "SGD"},
    "advanced.overlap_mask": False,
    "advanced.mask_ratio": 2,
}
# Teklia's classification training worker (worker_yolo/train/classification.py): no `mode`
TEKLIA_CLS = {
    **{key: TEKLIA_DETECT[key] for key in ("class_names", "target_model_id", "image_size")},
    **{"ultralytics_model_size": "v8n", "num_epochs": 10, "advanced.batch_size": 8},
    **{"advanced.patience": 5, "advanced.workers": 2, "advanced.contrast": False},
    **{"advanced.worker_runs": [], "advanced.training_kwargs": {}, "advanced.dropout": 0.2},
}


def messages(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_a_detection_configuration_runs_unchanged(caplog):
    with caplog.at_level(logging.INFO):
        config = parse_config(TEKLIA_DETECT)

    assert config.batch_size == 4 and config.patience == 5 and config.workers == 2
    assert config.training_kwargs == {
        "lr0": 0.005, "optimizer": "SGD", "overlap_mask": False, "mask_ratio": 2,
    }  # fmt: skip
    logged = messages(caplog)
    assert not [line for line in logged if "Unknown configuration key" in line]
    mapped = [line for line in logged if "(teklia-yolo-worker 1.4.3) is read as" in line]
    assert mapped == [
        "`advanced.batch_size` (teklia-yolo-worker 1.4.3) is read as `batch_size`: 4",
        "`advanced.overlap_mask` (teklia-yolo-worker 1.4.3) is read as "
        "`advanced.training_kwargs` `overlap_mask`: False",
        "`advanced.mask_ratio` (teklia-yolo-worker 1.4.3) is read as "
        "`advanced.training_kwargs` `mask_ratio`: 2",
    ]


@pytest.mark.parametrize("mode", ["bbox", "obb"])
def test_mask_keys_pass_in_other_detection_modes(mode):
    """Teklia's detection worker passes them in every mode (Ultralytics uses them in segment
    mode only): its bbox and obb configurations hold them too."""
    config = parse_config({**TEKLIA_DETECT, "mode": mode})
    assert config.training_kwargs["overlap_mask"] is False


def test_a_classification_configuration_runs_in_the_classification_worker(caplog):
    """The classification worker's modal sends its fixed `mode: classify`."""
    fixed = {"mode": "classify"}
    with caplog.at_level(logging.INFO):
        config = parse_config({**TEKLIA_CLS, **fixed})
    assert config.mode.value == "classify" and config.batch_size == 8
    assert config.training_kwargs == {"dropout": 0.2}
    assert "`advanced.dropout` (teklia-yolo-worker 1.4.3) is read as `advanced.training_kwargs` `dropout`: 0.2" in messages(caplog)  # fmt: skip


def test_the_classification_manifest_fixes_what_teklias_configuration_lacks():
    fields = yaml.safe_load(CLASSIFY_MANIFEST.read_text())["configuration"]
    assert next(field for field in fields if field["key"] == "mode")["default"] == "classify"


def test_dropout_is_refused_in_a_detection_mode():
    """A classification configuration run by the detection worker: refused, saying what to do."""
    with pytest.raises(ConfigurationError) as raised:
        parse_config(TEKLIA_CLS)
    assert raised.value.problems == [
        "`advanced.dropout` (teklia-yolo-worker 1.4.3; here `advanced.training_kwargs` `dropout`) "
        "does nothing in segment mode, only in classify mode: train with `mode: classify` (the "
        "classification training worker), or remove it"
    ]


def test_mask_keys_are_refused_in_classify_mode():
    with pytest.raises(ConfigurationError) as raised:
        parse_config({**TEKLIA_DETECT, "mode": "classify"})
    problems = raised.value.problems
    assert [problem.split(" (")[0] for problem in problems] == [
        "`advanced.overlap_mask`",
        "`advanced.mask_ratio`",
    ]
    assert all(p.endswith("does nothing in classify mode, only in segment, bbox, obb mode: remove it") for p in problems)  # fmt: skip


def test_refusals_come_with_the_other_problems():
    with pytest.raises(ConfigurationError) as raised:
        parse_config({**TEKLIA_CLS, "num_epochs": 0})
    assert len(raised.value.problems) == 2
    assert raised.value.problems[0].startswith("`advanced.dropout`")
    assert raised.value.problems[1].startswith("`num_epochs`")


def test_our_default_gives_way_to_teklias_value():
    """In Arkindex our modal's defaults are always sent (`batch_size: 16`)."""
    assert parse_config({**TEKLIA_DETECT, "batch_size": 16}).batch_size == 4
    assert parse_config({**TEKLIA_DETECT, "batch_size": 4}).batch_size == 4


def test_a_value_of_ours_that_disagrees_is_refused():
    with pytest.raises(ConfigurationError) as raised:
        parse_config({**TEKLIA_DETECT, "batch_size": 8})
    assert raised.value.problems == [
        "`advanced.batch_size` (teklia-yolo-worker 1.4.3) is 4 but `batch_size` is 8: keep "
        "`batch_size` only"
    ]
    kwargs = {"advanced.training_kwargs": {"mask_ratio": "8"}}
    with pytest.raises(
        ConfigurationError, match=re.escape("keep `advanced.training_kwargs` mask_ratio only")
    ):
        parse_config({**TEKLIA_DETECT, **kwargs})
    # The same value written twice is fine
    kwargs = {"advanced.training_kwargs": {"mask_ratio": "2"}}
    assert parse_config({**TEKLIA_DETECT, **kwargs}).training_kwargs["mask_ratio"] == 2


@pytest.mark.skipif(
    not teklia_worker_available(),
    reason=f"teklia-yolo-worker 1.4.3 is not installed for {TEKLIA_WORKER_PYTHON}",
)
def test_the_table_lists_every_key_teklias_training_code_reads():
    """Read in teklia-yolo-worker's installed code: every `self.config[...]` of its training."""
    site = next(TEKLIA_WORKER_PYTHON.parents[1].glob("lib/python*/site-packages"))
    code = "".join(path.read_text() for path in (site / "worker_yolo" / "train").glob("*.py"))
    read = set(re.findall(r"self\.config\[[\"']([^\"']+)[\"']\]", code))
    teklia = {entry.key for entry in TEKLIA_KEYS if entry.key}
    same = {key_of(entry.field) for entry in TEKLIA_KEYS if entry.key is None}
    assert read == teklia | same
    # The configurations above hold every one of them
    assert set(TEKLIA_DETECT) | set(TEKLIA_CLS) == read
