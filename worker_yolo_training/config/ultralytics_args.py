"""Which Ultralytics arguments users may set in `advanced.training_kwargs`, and how their values are
typed and checked: knowledge of Ultralytics' argument table, kept apart from our own options."""

from __future__ import annotations

import ast
import difflib
import functools
import importlib.util
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from worker_yolo_training.core import DEFAULT_THRESHOLD

# Training arguments the worker decides, or that have a key of their own
WORKER_TRAINING_ARGUMENTS = {
    **dict.fromkeys(
        (
            "data",
            "model",
            "cfg",
            "project",
            "name",
            "save_dir",
            "exist_ok",
            "resume",
            "task",
            "mode",
            "source",
            "device",
            "pretrained",
            "split",
            "save",
            "tracker",
            "format",
        ),
        "is decided by the worker",
    ),
    # The classes are `class_names`, in order: the report and the inference worker rely on it
    "single_cls": "would merge `class_names` into one class",
    "cls_remap": "would renumber `class_names`",
    "classes": "would drop some of `class_names`: list only the ones to learn in `class_names`",
    "epochs": "use `num_epochs`",
    "imgsz": "use `image_size`",
    "batch": "use `batch_size`",
    "patience": "use `advanced.patience`",
    "workers": "use `advanced.workers`",
}
# Ultralytics arguments of prediction and export only: they do nothing in training
NOT_TRAINING_ARGUMENTS = {
    "vid_stride", "stream_buffer", "visualize", "augment", "agnostic_nms", "retina_masks",
    "embed", "show", "save_frames", "save_txt", "save_conf", "save_crop", "show_labels",
    "show_conf", "show_boxes", "line_width", "optimize", "dynamic", "simplify", "opset",
    "workspace", "dnn", "quantize", "nms", "half", "int8", "keras",
}  # fmt: skip


def _ultralytics_file(name: str) -> Path | None:
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / "cfg" / name


@functools.cache  # read once per process; callers must not modify it
def ultralytics_defaults() -> dict[str, Any]:
    """Ultralytics' argument defaults, read from its `cfg/default.yaml` without importing it
    (importing Ultralytics takes seconds; configuration errors must come at once)."""
    path = _ultralytics_file("default.yaml")
    # libyaml's loader when PyYAML has it: a tenth of the pure-Python one's time
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return (yaml.load(path.read_text(), Loader=loader) or {}) if path else {}


# The tables with which Ultralytics' `cfg.check_cfg` checks arguments when training starts
CHECK_TABLES = (
    "CFG_FLOAT_KEYS", "CFG_FRACTION_KEYS", "CFG_INT_KEYS", "CFG_INT_MIN", "CFG_BOOL_KEYS",
    "CFG_STR_KEYS",
)  # fmt: skip


@functools.cache  # read once per process (20 ms); callers must not modify it
def ultralytics_check_tables() -> dict[str, Any]:
    """Ultralytics' argument tables (`CFG_FRACTION_KEYS`, `CFG_INT_MIN`, …), read as literals from
    its `cfg/__init__.py` without importing it (that import takes 1.5 s: it loads PyTorch)."""
    path = _ultralytics_file("__init__.py")
    tables: dict[str, Any] = {name: {} for name in CHECK_TABLES}
    for node in ast.parse(path.read_text()).body if path else ():
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) in tables:
            value = node.value
            if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "frozenset":
                value = value.args[0]
            tables[node.targets[0].id] = ast.literal_eval(value)
    return tables


# What Ultralytics only finds out after the whole extraction, or not at all
# `BaseTrainer.build_optimizer` (matched case-insensitively; others raise NotImplementedError)
OPTIMIZERS = ("Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSprop", "SGD", "MuSGD", "auto")
# `data.augment.v8_transforms`: any value but "flip" silently means "mixup"
COPY_PASTE_MODES = ("flip", "mixup")
# Loss gains and warm-up: Ultralytics checks their type only; a negative gain rewards errors
NON_NEGATIVE = (
    "box", "cls", "dfl", "pose", "kobj", "rle", "angle", "dlog", "dgrad", "dis", "warmup_epochs",
)  # fmt: skip


