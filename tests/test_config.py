"""The configuration: both file forms, nested groups, defaults and reporting every problem."""

import logging

import pytest
import yaml

from worker_yolo_training.config import (
    OPTIONS,
    ConfigurationError,
    Mode,
    TrainingConfig,
    parse_config,
)
from worker_yolo_training.config_file import read_config_file
from worker_yolo_training.tasks import architecture_name, task_for, weights_name

MODEL = "0a0b0c0d-0000-4000-8000-000000000001"
RUN = "0a0b0c0d-0000-4000-8000-000000000002"


def test_defaults():
    config = parse_config({"class_names": ["text_line"]})
    assert config == TrainingConfig(class_names=("text_line",))
    assert config.mode is Mode.Segment
    task = task_for(config.mode)
    assert weights_name(task, config.model_size) == "yolov8m-seg.pt"
    assert architecture_name(task, config.model_size) == "yolov8m-seg.yaml"


@pytest.mark.parametrize(
    ("mode", "size", "weights"),
    [
        ("bbox", "11s", "yolo11s.pt"),
        ("obb", "26x", "yolo26x-obb.pt"),
        ("segment", "v8n", "yolov8n-seg.pt"),
    ],
)
def test_weights_name_per_mode_and_size(mode, size, weights):
    config = parse_config({"class_names": ["a"], "mode": mode, "ultralytics_model_size": size})
    assert weights_name(task_for(config.mode), config.model_size) == weights


def test_flat_and_nested_advanced_keys_mean_the_same(tmp_path):
    nested = tmp_path / "nested.yml"
    nested.write_text(
        yaml.safe_dump(
            {
                "class_names": ["text_line", "illustration"],
                "advanced": {
                    "pretrained": False,
                    "worker_runs": [RUN, "manual"],
                    "training_kwargs": {"lr0": 0.01},
                },
            }
        )
    )
    flat = tmp_path / "flat.yml"
    flat.write_text(
        yaml.safe_dump(
            {
                "class_names": ["text_line", "illustration"],
                "advanced.pretrained": False,
                "advanced.worker_runs": [RUN, "manual"],
                "advanced.training_kwargs": {"lr0": 0.01},
            }
        )
    )
    assert parse_config(read_config_file(nested)) == parse_config(read_config_file(flat))
    config = parse_config(read_config_file(nested))
    assert config.pretrained is False
    assert config.worker_runs == (RUN, "manual")
    assert config.training_kwargs == {"lr0": 0.01}


def test_arkindex_configuration_form(tmp_path):
    path = tmp_path / "configuration.json"
    path.write_text(
        '{"configuration": ['
        '{"key": "class_names", "value": ["illustration"]},'
        f'{{"key": "target_model_id", "value": "{MODEL}", "secret": false}},'
        '{"key": "advanced.patience", "value": 3},'
        '{"key": "mode", "value": "bbox"}]}'
    )
    config = parse_config(read_config_file(path))
    assert config.class_names == ("illustration",)
    assert config.target_model_id == MODEL
    assert config.patience == 3
    assert config.mode is Mode.BBox


def test_every_problem_is_reported_at_once_with_key_and_value():
    with pytest.raises(ConfigurationError) as error:
        parse_config(
            {
                "class_names": [],
                "mode": "polygon",
                "ultralytics_model_size": "v9z",
                "num_epochs": 0,
                "batch_size": "big",
                "advanced.worker_runs": ["not-a-run"],
            }
        )
    message = str(error.value)
    for key, value in [
        ("class_names", "at least one"),
        ("mode", "'polygon'"),
        ("ultralytics_model_size", "'v9z'"),
        ("num_epochs", "0"),
        ("batch_size", "'big'"),
        ("advanced.worker_runs", "'not-a-run'"),
    ]:
        assert f"`{key}`" in message and value in message
    assert len(error.value.problems) == 6


def test_missing_class_names_and_duplicates():
    with pytest.raises(ConfigurationError, match="`class_names` is required"):
        parse_config({})
    with pytest.raises(ConfigurationError, match="duplicate class names: a"):
        parse_config({"class_names": ["a", "b", "a"]})


def test_image_size_is_rounded_to_a_multiple_of_32_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert parse_config({"class_names": ["a"], "image_size": 650}).image_size == 640
    assert "650" in caplog.text


def test_unknown_key_warns_with_the_closest_known_one(caplog):
    with caplog.at_level(logging.WARNING):
        parse_config({"class_names": ["a"], "num_epoch": 3})
    assert "`num_epoch`" in caplog.text and "`num_epochs`" in caplog.text


def test_batch_size_minus_one_means_auto():
    assert parse_config({"class_names": ["a"], "batch_size": -1}).batch_size == -1


def test_every_option_has_a_title_and_help():
    for option in OPTIONS:
        assert option.title and option.help, option.key


def test_training_kwargs_are_typed_from_text():
    config = parse_config(
        {
            "class_names": ["a"],
            "advanced.training_kwargs": {
                "lr0": "0.02",
                "cos_lr": "true",
                "optimizer": "SGD",
                "nbs": "8",
                "mosaic": 0,
            },
        }
    )
    assert config.training_kwargs == {
        "lr0": 0.02,
        "cos_lr": True,
        "optimizer": "SGD",
        "nbs": 8,
        "mosaic": 0.0,
    }
    assert isinstance(config.training_kwargs["mosaic"], float)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"data": "x.yaml"}, "'data' is decided by the worker"),
        ({"device": "0"}, "'device' is decided by the worker"),
        ({"resume": True}, "'resume' is decided by the worker"),
        ({"project": "/tmp"}, "'project' is decided by the worker"),
        ({"epochs": 3}, "'epochs' use `num_epochs`"),
        ({"single_cls": "true"}, "'single_cls' would merge `class_names` into one class"),
        ({"classes": [0]}, "'classes' would drop some of `class_names`"),
        ({"cache": "maybe"}, "'cache' expects a bool like False, got 'maybe'"),
        ({"imgsz": 320}, "'imgsz' use `image_size`"),
        ({"lr_0": 0.1}, "'lr_0' is not an Ultralytics training argument (did you mean 'lr0'?)"),
        ({"show": True}, "'show' is not an Ultralytics training argument"),
        ({"lr0": "fast"}, "'lr0' expects a float like 0.01, got 'fast'"),
        ({"cos_lr": "1"}, "'cos_lr' expects a bool like False, got '1'"),
    ],
)
def test_training_kwargs_rejected_with_a_clear_message(kwargs, expected):
    with pytest.raises(ConfigurationError) as error:
        parse_config({"class_names": ["a"], "advanced": {"training_kwargs": kwargs}})
    assert "`advanced.training_kwargs`" in str(error.value)
    assert expected in str(error.value)


def test_training_kwargs_numbers_in_any_notation_and_other_allowed_values():
    config = parse_config(
        {
            "class_names": ["a"],
            "advanced.training_kwargs": {"lr0": "1e-3", "warmup_epochs": "2", "cache": "ram"},
        }
    )
    assert config.training_kwargs == {"lr0": 0.001, "warmup_epochs": 2.0, "cache": "ram"}


def test_worker_run_ids_are_lower_cased_as_in_exports():
    config = parse_config({"class_names": ["a"], "advanced.worker_runs": [RUN.upper(), "manual"]})
    assert config.worker_runs == (RUN, "manual")
