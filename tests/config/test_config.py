"""The configuration: both file forms, nested groups, defaults and reporting every problem."""

import importlib.util
import logging
from pathlib import Path

import pytest
import yaml

from worker_yolo_training.config import (
    OPTIONS,
    ConfigurationError,
    TrainingConfig,
    parse_config,
    read_config_file,
)
from worker_yolo_training.core import Mode
from worker_yolo_training.modes import spec_for

MODEL = "0a0b0c0d-0000-4000-8000-000000000001"
RUN = "0a0b0c0d-0000-4000-8000-000000000002"


def test_defaults():
    config = parse_config({"class_names": ["text_line"]})
    assert config == TrainingConfig(class_names=("text_line",))
    assert config.mode is Mode.Segment
    architecture = spec_for(config.mode).architecture
    assert architecture.weights(config.model_size) == "yolov8m-seg.pt"
    assert architecture.definition(config.model_size) == "yolov8m-seg.yaml"


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
    assert spec_for(config.mode).architecture.weights(config.model_size) == weights


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


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # What Ultralytics' check_cfg rejects only when training starts, after the extraction
        ({"fraction": 0}, "'fraction' must be a ratio in (0, 1] or a count of images above 1"),
        ({"nbs": 0}, "'nbs' must be at least 1, got 0"),
        ({"mask_ratio": "0"}, "'mask_ratio' must be at least 1"),
        ({"momentum": 1.5}, "'momentum' must be between 0 and 1, got 1.5"),
        ({"scale": -0.5}, "'scale' must be between 0 and 1"),
        ({"conf": 2}, "'conf' must be between 0 and 1"),
        ({"time": "soon"}, "'time' expects a float like 1.0, got 'soon'"),
        ({"nbs": "2.5"}, "'nbs' expects a int like 64, got '2.5'"),
        # What it finds out even later, or never
        ({"lr0": ".nan"}, "'lr0' must be a finite number, got '.nan'"),
        ({"box": "inf"}, "'box' must be a finite number"),
        ({"optimizer": "bogus"}, "'optimizer' must be one of Adam, Adamax, AdamW, NAdam, RAdam"),
        ({"copy_paste_mode": "blend"}, "'copy_paste_mode' must be one of flip, mixup"),
        ({"cls": -1}, "'cls' must not be negative, got -1"),
        ({"warmup_epochs": -3}, "'warmup_epochs' must not be negative"),
        ({"time": 0}, "'time' must be a positive number of hours, got 0"),
    ],
)
def test_training_kwargs_values_ultralytics_would_refuse_later(kwargs, expected):
    with pytest.raises(ConfigurationError) as error:
        parse_config({"class_names": ["a"], "advanced.training_kwargs": kwargs})
    assert expected in str(error.value)


def test_training_kwargs_values_ultralytics_accepts():
    config = parse_config(
        {
            "class_names": ["a"],
            "advanced.training_kwargs": {
                "fraction": 100,  # a count of images: stays an integer
                "nbs": "1e2",
                "optimizer": "adamw",  # matched case-insensitively, as the trainer does
                "amp": "bf16",
                "compile": "max-autotune",
                "time": 2,
                "conf": "0.3",
                "lr0": 0,
            },
        }
    )
    assert config.training_kwargs == {
        "fraction": 100,
        "nbs": 100,
        "optimizer": "adamw",
        "amp": "bf16",
        "compile": "max-autotune",
        "time": 2.0,
        "conf": 0.3,
        "lr0": 0.0,
    }
    assert type(config.training_kwargs["nbs"]) is int


VALUES = (-1, 0, 0.5, 1, 2, 1.5, 1e9, float("nan"), float("inf"), True, "x", "fp16", None)


def test_whatever_we_accept_ultralytics_check_cfg_accepts():
    """Our checks run at start without importing Ultralytics (PyTorch): they must refuse at least
    what its own `check_cfg` refuses when training starts, for every argument we let through."""
    from ultralytics.cfg import check_cfg

    from worker_yolo_training.config import (
        NOT_TRAINING_ARGUMENTS,
        WORKER_TRAINING_ARGUMENTS,
        ultralytics_defaults,
    )

    keys = set(ultralytics_defaults()) - set(WORKER_TRAINING_ARGUMENTS) - NOT_TRAINING_ARGUMENTS
    accepted = 0
    for key in sorted(keys):
        for value in VALUES:
            try:
                config = parse_config(
                    {"class_names": ["a"], "advanced.training_kwargs": {key: value}}
                )
            except ConfigurationError:
                continue
            accepted += 1
            check_cfg(dict(config.training_kwargs))  # raises if Ultralytics would refuse
    assert accepted > 100


