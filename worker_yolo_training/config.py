"""The worker's configuration: one typed object, parsed and validated once.

The keys are the contract with the worker's manifests (`.arkindex.yml`, `arkindex/*.yml`) and with
the configurations users saved in Arkindex. Groups reach the worker as flat keys
(`advanced.batch_size`); a local YAML file may also nest them (`advanced: {batch_size: 4}`).
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from teklia_toolbox.config import UNSET, ConfigParser
from teklia_toolbox.config import ConfigurationError as ToolboxConfigurationError

from worker_yolo_training.ultralytics_args import parse_training_kwargs

logger = logging.getLogger(__name__)

GROUP_SEPARATOR = "."
MANUAL = "manual"
UUID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
MODEL_SIZES = tuple(
    f"{family}{scale}" for family in ("v8", "11", "26") for scale in ("n", "s", "m", "l", "x")
)
# Ultralytics rounds image sizes to its largest stride; we do it visibly instead.
IMAGE_SIZE_STRIDE = 32


class Mode(StrEnum):
    """What the model predicts for each object."""

    Segment = "segment"
    BBox = "bbox"
    OBB = "obb"

    @property
    def task(self) -> str:
        """The Ultralytics task trained for this mode."""
        return {"segment": "segment", "bbox": "detect", "obb": "obb"}[self.value]

    @property
    def weights_suffix(self) -> str:
        """Suffix of Ultralytics' file names for this task (`yolov8m-seg.pt`)."""
        return {"segment": "-seg", "bbox": "", "obb": "-obb"}[self.value]


class ConfigurationError(ValueError):
    """The configuration is invalid; `problems` lists every problem, one sentence each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            "Invalid configuration:\n" + "\n".join(f"  - {problem}" for problem in problems)
        )


# ---------------------------------------------------------------- value parsers


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    raise ValueError(f"expected true or false, got {value!r}")


def _int(minimum: int, extra: tuple[int, ...] = ()) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | str | float):
            raise ValueError(f"expected an integer, got {value!r}")
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {value!r}") from None
        if number < minimum and number not in extra:
            allowed = f"at least {minimum}" + "".join(f" or {x}" for x in extra)
            raise ValueError(f"must be {allowed}, got {number}")
        return number

    return parse


def _fraction(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number between 0 and 1, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number between 0 and 1, got {value!r}") from None
    if not 0 <= number <= 1:
        raise ValueError(f"expected a number between 0 and 1, got {number}")
    return number


def _choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"{value!r} is not one of: {', '.join(choices)}")
        return value

    return parse


def _string_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        # Tolerate a comma-separated string typed in a text field
        value = [part for part in value.split(",")]
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of strings, got {value!r}")
    items = tuple(str(item).strip() for item in value)
    if any(not item for item in items):
        raise ValueError(f"empty entry in {list(value)!r}")
    return items


def _class_names(value: Any) -> tuple[str, ...]:
    names = _string_list(value)
    if not names:
        raise ValueError("at least one element type is needed")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"duplicate class names: {', '.join(duplicates)}")
    return names


def _worker_runs(value: Any) -> tuple[str, ...]:
    # Exports hold lower-case ids
    runs = tuple(run if run == MANUAL else run.lower() for run in _string_list(value))
    bad = [run for run in runs if run != MANUAL and not UUID_PATTERN.match(run)]
    if bad:
        raise ValueError(
            f"{', '.join(map(repr, bad))}: each entry must be a worker run UUID or {MANUAL!r}"
        )
    return runs


def _model_id(value: Any) -> str:
    if not isinstance(value, str) or not UUID_PATTERN.match(value.strip()):
        raise ValueError(f"expected a model UUID, got {value!r}")
    return value.strip()


# ---------------------------------------------------------------- the option table


@dataclass(frozen=True)
class Option:
    """One configuration key, as users see it in the Arkindex modal and in YAML files."""

    key: str
    kind: str  # manifest type: element_type (many), model, enum, int, float, bool, string (many), dict
    default: Any
    title: str
    help: str
    parse: Callable[[Any], Any] = field(repr=False, compare=False, default=lambda v: v)
    choices: tuple[str, ...] = ()
    required: bool = False
    many: bool = False


OPTIONS: tuple[Option, ...] = (
    Option(
        "class_names",
        "element_type",
        UNSET,
        "Element types to predict",
        "Slugs of the element types the model learns to find; the class index is the order of this list.",
        _class_names,
        required=True,
        many=True,
    ),
    Option(
        "target_model_id",
        "model",
        None,
        "Model that receives the new version",
        "The Arkindex model in which the trained weights are published (required in Arkindex).",
        _model_id,
    ),
    Option(
        "mode",
        "enum",
        "segment",
        "Prediction mode",
        "segment: masks (polygons); bbox: axis-aligned boxes; obb: oriented boxes.",
        _choice(tuple(mode.value for mode in Mode)),
        choices=tuple(mode.value for mode in Mode),
    ),
    Option(
        "ultralytics_model_size",
        "enum",
        "v8m",
        "YOLO version and size",
        "Ultralytics architecture and size (n, s, m, l, x) of YOLOv8, YOLO11 or YOLO26.",
        _choice(MODEL_SIZES),
        choices=MODEL_SIZES,
    ),
    Option(
        "image_size",
        "int",
        640,
        "Image size",
        "Longest side, in pixels, of the training images (a multiple of 32).",
        _int(IMAGE_SIZE_STRIDE),
    ),
    Option(
        "batch_size",
        "int",
        16,
        "Batch size",
        "Images per training batch; -1 lets Ultralytics pick one that fits the GPU memory.",
        _int(1, extra=(-1,)),
    ),
    Option("num_epochs", "int", 100, "Epochs", "Number of training epochs.", _int(1)),
    Option(
        "advanced.pretrained",
        "bool",
        True,
        "Start from pretrained weights",
        "Start from Ultralytics' COCO weights; false trains from the architecture alone.",
        _bool,
    ),
    Option(
        "advanced.patience",
        "int",
        50,
        "Early-stopping patience",
        "Epochs without improvement before training stops.",
        _int(0),
    ),
    Option(
        "advanced.workers",
        "int",
        8,
        "Data-loader workers",
        "Processes loading training images (forced to 0 on CPU).",
        _int(0),
    ),
    Option(
        "advanced.worker_runs",
        "string",
        (),
        "Annotation sources",
        "Only use annotations created by these worker run IDs and/or 'manual' (no worker run). Empty: all.",
        _worker_runs,
        many=True,
    ),
    Option(
        "advanced.contrast",
        "bool",
        False,
        "Enhance contrast",
        "Convert images to grayscale and equalise their histogram.",
        _bool,
    ),
    Option(
        "advanced.max_failed_images",
        "float",
        0.05,
        "Tolerated image failures",
        "Fraction of a split's images that may fail to download before the run stops.",
        _fraction,
    ),
    Option(
        "advanced.training_kwargs",
        "dict",
        {},
        "Extra training hyperparameters",
        "Other Ultralytics training arguments, e.g. lr0: 0.01, optimizer: SGD.",
        parse_training_kwargs,
    ),
)
OPTIONS_BY_KEY = {option.key: option for option in OPTIONS}


# ---------------------------------------------------------------- the typed configuration


@dataclass(frozen=True)
class TrainingConfig:
    """Everything the worker was asked to do, typed and validated."""

    class_names: tuple[str, ...]
    target_model_id: str | None = None
    mode: Mode = Mode.Segment
    model_size: str = "v8m"
    image_size: int = 640
    batch_size: int = 16
    num_epochs: int = 100
    pretrained: bool = True
    patience: int = 50
    workers: int = 8
    worker_runs: tuple[str, ...] = ()
    contrast: bool = False
    max_failed_images: float = 0.05
    training_kwargs: dict = field(default_factory=dict)

    @property
    def weights_name(self) -> str:
        """File name of Ultralytics' pretrained weights for this size and mode."""
        return f"yolo{self.model_size}{self.mode.weights_suffix}.pt"

    @property
    def architecture_name(self) -> str:
        """File name of Ultralytics' architecture for this size and mode (no download needed)."""
        return f"yolo{self.model_size}{self.mode.weights_suffix}.yaml"


