"""The worker's configuration: one typed object, parsed and validated once.

The keys are the contract with the workers' manifests (`arkindex/*.yml`) and with
the configurations users saved in Arkindex. Groups reach the worker as flat keys
(`advanced.batch_size`); a local YAML file may also nest them (`advanced: {batch_size: 4}`).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from teklia_toolbox.config import UNSET, ConfigParser
from teklia_toolbox.config import ConfigurationError as ToolboxConfigurationError

from worker_yolo_training.config import values
from worker_yolo_training.config.teklia import from_teklia
from worker_yolo_training.config.ultralytics_args import parse_training_kwargs
from worker_yolo_training.core import SEGMENTER_KEYS, SEGMENTER_MODES, Mode

logger = logging.getLogger(__name__)

GROUP_SEPARATOR = "."
MODEL_SIZES = tuple(
    f"{family}{scale}" for family in ("v8", "11", "26") for scale in ("n", "s", "m", "l", "x")
)


class ConfigurationError(ValueError):
    """The configuration is invalid; `problems` lists every problem, one sentence each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            "Invalid configuration:\n" + "\n".join(f"  - {problem}" for problem in problems)
        )


# ---------------------------------------------------------------- the options


@dataclass(frozen=True)
class Option:
    """One configuration key, as users see it in the Arkindex modal and in YAML files. Declared
    once, on its `TrainingConfig` field (`option()`); the manifests are generated from it."""

    key: str
    kind: str  # manifest type: element_type, model, enum, int, float, bool, string, dict
    default: Any
    title: str
    help: str
    parse: Callable[[Any], Any] = field(repr=False, compare=False, default=lambda v: v)
    choices: tuple[str, ...] = ()
    required: bool = False
    many: bool = False

    @property
    def group(self) -> str | None:
        """The manifest group of a flat key (`advanced` for `advanced.patience`)."""
        return self.key.split(GROUP_SEPARATOR)[0] if GROUP_SEPARATOR in self.key else None


def option(
    key: str,
    kind: str,
    default: Any,
    title: str,
    help: str,
    parse: Callable[[Any], Any],
    *,
    choices: tuple[str, ...] = (),
    many: bool = False,
) -> Any:
    """A `TrainingConfig` field declared as a configuration option (the only place an option is
    written). `UNSET` as default makes it required."""
    declared = Option(key, kind, default, title, help, parse, choices, default is UNSET, many)
    if default is UNSET:
        return field(metadata={"option": declared})
    if isinstance(default, dict):
        return field(default_factory=dict, metadata={"option": declared})
    return field(default=default, metadata={"option": declared})


MODES = tuple(mode.value for mode in Mode)
# What each mode predicts, in the help of `mode` (each worker's modal lists the modes it offers)
MODE_HELP = {
    Mode.Segment: "masks (polygons)",
    Mode.BBox: "axis-aligned boxes",
    Mode.OBB: "oriented boxes",
    Mode.Classify: "one class per dataset element, from its classifications",
}


def mode_help(modes: tuple[Mode, ...] = tuple(Mode)) -> str:
    """The help of `mode`, for these modes."""
    return "; ".join(f"{mode.value}: {MODE_HELP[mode]}" for mode in modes) + "."


PUBLISH_IF = ("always", "better")


