"""The workers' manifests and the documentation's option table, generated from the options
declared in `config/options.py` (`python -m worker_yolo_training.config.manifests`, or
`make manifests`).

- `arkindex/<slug>.yml`, one per worker, read by `arkindex worker import IMAGE` (arkindex-cli reads
  every `./arkindex/*.yml`): the detection training worker (`segment`, `bbox`, `obb`; classes
  are element types) and the classification training worker (`mode` fixed to `classify`; classes
  are classification class names, as text: no field type lists ML classes);
- `docs/configuration.md`: the option table, between the `options` markers, and the table of
  teklia-yolo-worker's training keys (`config/teklia.py`), between the `teklia` markers.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from teklia_toolbox.config import UNSET

from worker_yolo_training.config.options import (
    CLASSIFY_MODAL,
    KEYS_OF_FIELDS,
    OPTIONS,
    ModalField,
    Option,
    key_of,
    mode_help,
)
from worker_yolo_training.config.teklia import teklia_table
from worker_yolo_training.core import Mode

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Worker:
    """One Arkindex worker of this image: its manifest `arkindex/<slug>.yml`."""

    slug: str
    display_name: str
    description: str  # its Markdown description, inlined in the manifest
    modes: tuple[Mode, ...]  # the `mode` choices its modal offers (one: fixed)
    fields: Mapping[str, ModalField] = field(default_factory=dict)  # where its modal differs


WORKERS = (
    Worker(
        "worker-yolo-training",
        "YOLO training",
        "arkindex/description.md",
        (Mode.Segment, Mode.BBox, Mode.OBB),
    ),
    Worker(
        "worker-yolo-training-classify",
        "YOLO classification training",
        "arkindex/description-classify.md",
        (Mode.Classify,),
        CLASSIFY_MODAL,
    ),
)
COMMON = {
    "type": "training",
    "gpu_usage": "supported",
    "model_usage": "supported",
    # PyTorch's data loaders share tensors through /dev/shm: Docker's 64m default is too small
    "docker": {"command": "worker-yolo-training", "shm_size": "2g"},
}
GROUPS = {"advanced": ("Advanced settings", "Settings that rarely need changing.")}
OPTIONS_PAGE = "docs/configuration.md"
OPTIONS_MARKERS = ("<!-- options:start -->", "<!-- options:end -->")
TEKLIA_MARKERS = ("<!-- teklia:start -->", "<!-- teklia:end -->")
GENERATED = (
    "# Generated from worker_yolo_training/config/options.py by `make manifests`: do not edit.\n"
)


def _default(declared: Option) -> Any:
    if declared.default is UNSET or declared.default is None:
        return None
    default = declared.default
    return list(default) if isinstance(default, tuple) else json.loads(json.dumps(default))


def _constraints(declared: Option) -> dict:
    """Required, choices, default."""
    field: dict[str, Any] = {}
    if declared.required:
        field["required"] = True
    if declared.choices:
        field["choices"] = list(declared.choices)
    if _default(declared) is not None:
        field["default"] = _default(declared)
    return field


def _mode_field(declared: Option, worker: Worker) -> dict:
    """`mode`: the worker's modes; a single one is a fixed value (an enum needs two choices)."""
    shown = {"key": declared.key, "display_name": declared.title}
    shown["help_text"] = mode_help(worker.modes)
    if len(worker.modes) == 1:
        return {**shown, "type": "string", "default": worker.modes[0].value, "editable": False}
    choices = [mode.value for mode in worker.modes]
    default = declared.default if declared.default in choices else choices[0]
    return {**shown, "type": "enum", "choices": choices, "default": str(default)}


def _new_field(declared: Option, key: str, worker: Worker) -> dict:
    if declared.key == key_of("mode"):
        return {**_mode_field(declared, worker), "key": key}
    shown = worker.fields.get(
        declared.key, ModalField(declared.kind, declared.title, declared.help)
    )
    field = {"key": key, "display_name": shown.title, "help_text": shown.help, "type": shown.kind}
    if declared.many:
        field["many"] = True
    return {**field, **_constraints(declared)}


def manifest(worker: Worker, description: str) -> dict:
    """One worker's manifest: the options, `advanced.*` as a group."""
    configuration, groups = [], {}
    for declared in OPTIONS:
        if declared.group is None:
            configuration.append(_new_field(declared, declared.key, worker))
            continue
        if declared.group not in groups:
            title, help_text = GROUPS[declared.group]
            groups[declared.group] = {
                "key": declared.group,
                "display_name": title,
                "help_text": help_text,
                "type": "group",
                "children": [],
            }
            configuration.append(groups[declared.group])
        child = declared.key.removeprefix(f"{declared.group}.")
        groups[declared.group]["children"].append(_new_field(declared, child, worker))
    heading = {"slug": worker.slug, "display_name": worker.display_name}
    return {**heading, **COMMON, "description": description, "configuration": configuration}


def _type_text(declared: Option) -> str:
    if declared.kind == "enum":
        text = " \\| ".join(f"`{choice}`" for choice in declared.choices)
    elif declared.many:
        text = "list of element type slugs" if declared.kind == "element_type" else "list of str"
    else:
        text = {"model": "model UUID"}.get(declared.kind, declared.kind)
    if declared.required:
        return f"{text}, required"
    default = _default(declared)
    if default is None:
        return text
    return f"{text}, default `{default if isinstance(default, str) else json.dumps(default)}`"


def options_table() -> str:
    """The documentation's configuration table."""
    lines = ["| key | type, default | meaning |", "|---|---|---|"]
    lines += [f"| `{o.key}` | {_type_text(o)} | {o.help} |" for o in OPTIONS]
    return "\n".join(lines)


def _with_section(page: str, markers: tuple[str, str], table: str) -> str:
    start, end = markers
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(page):
        raise ValueError(f"{OPTIONS_PAGE} has no {start} … {end} section")
    return pattern.sub(lambda _: f"{start}\n{table}\n{end}", page)


def page_with_options(page: str) -> str:
    """The options page with its option table regenerated between the markers."""
    return _with_section(page, OPTIONS_MARKERS, options_table())


def page_with_tables(page: str) -> str:
    """The options page with both tables regenerated: options, and teklia-yolo-worker's keys."""
    return _with_section(page_with_options(page), TEKLIA_MARKERS, teklia_table(KEYS_OF_FIELDS))


def _dump(data: dict) -> str:
    return GENERATED + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def generated_files(root: Path = ROOT) -> dict[Path, str]:
    """Every generated file and its expected content."""
    files = {
        root / "arkindex" / f"{worker.slug}.yml": _dump(
            manifest(worker, (root / worker.description).read_text())
        )
        for worker in WORKERS
    }
    files[root / OPTIONS_PAGE] = page_with_tables((root / OPTIONS_PAGE).read_text())
    return files


def main() -> int:
    for path, content in generated_files().items():
        if not path.exists() or path.read_text() != content:
            path.write_text(content)
            print(f"Updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
