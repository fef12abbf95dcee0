"""Configurations written for Teklia's training workers run here unchanged.

`teklia-yolo-worker` 1.4.3 trains with two workers, `worker-yolo-train-detect` and
`worker-yolo-train-cls` (`worker_yolo/train/base.py`, `detection.py`, `classification.py`); the
keys they read are in `TEKLIA_KEYS`, the one table of what each becomes here. A key that is also
ours means the same; another is read as ours, with one log line saying so; a key that does nothing
in the configured mode is refused, naming it and what to use instead. The documentation's table
(docs/configuration.md) is generated from `TEKLIA_KEYS`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker_yolo_training.core import Mode

logger = logging.getLogger(__name__)

TEKLIA = "teklia-yolo-worker 1.4.3"
DETECTION_MODES = (Mode.Segment, Mode.BBox, Mode.OBB)


@dataclass(frozen=True)
class TekliaKey:
    """One key of teklia-yolo-worker 1.4.3's training configuration and what it becomes here."""

    key: str | None  # Teklia's key; None: the same key as ours (`field`'s)
    field: str  # the `TrainingConfig` field it sets
    argument: str | None = None  # or the Ultralytics argument it adds to `field`'s mapping
    modes: tuple[Mode, ...] = tuple(Mode)  # where it does something; refused in the others
    read: str = ""  # where teklia-yolo-worker reads it


TEKLIA_KEYS = (
    TekliaKey(None, "class_names", read="train/base.py `YOLOTrain.configure`"),
    TekliaKey(None, "target_model_id", read="train/base.py `YOLOTrain.configure`"),
    TekliaKey(None, "mode", read="train/detection.py: `bbox`, `segment`, `obb`"),
    TekliaKey(None, "model_size", read="train/detection.py, train/classification.py"),
    TekliaKey(None, "image_size", read="train/base.py `YOLOTrain.configure`"),
    TekliaKey(None, "num_epochs", read="train/base.py `build_kwargs` (`epochs`)"),
    TekliaKey("advanced.batch_size", "batch_size", read="train/base.py `build_kwargs` (`batch`)"),
    TekliaKey(None, "patience", read="train/base.py `build_kwargs`"),
    TekliaKey(None, "workers", read="train/base.py `build_kwargs`"),
    TekliaKey(None, "contrast", read="train/base.py, passed to the extraction"),
    TekliaKey(None, "worker_runs", read="train/base.py, passed to the extraction"),
    TekliaKey(
        None, "training_kwargs", read="train/base.py `build_kwargs`: text values read as literals"
    ),
    TekliaKey(
        "advanced.overlap_mask",
        "training_kwargs",
        "overlap_mask",
        DETECTION_MODES,
        "train/detection.py `build_kwargs`",
    ),
    TekliaKey(
        "advanced.mask_ratio",
        "training_kwargs",
        "mask_ratio",
        DETECTION_MODES,
        "train/detection.py `build_kwargs`",
    ),
    TekliaKey(
        "advanced.dropout",
        "training_kwargs",
        "dropout",
        (Mode.Classify,),
        "train/classification.py `build_kwargs`",
    ),
)


def _target(entry: TekliaKey, keys: Mapping[str, str]) -> str:
    """Our key (and argument) that a Teklia key becomes, as users write it."""
    ours = f"`{keys[entry.field]}`"
    return f"{ours} `{entry.argument}`" if entry.argument else ours


def _refusal(entry: TekliaKey, mode: str, keys: Mapping[str, str]) -> str:
    modes = ", ".join(m.value for m in entry.modes)
    instead = (
        "train with `mode: classify` (the classification training worker), or remove it"
        if Mode.Classify in entry.modes
        else "remove it"
    )
    return (
        f"`{entry.key}` ({TEKLIA}; here {_target(entry, keys)}) does nothing in {mode} mode, "
        f"only in {modes} mode: {instead}"
    )


def _differs(given: Any, value: Any) -> bool:
    """Whether two values differ once written as text (Arkindex dict values are text)."""
    return str(given) != str(value)


def _mapped(
    entry: TekliaKey, value: Any, result: dict, keys: Mapping[str, str], defaults: Mapping
) -> str | None:
    """Put a Teklia key's value under our key in `result`; the problem when ours disagrees."""
    ours = keys[entry.field]
    if entry.argument is None:
        given = result.get(ours, defaults[ours])
        if _differs(given, value) and _differs(given, defaults[ours]):
            return f"`{entry.key}` ({TEKLIA}) is {value!r} but `{ours}` is {given!r}: keep `{ours}` only"
        result[ours] = value
    else:
        arguments = result.get(ours) or {}
        if not isinstance(arguments, Mapping):
            return None  # the parser reports `ours` itself
        given = arguments.get(entry.argument, value)
        if _differs(given, value):
            return (
                f"`{entry.key}` ({TEKLIA}) is {value!r} but `{ours}` {entry.argument} is "
                f"{given!r}: keep `{ours}` {entry.argument} only"
            )
        result[ours] = {**arguments, entry.argument: value}
    logger.info(f"`{entry.key}` ({TEKLIA}) is read as {_target(entry, keys)}: {value!r}")
    return None


def from_teklia(
    flat: Mapping[str, Any], keys: Mapping[str, str], defaults: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """`flat` with teklia-yolo-worker's keys read as ours, and the problems (one sentence per
    refused key). `keys`: our option key of each `TrainingConfig` field; `defaults`: the default
    of each option key."""
    mode_key = keys["mode"]
    mode = str(flat.get(mode_key, defaults[mode_key]))
    result, problems = dict(flat), []
    for entry in TEKLIA_KEYS:
        if entry.key is None or entry.key not in flat:
            continue
        value = result.pop(entry.key)
        if mode in {m.value for m in Mode} and Mode(mode) not in entry.modes:
            problems.append(_refusal(entry, mode, keys))
            continue
        problem = _mapped(entry, value, result, keys, defaults)
        if problem:
            problems.append(problem)
    return result, problems


def teklia_table(keys: Mapping[str, str]) -> str:
    """The documentation's table of teklia-yolo-worker's keys and what each becomes here."""
    lines = [f"| {TEKLIA} key | here | where Teklia reads it |", "|---|---|---|"]
    for entry in TEKLIA_KEYS:
        if entry.key is None:
            lines.append(f"| `{keys[entry.field]}` | the same key | {entry.read} |")
            continue
        here = f"read as {_target(entry, keys)}, with a log line"
        if entry.modes != tuple(Mode):
            others = ", ".join(m.value for m in Mode if m not in entry.modes)
            here += f"; refused in {others} mode (it does nothing there)"
        lines.append(f"| `{entry.key}` | {here} | {entry.read} |")
    return "\n".join(lines)