def _check_problem(key: str, value: Any, tables: dict[str, Any]) -> str | None:
    """What Ultralytics' `check_cfg` would reject when training starts (ranges, integers)."""
    if key in tables["CFG_INT_KEYS"] and not isinstance(value, int):
        return "expects an integer"
    minimum = tables["CFG_INT_MIN"].get(key)
    if minimum is not None and value < minimum:
        return f"must be at least {minimum}"
    if key == "fraction":
        if not (0 < value <= 1 or (isinstance(value, int) and value > 1)):
            return "must be a ratio in (0, 1] or a count of images above 1"
    elif (key in tables["CFG_FRACTION_KEYS"] or key == "scale") and not 0 <= value <= 1:
        return "must be between 0 and 1"
    return None


def _value_problem(key: str, value: Any, tables: dict[str, Any]) -> str | None:
    """Why Ultralytics would refuse or misuse a value of the right type; None when it is fine."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        if key == "optimizer" and str(value).lower() not in {o.lower() for o in OPTIMIZERS}:
            return f"must be one of {', '.join(OPTIMIZERS)}"
        if key == "copy_paste_mode" and value not in COPY_PASTE_MODES:
            return f"must be one of {', '.join(COPY_PASTE_MODES)}"
        return None
    if not math.isfinite(value):
        return "must be a finite number"
    if key in NON_NEGATIVE and value < 0:
        return "must not be negative"
    if key == "time" and value <= 0:
        return "must be a positive number of hours"
    return _check_problem(key, value, tables)


def _typed(value: Any) -> Any:
    """Arkindex dict fields hold text: read `3`, `1e-3`, `true`, `[1, 2]` as numbers, YAML values."""
    if not isinstance(value, str):
        return value
    for number in (int, float):
        try:
            return number(value)
        except ValueError:
            pass
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


# Ultralytics arguments whose default does not tell every allowed value
OTHER_ALLOWED_VALUES = {
    "cache": ("ram", "disk"),
    "amp": ("fp16", "bf16", "fp32"),
    "compile": ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
}
# Arguments whose default is None but whose values Ultralytics types (`conf`: its prediction
# default, the inference workers' too)
TYPED_WHEN_NONE = {"time": 1.0, "conf": DEFAULT_THRESHOLD, "channels_last": True}


def _matches(value: Any, default: Any) -> bool:
    if default is None:
        return True
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
        return value.is_integer()  # `nbs: 1e2` as Ultralytics takes it, not `nbs: 2.5`
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int | float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, type(default))


def _as_default(key: str, value: Any, default: Any) -> Any:
    """A number of the type of its default (`1e3` → 1000 for an integer argument), as
    Ultralytics converts it; a `fraction` above 1 stays an integer: a count of images."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if isinstance(default, float) and not (key == "fraction" and isinstance(value, int)):
        return float(value)
    return int(value) if isinstance(default, int) and not isinstance(default, bool) else value


def parse_training_kwargs(value: Any) -> dict:
    """`advanced.training_kwargs`: Ultralytics training hyperparameters, typed from their text."""
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a mapping of Ultralytics arguments to values, got {value!r}")
    if not value:
        return {}  # nothing to check against Ultralytics' files (30 ms to read them)
    defaults = ultralytics_defaults()
    defaults = {
        **defaults,
        **{key: TYPED_WHEN_NONE[key] for key in TYPED_WHEN_NONE if key in defaults},
    }
    tables = ultralytics_check_tables()
    allowed = set(defaults) - set(WORKER_TRAINING_ARGUMENTS) - NOT_TRAINING_ARGUMENTS
    parsed, problems = {}, []
    for key, raw in value.items():
        typed = _typed(raw)
        if key in WORKER_TRAINING_ARGUMENTS:
            problems.append(f"{key!r} {WORKER_TRAINING_ARGUMENTS[key]}")
        elif key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{key!r} is not an Ultralytics training argument{hint}")
        elif not _matches(typed, defaults[key]) and typed not in OTHER_ALLOWED_VALUES.get(key, ()):
            expected = type(defaults[key]).__name__
            problems.append(f"{key!r} expects a {expected} like {defaults[key]!r}, got {raw!r}")
        else:
            typed = _as_default(key, typed, defaults[key])
            problem = _value_problem(key, typed, tables)
            if problem:
                problems.append(f"{key!r} {problem}, got {raw!r}")
            else:
                parsed[key] = typed
    if problems:
        raise ValueError("; ".join(problems))
    return parsed
