"""Which Ultralytics arguments users may set in `advanced.training_kwargs`, and how their values are
typed and checked: knowledge of Ultralytics' argument table, kept apart from our own options."""

from __future__ import annotations

import difflib
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

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


def ultralytics_defaults() -> dict[str, Any]:
    """Ultralytics' argument defaults, read from its `cfg/default.yaml` without importing it
    (importing Ultralytics takes seconds; configuration errors must come at once)."""
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(spec.submodule_search_locations[0]) / "cfg" / "default.yaml"
    return yaml.safe_load(path.read_text()) or {}


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
OTHER_ALLOWED_VALUES = {"cache": ("ram", "disk")}


def _matches(value: Any, default: Any) -> bool:
    if default is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int | float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, type(default))


def parse_training_kwargs(value: Any) -> dict:
    """`advanced.training_kwargs`: Ultralytics training hyperparameters, typed from their text."""
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a mapping of Ultralytics arguments to values, got {value!r}")
    defaults = ultralytics_defaults()
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
            is_number = isinstance(typed, int | float) and not isinstance(typed, bool)
            parsed[key] = float(typed) if isinstance(defaults[key], float) and is_number else typed
    if problems:
        raise ValueError("; ".join(problems))
    return parsed
