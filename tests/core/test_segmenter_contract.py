"""The model version's configuration against Teklia's YOLO segmenter (teklia-yolo-worker 1.4.3).

Arkindex merges, for a segmenter run: the segmenter's field defaults, then the model version's
configuration, then the user's values. The segmenter cannot be imported here (it pins another
ultralytics and base-worker, and needs teklia-yolo), so its `configure()`-time checks are
reproduced below with the lines they copy; `benchmarks/segmenter_agreement.py` runs the real one.
Its configuration table: tests/data/yolo_segmenter_configuration.json (provenance inside).
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from worker_yolo_training.config import TrainingConfig
from worker_yolo_training.core import SEGMENTER_KEYS, Mode
from worker_yolo_training.modes import spec_for

# The modes whose labels are objects (classify labels whole elements)
DETECTION_MODES = (Mode.Segment, Mode.BBox, Mode.OBB)

TABLE = json.loads(
    (Path(__file__).parents[1] / "data" / "yolo_segmenter_configuration.json").read_text()
)
FIELDS: dict[str, dict] = TABLE["fields"]
CLASS_NAMES = ["text_line", "illustration"]


def valid(field: dict, value: Any) -> bool:
    """Whether a value is valid for one field of the segmenter's table."""
    kind = field["type"]
    if value is None:
        return field.get("nullable", False)
    if kind == "bool":
        return isinstance(value, bool)
    if kind in ("int", "float"):
        types = int if kind == "int" else (int, float)
        return (
            isinstance(value, types)
            and not isinstance(value, bool)
            and field.get("minimum", value) <= value <= field.get("maximum", value)
        )
    if kind == "enum":
        return value in field["choices"]
    if kind == "string":
        return isinstance(value, str)
    if kind == "list":
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    raise AssertionError(f"unknown type {kind}")


def merged(published: dict, user: dict | None = None) -> dict:
    """The configuration a segmenter run receives, merged as Arkindex merges it."""
    defaults = {key: field["default"] for key, field in FIELDS.items()}
    return {**defaults, **published, **(user or {})}


def segmenter_configure(config: dict, model_names: list[str]) -> dict:
    """What `YOLOSegmenter.configure()` (worker_yolo/segmenter.py lines 36-61, and
    `YOLOWorker.configure`, worker_yolo/worker.py lines 23-33) checks and keeps, without loading
    a model: `config[key]` raises KeyError for a key nothing provides; `Mode(config["mode"])`
    raises for a value outside its enum (segmenter.py lines 27-29, 39-42)."""
    segmenter_mode = Enum("Mode", {value.upper(): value for value in FIELDS["mode"]["choices"]})
    try:
        mode = segmenter_mode(config["mode"])
    except ValueError as error:
        raise Exception(f"{error}. Mode should be either {FIELDS['mode']['choices']}") from error
    for key, field in FIELDS.items():
        if field["read"] == "required":
            config[key]  # the KeyError is the check
    return {
        "mode": mode,
        # segmenter.py line 79: a class outside use_segment silently gives its box
        "mask_classes": [name for name in model_names if name in config["use_segment"]],
        "thumbnail_size": config.get("thumbnail_size"),
    }


def publish(mode: Mode) -> dict:
    """What a run of `mode` publishes (the mode's own configuration)."""
    config = TrainingConfig(class_names=tuple(CLASS_NAMES), mode=mode, image_size=320)
    return spec_for(mode).inference_configuration(config, 0.4375, 300)


def test_table_matches_segmenter_keys():
    """SEGMENTER_KEYS (what config.py ignores quietly) is the segmenter's whole table."""
    assert set(FIELDS) == SEGMENTER_KEYS
    for key, field in FIELDS.items():
        assert valid(field, field["default"]), key


@pytest.mark.parametrize("mode", DETECTION_MODES)
def test_published_keys_are_segmenter_keys_with_valid_values(mode):
    configuration = publish(mode)
    assert set(configuration) <= set(FIELDS)
    for key, value in configuration.items():
        assert valid(FIELDS[key], value), (key, value)


