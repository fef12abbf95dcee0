"""Reading a local configuration file (`--config`): YAML, flat or nested, or Arkindex's form.

The file is the user's, maybe not even a configuration: it is read with bounded time and memory
(at most 1 MB, no YAML alias, shallow nesting) and every problem names the file, and the line
when YAML gives it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from worker_yolo_training.config.options import ConfigurationError
from worker_yolo_training.core import not_a_file

# A configuration is a few hundred bytes: anything near this is not one
MAX_CONFIG_BYTES = 1_000_000
# Our deepest key is a list inside `advanced.training_kwargs` (4 levels)
MAX_DEPTH = 16
STANDARD_TAGS = "tag:yaml.org,2002:"
PYTHON_TAGS = f"{STANDARD_TAGS}python/"
# libyaml when PyYAML was built with it (same events, ten times faster)
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _problem(path: Path, message: str, mark: Any = None) -> ConfigurationError:
    where = f", line {mark.line + 1}" if mark is not None else ""
    return ConfigurationError([f"{path}{where}: {message}"])


def _read_text(path: Path) -> str:
    if why := not_a_file(path):  # never open a FIFO: it would wait for a writer
        raise _problem(path, f"cannot read the configuration file ({why})")
    try:
        with path.open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise _problem(path, f"cannot read the configuration file ({error.strerror})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise _problem(
            path, f"larger than {MAX_CONFIG_BYTES // 1_000_000} MB: not a configuration file"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _problem(path, f"not UTF-8 text (byte {error.start})") from None


def _check_events(path: Path, text: str) -> None:
    """Refuse aliases (they expand exponentially: the "billion laughs"), Python tags and deep
    nesting while scanning YAML events, before any object is built."""
    depth = 0
    for event in yaml.parse(text, Loader=Loader):
        if isinstance(event, yaml.AliasEvent):
            raise _problem(
                path,
                f"YAML aliases (*{event.anchor}) are not accepted in a configuration: "
                "write the values out",
                event.start_mark,
            )
        tag = str(getattr(event, "tag", None) or "")
        if tag.startswith(PYTHON_TAGS):
            shown = tag.replace(STANDARD_TAGS, "!!")
            raise _problem(
                path, f"YAML tag {shown} is not accepted: write plain values", event.start_mark
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _problem(path, f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _load(path: Path, text: str) -> Any:
    try:
        _check_events(path, text)
        return yaml.load(text, Loader=Loader)
    except yaml.MarkedYAMLError as error:
        context = f"{error.context}, " if error.context else ""
        raise _problem(
            path, f"invalid YAML: {context}{error.problem or error}", error.problem_mark
        ) from None
    except yaml.YAMLError as error:
        raise _problem(path, f"invalid YAML: {error}") from None


def _arkindex_form(path: Path, items: list) -> dict[str, Any]:
    problems, config = [], {}
    for index, item in enumerate(items, 1):
        if not isinstance(item, Mapping) or "key" not in item or "value" not in item:
            problems.append(
                f"{path}: item {index} of `configuration` needs a `key` and a `value`, "
                f"got {str(item)[:80]!r}"
            )
        elif not isinstance(item["key"], str):
            problems.append(f"{path}: item {index} of `configuration` has a key that is not text")
        else:
            config[item["key"]] = item["value"]
    if problems:
        raise ConfigurationError(problems)
    return config


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a local configuration file: a flat or nested YAML mapping, or Arkindex's
    `{"configuration": [{"key": ..., "value": ...}]}` form (what RetrieveWorkerRunConfiguration serves).

    :raises ConfigurationError: naming the file (and the line) when it cannot be read, is larger
        than 1 MB, is not YAML, uses aliases or Python tags, or is not a mapping of keys.
    """
    path = Path(path)
    data = _load(path, _read_text(path))
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise _problem(path, f"expected a mapping of configuration keys, got {type(data).__name__}")
    if isinstance(data.get("configuration"), list):
        return _arkindex_form(path, data["configuration"])
    keys = [key for key in data if not isinstance(key, str)]
    if keys:
        raise _problem(path, f"keys must be text, got {', '.join(map(repr, keys))}")
    return dict(data)