def flatten(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Turn nested groups (`advanced: {x: 1}`) into Arkindex's flat keys (`advanced.x`)."""
    flat = {}
    groups = {key.split(GROUP_SEPARATOR)[0] for key in OPTIONS_BY_KEY if GROUP_SEPARATOR in key}
    for key, value in raw.items():
        if key in groups and isinstance(value, Mapping):
            for child, child_value in value.items():
                flat[f"{key}{GROUP_SEPARATOR}{child}"] = child_value
        else:
            flat[key] = value
    return flat


def _parser() -> ConfigParser:
    parser = ConfigParser()
    for option in OPTIONS:
        parser.add_option(option.key, type=option.parse, default=option.default)
    return parser


def _describe(key: str, message: Any, raw: Mapping[str, Any]) -> str:
    if message == "This option is required":
        return f"`{key}` is required: {OPTIONS_BY_KEY[key].help}"
    value = raw.get(key)
    shown = (
        f" (got {value!r})"
        if not isinstance(value, Mapping | None) and str(value) not in str(message)
        else ""
    )
    return f"`{key}`: {message}{shown}"


def parse_config(raw: Mapping[str, Any] | None) -> TrainingConfig:
    """Parse a raw configuration mapping, reporting every problem at once.

    :raises ConfigurationError: listing each key at fault, its value and what is allowed.
    """
    flat = flatten(raw or {})
    for key in flat:
        if key not in OPTIONS_BY_KEY:
            close = difflib.get_close_matches(key, OPTIONS_BY_KEY, n=1)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            logger.warning(f"Unknown configuration key `{key}` is ignored{hint}")
    try:
        values = _parser().parse_data(flat)
    except ToolboxConfigurationError as error:
        raise ConfigurationError(
            [_describe(key, message, flat) for key, message in error.errors.items()]
        ) from None

    image_size = values["image_size"]
    if image_size % IMAGE_SIZE_STRIDE:
        rounded = round(image_size / IMAGE_SIZE_STRIDE) * IMAGE_SIZE_STRIDE
        logger.warning(
            f"`image_size` {image_size} is not a multiple of {IMAGE_SIZE_STRIDE}: using {rounded}"
        )
        image_size = rounded

    return TrainingConfig(
        class_names=values["class_names"],
        target_model_id=values["target_model_id"],
        mode=Mode(values["mode"]),
        model_size=values["ultralytics_model_size"],
        image_size=image_size,
        batch_size=values["batch_size"],
        num_epochs=values["num_epochs"],
        pretrained=values["advanced.pretrained"],
        patience=values["advanced.patience"],
        workers=values["advanced.workers"],
        worker_runs=tuple(values["advanced.worker_runs"]),
        contrast=values["advanced.contrast"],
        max_failed_images=values["advanced.max_failed_images"],
        training_kwargs=values["advanced.training_kwargs"],
    )