@dataclass(frozen=True)
class TrainingConfig:
    """Everything the worker was asked to do, typed and validated; each field is an option."""

    class_names: tuple[str, ...] = option(
        "class_names",
        "element_type",
        UNSET,
        "Element types to predict",
        "Slugs of the element types the model learns to find (classify mode, the worker YOLO "
        "classification training: the classification class names it learns to give); the class "
        "index is the order of this list.",
        values.class_names,
        many=True,
    )
    target_model_id: str | None = option(
        "target_model_id",
        "model",
        None,
        "Model that receives the new version",
        "The Arkindex model in which the trained weights are published (required in Arkindex).",
        values.model_id,
    )
    mode: Mode = option(  # noqa: RUF009 (option() is a dataclass field)
        "mode",
        "enum",
        Mode.Segment,
        "Prediction mode",
        mode_help(),
        lambda value: Mode(values.choice(MODES)(value)),
        choices=MODES,
    )
    model_size: str = option(
        "ultralytics_model_size",
        "enum",
        "v8m",
        "YOLO version and size",
        "Ultralytics architecture and size (n, s, m, l, x) of YOLOv8, YOLO11 or YOLO26.",
        values.choice(MODEL_SIZES),
        choices=MODEL_SIZES,
    )
    image_size: int = option(
        "image_size",
        "int",
        640,
        "Image size",
        "Longest side, in pixels, of the training images (a multiple of 32).",
        values.image_size,
    )
    batch_size: int = option(
        "batch_size",
        "int",
        16,
        "Batch size",
        "Images per training batch; -1 lets Ultralytics pick one that fits the GPU memory.",
        values.integer(1, extra=(-1,)),
    )
    num_epochs: int = option(
        "num_epochs", "int", 100, "Epochs", "Number of training epochs.", values.integer(1)
    )
    pretrained: bool = option(
        "advanced.pretrained",
        "bool",
        True,
        "Start from pretrained weights",
        "Start from Ultralytics' pretrained weights (COCO; ImageNet in classify mode); false trains "
        "from the architecture alone.",
        values.boolean,
    )
    patience: int = option(
        "advanced.patience",
        "int",
        50,
        "Early-stopping patience",
        "Epochs without improvement before training stops.",
        values.integer(0),
    )
    workers: int = option(
        "advanced.workers",
        "int",
        8,
        "Data-loader workers",
        "Processes loading training images (forced to 0 on CPU).",
        values.integer(0),
    )
    worker_runs: tuple[str, ...] = option(
        "advanced.worker_runs",
        "string",
        (),
        "Annotation sources",
        "Only use annotations created by these worker run IDs and/or 'manual' (no worker run). Empty: all.",
        values.worker_runs,
        many=True,
    )
    contrast: bool = option(
        "advanced.contrast",
        "bool",
        False,
        "Enhance contrast",
        "Convert images to grayscale and equalise their histogram.",
        values.boolean,
    )
    max_failed_images: float = option(
        "advanced.max_failed_images",
        "float",
        0.05,
        "Tolerated image failures",
        "Fraction of a split's images that may fail to download before the run stops.",
        values.fraction,
    )
    confidence_threshold: float | None = option(
        "advanced.confidence_threshold",
        "float",
        None,
        "Confidence threshold",
        "Threshold published for the inference worker, in (0, 1]. Empty: the one that maximises "
        "the page-level F1 on val (classify mode: the macro-F1 of the elements of val).",
        values.threshold,
    )
    baseline_model_version: str | None = option(
        "advanced.baseline_model_version",
        "string",
        None,
        "Model version to compare with",
        "UUID of the model version the new one is compared with when the run fine-tunes none. "
        "Empty: the latest available version of target_model_id.",
        values.model_version_id,
    )
    publish_if: str = option(
        "advanced.publish_if",
        "enum",
        PUBLISH_IF[0],
        "Publish the new version",
        "always; better: only when its page-level F1 on test (val without test) is not lower "
        "than the baseline's (the version fine-tuned, --baseline or the target model's latest); "
        "else no model version is created, the run ends with the results archive.",
        values.choice(PUBLISH_IF),
        choices=PUBLISH_IF,
    )
    training_kwargs: dict = option(  # noqa: RUF009 (option() is a dataclass field)
        "advanced.training_kwargs",
        "dict",
        {},
        "Extra training hyperparameters",
        "Other Ultralytics training arguments, e.g. lr0: 0.01, optimizer: SGD.",
        parse_training_kwargs,
    )


OPTION_FIELDS = {item.metadata["option"].key: item.name for item in fields(TrainingConfig)}
OPTIONS: tuple[Option, ...] = tuple(item.metadata["option"] for item in fields(TrainingConfig))
OPTIONS_BY_KEY = {declared.key: declared for declared in OPTIONS}
KEYS_OF_FIELDS = {name: key for key, name in OPTION_FIELDS.items()}
# The options `training.json` records under `settings` (by field), besides those it names itself
RECORDED_SETTINGS = ("num_epochs", "batch_size", "pretrained", "contrast", "training_kwargs")


