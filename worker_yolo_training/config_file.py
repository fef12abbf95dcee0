"""Reading a local configuration file (`--config`): YAML, flat or nested, or Arkindex's form."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from worker_yolo_training.config import ConfigurationError


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a local configuration file: a flat or nested YAML mapping, or Arkindex's
    `{"configuration": [{"key": ..., "value": ...}]}` form (what RetrieveWorkerRunConfiguration serves)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, Mapping):
        raise ConfigurationError([f"{path}: expected a YAML mapping, got {type(data).__name__}"])
    if isinstance(data.get("configuration"), list):
        return {item["key"]: item["value"] for item in data["configuration"]}
    return dict(data)
