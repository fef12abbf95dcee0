"""Parsers of option values: each takes what users wrote (YAML values, or text from Arkindex's
modal) and returns the typed value, or raises ValueError with a sentence saying what is allowed."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

MANUAL = "manual"
UUID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
# Ultralytics rounds image sizes to its largest stride; we do it visibly instead.
IMAGE_SIZE_STRIDE = 32
# Training memory grows with the square of the image size: 4096 takes 41× the memory of 640
MAX_IMAGE_SIZE = 4096


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    raise ValueError(f"expected true or false, got {value!r}")


def integer(
    minimum: int, extra: tuple[int, ...] = (), maximum: int | None = None
) -> Callable[[Any], int]:
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
        if maximum is not None and number > maximum:
            raise ValueError(f"must be at most {maximum}, got {number}")
        return number

    return parse


def image_size(value: Any) -> int:
    """A multiple of 32: Ultralytics rounds image sizes to its largest stride, we do it visibly."""
    size = integer(IMAGE_SIZE_STRIDE, maximum=MAX_IMAGE_SIZE)(value)
    if size % IMAGE_SIZE_STRIDE:
        rounded = round(size / IMAGE_SIZE_STRIDE) * IMAGE_SIZE_STRIDE
        logger.warning(
            f"`image_size` {size} is not a multiple of {IMAGE_SIZE_STRIDE}: using {rounded}"
        )
        return rounded
    return size


def fraction(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number between 0 and 1, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number between 0 and 1, got {value!r}") from None
    if not 0 <= number <= 1:
        raise ValueError(f"expected a number between 0 and 1, got {number}")
    return number


def threshold(value: Any) -> float | None:
    """A confidence threshold in (0, 1]; null (no value) means: calibrate it."""
    if value is None or value == "":
        return None
    number = fraction(value)
    if number == 0:
        raise ValueError("must be above 0 (leave it empty to calibrate it on val)")
    return number


def choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"{value!r} is not one of: {', '.join(choices)}")
        return value

    return parse


def string_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        # Tolerate a comma-separated string typed in a text field
        value = [part for part in value.split(",")]
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of strings, got {value!r}")
    items = tuple(str(item).strip() for item in value)
    if any(not item for item in items):
        raise ValueError(f"empty entry in {list(value)!r}")
    return items


def class_names(value: Any) -> tuple[str, ...]:
    names = string_list(value)
    if not names:
        raise ValueError("at least one element type is needed")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"duplicate class names: {', '.join(duplicates)}")
    return names


def worker_runs(value: Any) -> tuple[str, ...]:
    # Exports hold lower-case ids
    runs = tuple(run if run == MANUAL else run.lower() for run in string_list(value))
    bad = [run for run in runs if run != MANUAL and not UUID_PATTERN.match(run)]
    if bad:
        raise ValueError(
            f"{', '.join(map(repr, bad))}: each entry must be a worker run UUID or {MANUAL!r}"
        )
    return runs


def model_id(value: Any) -> str:
    if not isinstance(value, str) or not UUID_PATTERN.match(value.strip()):
        raise ValueError(f"expected a model UUID, got {value!r}")
    return value.strip()


def model_version_id(value: Any) -> str | None:
    """A model version UUID; empty: none."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not UUID_PATTERN.match(value.strip()):
        raise ValueError(f"expected a model version UUID, got {value!r}")
    return value.strip().lower()