@pytest.mark.parametrize("mode", DETECTION_MODES)
@pytest.mark.parametrize(
    "user", [{}, {"confidence_threshold": 0.5, "mode": "minimum_rotated_rectangle"}]
)
def test_segmenter_configures_with_the_published_configuration(mode, user):
    configuration = publish(mode)
    kept = segmenter_configure(merged(configuration, user), CLASS_NAMES)
    # Masks for every class in segment mode, boxes (oriented in obb mode) otherwise
    assert kept["mask_classes"] == (CLASS_NAMES if mode is Mode.Segment else [])
    assert kept["thumbnail_size"] == 320
    assert kept["mode"].value == user.get("mode", "default")


def test_the_former_configuration_stopped_the_segmenter():
    """What was published before issue 10: the segmenter did not start (`'segment' is not a
    valid Mode`), which the reproduction above detects."""
    former = {
        "thumbnail_size": 320,
        "use_segment": CLASS_NAMES,
        "mode": "segment",
        "class_names": CLASS_NAMES,
        "image_size": 320,
        "ultralytics_model_size": "v8n",
    }
    assert not set(former) <= set(FIELDS)
    with pytest.raises(Exception, match="'segment' is not a valid Mode"):
        segmenter_configure(merged(former), CLASS_NAMES)


def test_missing_key_is_detected():
    config = merged(publish(Mode.Segment))
    del config["iou"]
    with pytest.raises(KeyError, match="iou"):
        segmenter_configure(config, CLASS_NAMES)


# ------------------------------------------------- the agreement benchmark's comparison


def test_agreement_comparison_on_a_fake_predictions_file(tmp_path):
    """benchmarks/segmenter_agreement.py (not run in CI) compares the segmenter's objects with
    our page-level predictions.jsonl; its comparison, on a hand-made file."""
    from benchmarks.segmenter_agreement import compare, read_predictions

    line = [[0, 0], [100, 0], [100, 10], [0, 10]]
    shifted = [[0, 1], [100, 1], [100, 11], [0, 11]]  # IoU 9/11 with `line`
    records = [
        {
            "element": "page-1",
            "width": 200,
            "height": 300,
            "predictions": [
                {"class": "text_line", "confidence": 0.9, "polygon": line},
                {"class": "text_line", "confidence": 0.5, "polygon": [[0, 50], [90, 50], [90, 60]]},
                # Under the published threshold: the segmenter would not create it
                {"class": "illustration", "confidence": 0.2, "polygon": line},
            ],
        },
        {"element": "page-2", "width": 200, "height": 300, "predictions": []},
    ]
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    ours = read_predictions(path, threshold=0.25)
    assert [len(ours["page-1"]), len(ours["page-2"])] == [2, 0]

    segmenter = {
        "page-1": [
            {"type": "text_line", "confidence": 0.9, "polygon": line},  # IoU 1
            {"type": "text_line", "confidence": 0.4, "polygon": shifted},  # best IoU 9/11
            {"type": "illustration", "confidence": 0.3, "polygon": line},  # no counterpart
        ],
        "page-2": [],
    }
    summary = compare(segmenter, ours)
    assert summary["counts"] == {
        "page-1": {"illustration": [1, 0], "text_line": [2, 2]},
        "page-2": {},
    }
    assert summary["best_iou"] == pytest.approx([1.0, 9 / 11, 0.0])
    assert (summary["agreeing"], summary["segmenter_objects"], summary["our_objects"]) == (1, 3, 2)
    assert (summary["identical"], summary["confidence_gap"]) == (1, 0.0)
    assert summary["agreement"] == pytest.approx(1 / 3)
    assert (summary["same_count_pairs"], summary["element_class_pairs"]) == (1, 2)
    # The second of ours has no segmenter counterpart (the shifted line matches the first)
    assert summary["ours_alone"] == [0.5]