def test_check_tables_and_optimizers_are_read_from_the_installed_ultralytics():
    import ast
    import inspect

    import ultralytics.cfg as cfg
    from ultralytics.engine.trainer import BaseTrainer

    from worker_yolo_training.config import (
        CHECK_TABLES,
        OPTIMIZERS,
        ultralytics_check_tables,
    )

    tables = ultralytics_check_tables()
    for name in CHECK_TABLES:
        assert tables[name] == getattr(cfg, name), name
    source = inspect.getsource(BaseTrainer.build_optimizer)
    (assignment,) = [
        node
        for node in ast.walk(ast.parse(source.strip().replace("\n    ", "\n")))
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "optimizers"
    ]
    assert ast.literal_eval(assignment.value) == set(OPTIMIZERS)


def test_configuration_errors_stay_fast_without_importing_pytorch():
    import subprocess
    import sys

    # Fast because neither is imported (no timing threshold: the machine's load would decide)
    script = (
        "import sys\n"
        "from worker_yolo_training.config import ConfigurationError, parse_config\n"
        "try:\n"
        "    parse_config({'class_names': ['a'], 'advanced.training_kwargs': {'nbs': 0}})\n"
        "except ConfigurationError as error:\n"
        "    print(error)\n"
        "print(sorted({'torch', 'ultralytics'} & set(sys.modules)))\n"
    )
    output = subprocess.check_output([sys.executable, "-c", script], text=True)
    assert "nbs" in output
    assert output.splitlines()[-1] == "[]"


def test_absurd_image_size_is_refused():
    with pytest.raises(ConfigurationError, match="at most 4096, got 100000"):
        parse_config({"class_names": ["a"], "image_size": 100000})


def test_segmenter_keys_of_a_model_version_are_ignored_quietly(caplog):
    """Arkindex merges a model version's configuration (made for the YOLO segmenter) into the
    configuration of a fine-tuning run."""
    merged = {
        "class_names": ["a"],
        "thumbnail_size": 640,
        "use_segment": ["a"],
        "confidence_threshold": 0.4,
        "max_detection": 300,
        "iou": 0.7,
    }
    with caplog.at_level(logging.WARNING):
        assert parse_config(merged) == parse_config({"class_names": ["a"]})
    assert caplog.text == ""


def test_the_segmenters_mode_falls_back_to_ours_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        config = parse_config({"class_names": ["a"], "mode": "minimum_rotated_rectangle"})
    assert config.mode is Mode.Segment
    assert "the YOLO segmenter's" in caplog.text
    assert parse_config({"class_names": ["a"], "mode": "bbox"}).mode is Mode.BBox


def test_no_training_kwargs_read_no_ultralytics_file():
    # Reading Ultralytics' defaults and check tables takes 30 ms of every run's start: only
    # when there is something to check against them
    from worker_yolo_training.config import ultralytics_check_tables, ultralytics_defaults

    ultralytics_defaults.cache_clear()
    ultralytics_check_tables.cache_clear()
    parse_config({"class_names": ["a"]})
    parse_config({"class_names": ["a"], "advanced.training_kwargs": {}})
    assert ultralytics_defaults.cache_info().misses == 0
    assert ultralytics_check_tables.cache_info().misses == 0
    parse_config({"class_names": ["a"], "advanced.training_kwargs": {"lr0": 0.01}})
    assert ultralytics_defaults.cache_info().misses == 1


def test_ultralytics_defaults_are_its_default_yaml_as_pyyaml_reads_it():
    from worker_yolo_training.config import ultralytics_defaults

    path = Path(importlib.util.find_spec("ultralytics").origin).parent / "cfg" / "default.yaml"
    assert ultralytics_defaults() == yaml.safe_load(path.read_text())