@dataclass(frozen=True)
class ModalField:
    """How one worker's configuration modal shows an option, where it differs from the option."""

    kind: str
    title: str
    help: str


# The classification training worker (arkindex/worker-yolo-training-classify.yml, `mode` fixed to
# classify): its classes are classification (ML) class names, which no field type of the Arkindex
# worker configuration lists, so the modal takes them as text
CLASSIFY_MODAL = {
    "class_names": ModalField(
        "string",
        "Classes to predict",
        "Names of the classification (ML) classes the model learns to give each dataset element, "
        "as in the corpus; the class index is the order of this list.",
    ),
}


def key_of(field_name: str) -> str:
    """The option key of a `TrainingConfig` field, as users write it (`advanced.contrast`)."""
    return KEYS_OF_FIELDS[field_name]


def recorded_settings(config: TrainingConfig) -> dict[str, Any]:
    """The settings `training.json` records, by field name."""
    return {name: getattr(config, name) for name in RECORDED_SETTINGS}


def flatten(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Turn nested groups (`advanced: {x: 1}`) into Arkindex's flat keys (`advanced.x`)."""
    flat = {}
    groups = {declared.group for declared in OPTIONS if declared.group}
    for key, value in raw.items():
        if key in groups and isinstance(value, Mapping):
            for child, child_value in value.items():
                flat[f"{key}{GROUP_SEPARATOR}{child}"] = child_value
        else:
            flat[key] = value
    return flat


def _parser() -> ConfigParser:
    parser = ConfigParser()
    for declared in OPTIONS:
        parser.add_option(declared.key, type=declared.parse, default=declared.default)
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


def warn_unknown_keys(flat: Mapping[str, Any]) -> None:
    """Unknown keys are ignored with a warning naming the closest known key."""
    for key in flat:
        if key not in OPTIONS_BY_KEY:
            close = difflib.get_close_matches(key, OPTIONS_BY_KEY, n=1)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            logger.warning(f"Unknown configuration key `{key}` is ignored{hint}")


def without_segmenter_keys(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration without the YOLO segmenter's keys that Arkindex merges in when this
    worker runs with a model version (its configuration is made for the segmenter)."""
    kept = {k: v for k, v in flat.items() if k in OPTIONS_BY_KEY or k not in SEGMENTER_KEYS}
    if kept.get("mode") in SEGMENTER_MODES:
        logger.warning(
            f"`mode` {kept.pop('mode')!r} is the YOLO segmenter's (from the model version's "
            f"configuration), not a training mode: using `mode` {Mode.Segment.value!r}"
        )
    return kept


def parse_config(raw: Mapping[str, Any] | None) -> TrainingConfig:
    """Parse a raw configuration mapping, reporting every problem at once.

    :raises ConfigurationError: listing each key at fault, its value and what is allowed.
    """
    flat = without_segmenter_keys(flatten(raw or {}))
    defaults = {declared.key: declared.default for declared in OPTIONS}
    flat, refused = from_teklia(flat, KEYS_OF_FIELDS, defaults)
    warn_unknown_keys(flat)
    try:
        values = _parser().parse_data(flat)
    except ToolboxConfigurationError as error:
        raise ConfigurationError(
            refused + [_describe(key, message, flat) for key, message in error.errors.items()]
        ) from None
    if refused:
        raise ConfigurationError(refused)
    config = TrainingConfig(**{name: values[key] for key, name in OPTION_FIELDS.items()})
    if config.mode is Mode.Classify and "fraction" in config.training_kwargs:
        # The classification dataset names its classes in `.ndjson.yaml`; with that file
        # Ultralytics' ClassificationDataset trains on every image whatever `fraction` says
        raise ConfigurationError(
            [
                "`advanced.training_kwargs` fraction: not available in classify mode (Ultralytics "
                "ignores it for the classification dataset layout); remove it"
            ]
        )
    return config
