"""The model version's configuration, description and training metadata (`publish`, and the
segmenter's configuration of `core.inference`), on hand-built values."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from worker_yolo_training.config import TrainingConfig
from worker_yolo_training.core import Mode, Skip, segmenter_configuration
from worker_yolo_training.extract import SplitReport
from worker_yolo_training.modes import spec_for
from worker_yolo_training.publish import ModelVersion, model_description, training_metadata

CLASS_NAMES = ["text_line", "illustration"]
SPLITS = {
    "train": SplitReport(
        elements=6,
        images=6,
        objects=Counter({"text_line": 100, "illustration": 6}),
        skipped=Counter({Skip.OtherType: 3}),
        sets=["train"],
    ),
    "val": SplitReport(elements=2, images=2, objects=Counter({"text_line": 36, "illustration": 2})),
}
PAGE_TABLE = "| Split | Class | F1 |\n|---|---|---|\n| val | all | 0.900 |"
WORST = "| Element | F1 |\n|---|---|\n| 0000-page | 0.500 |"
MAP_TABLE = "| Split | Class | Box mAP50 |\n|---|---|---|\n| val | all | 0.800 |"


def configuration(mode: Mode, class_names=CLASS_NAMES) -> dict:
    """What a run of `mode` publishes for the segmenter."""
    config = TrainingConfig(class_names=tuple(class_names), mode=mode, image_size=640)
    return spec_for(mode).inference_configuration(config, 0.375, 400)


def describe(metadata: dict) -> str:
    heading = spec_for(Mode.Segment).evaluation_heading.format(threshold=0.375)
    return model_description(metadata, PAGE_TABLE, WORST, MAP_TABLE, heading=heading)


def metadata(**overrides) -> dict:
    values = dict(
        mode=Mode.Segment,
        task="segment",
        class_names=CLASS_NAMES,
        image_size=640,
        model_size="v8n",
        ultralytics_version="8.4.190",
        dataset_splits=SPLITS,
        confidence_threshold=0.375,
        confidence_threshold_source="calibrated: best F1 on val",
        largest_element_objects=42,
        max_detection=300,
        base_model="yolov8n-seg.pt",
        settings={"num_epochs": 100, "batch_size": 16},
    )
    return training_metadata(**{**values, **overrides})


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("mode", "use_segment"),
    [(Mode.Segment, CLASS_NAMES), (Mode.BBox, []), (Mode.OBB, [])],
)
def test_configuration_per_mode(mode, use_segment):
    assert configuration(mode) == {
        "thumbnail_size": 640,
        "use_segment": use_segment,
        "confidence_threshold": 0.375,
        "max_detection": 400,
    }


def test_use_segment_holds_the_raw_class_names():
    """The segmenter compares use_segment with the model's class names as they are."""
    names = ["Text Line", "décor"]
    assert configuration(Mode.Segment, class_names=names)["use_segment"] == names


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("confidence_threshold", 0),
        ("confidence_threshold", 1.5),
        ("max_detection", 0),
        ("max_detection", 300.0),
        ("max_detection", True),
    ],
)
def test_invalid_derived_values_are_refused(field, value):
    values = dict(
        use_segment=CLASS_NAMES, image_size=640, confidence_threshold=0.375, max_detection=400
    )
    with pytest.raises(ValueError, match=field):
        segmenter_configuration(**{**values, field: value})


# ---------------------------------------------------------------- metadata and description


def test_training_metadata():
    result = metadata()
    assert result == {
        "mode": "segment",
        "task": "segment",
        "class_names": CLASS_NAMES,
        "image_size": 640,
        "ultralytics_model_size": "v8n",
        "ultralytics_version": "8.4.190",
        "base_model": "yolov8n-seg.pt",
        "dataset": {
            "train": {
                "elements": 6,
                "images": 6,
                "objects": {"text_line": 100, "illustration": 6},
                "objects_with_several_parts": 0,
                "skipped": {"type not requested": 3},
            },
            "val": {
                "elements": 2,
                "images": 2,
                "objects": {"text_line": 36, "illustration": 2},
                "objects_with_several_parts": 0,
                "skipped": {},
            },
        },
        "confidence_threshold": 0.375,
        "confidence_threshold_source": "calibrated: best F1 on val",
        "largest_element_objects": 42,
        "max_detection": 300,
        "settings": {"num_epochs": 100, "batch_size": 16},
        "derived": [],
    }
    # training.json is plain JSON
    assert json.loads(json.dumps(result)) == result


def test_description_sections_in_order():
    description = describe(metadata())
    positions = [
        description.index(part)
        for part in (
            "YOLOv8n trained in segment mode on `text_line`, `illustration`",
            "## Page-level evaluation (confidence ≥ 0.375",
            PAGE_TABLE,
            "## Worst elements",
            WORST,
            "## Ultralytics metrics",
            MAP_TABLE,
            "## Training",
            "### Dataset",
        )
    ]
    assert positions == sorted(positions)


def test_description_holds_the_training_facts():
    description = describe(metadata(mode=Mode.OBB, task="obb", settings={"kwargs": "a|b"}))
    for row in (
        "| mode | obb (Ultralytics task obb) |",
        "| class names | text_line, illustration |",
        "| image size | 640 px |",
        "| YOLO size | v8n |",
        "| Ultralytics | 8.4.190 |",
        "| base model | yolov8n-seg.pt |",
        "| confidence threshold | 0.375 (calibrated: best F1 on val) |",
        "| max detections | 300 (largest element: 42 objects) |",
        "| kwargs | a\\|b |",
        # Dataset counts, one column per split
        "| | train | val |",
        "| elements | 6 | 2 |",
        "| objects: text_line | 100 | 36 |",
        "| skipped: type not requested | 3 | 0 |",
    ):
        assert row in description, row


def test_payload():
    config = configuration(Mode.BBox)
    payload = ModelVersion(config, "# text").payload()
    assert payload == {"configuration": config, "description": "# text"}
    assert payload["configuration"] is not config


def test_derived_settings_are_in_the_description():
    derived = [
        "max_det: 400. element p holds 342 objects … Override: `advanced.training_kwargs` max_det: 400"
    ]
    description = describe(metadata(derived=derived))
    assert "### Settings read from the dataset" in description and derived[0] in description
    assert "Settings read from the dataset" not in describe(metadata())
