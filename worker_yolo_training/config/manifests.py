"""The worker's manifests and the documentation's option table, generated from the options
declared in `config/options.py` (`python -m worker_yolo_training.config.manifests`, or
`make manifests`).

- `arkindex/worker-yolo-training.yml`: new format, read by `arkindex worker import`;
- `.arkindex.yml`: old format (version 2), read by `arkindex worker publish`;
- `docs/configuration.md`: the option table, between the `options` markers.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from teklia_toolbox.config import UNSET

from worker_yolo_training.config.options import OPTIONS, Option

ROOT = Path(__file__).resolve().parents[2]
DESCRIPTION = "arkindex/description.md"
WORKER = {
    "slug": "worker-yolo-training",
    "display_name": "YOLO training",
    "type": "training",
    "gpu_usage": "supported",
    "model_usage": "supported",
    # PyTorch's data loaders share tensors through /dev/shm: Docker's 64m default is too small
    "docker": {"command": "worker-yolo-training", "shm_size": "2g"},
}
GROUPS = {"advanced": ("Advanced settings", "Settings that rarely need changing.")}
# The old format has no element type field: a list of element types is a list of strings there
OLD_SUBTYPES = {"element_type": "string", "string": "string"}
OPTIONS_PAGE = "docs/configuration.md"
OPTIONS_MARKERS = ("<!-- options:start -->", "<!-- options:end -->")
GENERATED = (
    "# Generated from worker_yolo_training/config/options.py by `make manifests`: do not edit.\n"
)


def _default(declared: Option) -> Any:
    if declared.default is UNSET or declared.default is None:
        return None
    default = declared.default
    return list(default) if isinstance(default, tuple) else json.loads(json.dumps(default))


def _constraints(declared: Option) -> dict:
    """What both formats say the same way: required, choices, default."""
    field: dict[str, Any] = {}
    if declared.required:
        field["required"] = True
    if declared.choices:
        field["choices"] = list(declared.choices)
    if _default(declared) is not None:
        field["default"] = _default(declared)
    return field


def _new_field(declared: Option, key: str) -> dict:
    field = {
        "key": key,
        "display_name": declared.title,
        "help_text": declared.help,
        "type": declared.kind,
    }
    if declared.many:
        field["many"] = True
    return {**field, **_constraints(declared)}


def new_manifest(description: str) -> dict:
    """The worker in the new format: options, `advanced.*` as a group."""
    configuration, groups = [], {}
    for declared in OPTIONS:
        if declared.group is None:
            configuration.append(_new_field(declared, declared.key))
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
        groups[declared.group]["children"].append(_new_field(declared, child))
    return {**WORKER, "description": description, "configuration": configuration}


def old_manifest() -> dict:
    """The worker in the old format: flat keys, lists as `list` with a subtype."""
    fields = {}
    for declared in OPTIONS:
        field: dict[str, Any] = {"title": declared.title}
        if declared.many:
            field.update(type="list", subtype=OLD_SUBTYPES[declared.kind])
        else:
            field["type"] = declared.kind
        fields[declared.key] = {**field, **_constraints(declared)}
    worker = {
        "slug": WORKER["slug"],
        "name": WORKER["display_name"],
        **{key: WORKER[key] for key in ("type", "gpu_usage", "model_usage")},
        "description": DESCRIPTION,
        "docker": WORKER["docker"],
        "user_configuration": fields,
    }
    return {"version": 2, "workers": [worker]}


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


def page_with_options(page: str) -> str:
    """The options page with its table regenerated between the markers."""
    start, end = OPTIONS_MARKERS
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(page):
        raise ValueError(f"{OPTIONS_PAGE} has no {start} … {end} section")
    return pattern.sub(lambda _: f"{start}\n{options_table()}\n{end}", page)


def _dump(data: dict) -> str:
    return GENERATED + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def generated_files(root: Path = ROOT) -> dict[Path, str]:
    """Every generated file and its expected content."""
    description = (root / DESCRIPTION).read_text()
    return {
        root / "arkindex" / f"{WORKER['slug']}.yml": _dump(new_manifest(description)),
        root / ".arkindex.yml": _dump(old_manifest()),
        root / OPTIONS_PAGE: page_with_options((root / OPTIONS_PAGE).read_text()),
    }


def main() -> int:
    for path, content in generated_files().items():
        if not path.exists() or path.read_text() != content:
            path.write_text(content)
            print(f"Updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
