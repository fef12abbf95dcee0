"""The worker's manifests: valid for Arkindex, and in line with the configuration the code parses.

`arkindex/<slug>.yml` (new format, `arkindex worker import`) is checked with the official
validator, `teklia-worker-configuration`; `.arkindex.yml` (old format, `arkindex worker publish`)
is converted in a temporary folder with that package's converter, which validates its output.
Both are compared, key by key, with `worker_yolo_training.config.OPTIONS`.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import tomllib
from pathlib import Path

import pytest
import yaml
from teklia_toolbox.config import UNSET
from worker_configuration.convert import convert_worker
from worker_configuration.validator import validate_file, validate_files

from worker_yolo_training.config import GROUP_SEPARATOR, OPTIONS, parse_config
from worker_yolo_training.config.manifests import generated_files, page_with_options

ROOT = Path(__file__).resolve().parents[2]
OLD_MANIFEST = ROOT / ".arkindex.yml"
NEW_MANIFESTS = sorted((ROOT / "arkindex").glob("*.yml"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# The old format has no element type field: a list of element types is a list of strings there.
OLD_LIST_SUBTYPES = {"element_type": "string", "string": "string"}
CLASS_NAMES = ["text_line", "illustration"]
# PyTorch's data loader workers share tensors through /dev/shm; Docker's 64m default is too small.
MIN_SHM_BYTES = 1 << 30


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def old_workers() -> list[dict]:
    return load(OLD_MANIFEST)["workers"]


def new_worker() -> dict:
    assert len(NEW_MANIFESTS) == 1, f"expected one worker file in arkindex/, got {NEW_MANIFESTS}"
    return load(NEW_MANIFESTS[0])


def new_fields(worker: dict) -> dict[str, dict]:
    """The new format's fields by the flat key the worker receives (`advanced.batch_size`)."""
    fields = {}
    for item in worker.get("configuration", []):
        if item["type"] == "group":
            for child in item["children"]:
                fields[f"{item['key']}{GROUP_SEPARATOR}{child['key']}"] = child
        else:
            fields[item["key"]] = item
    return fields


def old_fields(worker: dict) -> dict[str, dict]:
    return dict(worker.get("user_configuration", {}))


def as_json(value) -> str:
    """Compare defaults exactly: `true` differs from `1`, `640` from `640.0` and from `"640"`."""
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value, sort_keys=True)


def memory_bytes(size: str) -> int:
    number, unit = re.fullmatch(r"([0-9]+)([bkmg]?)", str(size)).groups()
    return int(number) * {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit]


def console_scripts() -> dict[str, str]:
    return PYPROJECT["project"]["scripts"]


# ---------------------------------------------------------------- the official validator


@pytest.mark.parametrize("path", NEW_MANIFESTS, ids=lambda path: path.name)
def test_new_manifest_passes_official_validator(path):
    # Raises yamale.YamaleError listing every problem
    validate_file(path)
    assert validate_files([path]) == 0


def test_new_manifest_is_named_after_its_slug():
    worker = new_worker()
    assert NEW_MANIFESTS[0].name == f"{worker['slug']}.yml"
    assert [old["slug"] for old in old_workers()] == [worker["slug"]]


def break_enum_default(worker):
    next(f for f in worker["configuration"] if f["key"] == "mode")["default"] = "polygon"


def break_many_dict(worker):
    group = next(f for f in worker["configuration"] if f["type"] == "group")
    next(f for f in group["children"] if f["type"] == "dict")["many"] = True


def break_required_group(worker):
    next(f for f in worker["configuration"] if f["type"] == "group")["required"] = True


def break_shm_size(worker):
    worker["docker"]["shm_size"] = "2 GB"


def break_duplicate_key(worker):
    worker["configuration"].append(dict(worker["configuration"][0]))


@pytest.mark.parametrize(
    ("breaker", "message"),
    [
        (break_enum_default, "configuration.mode: Default value must be one of the choices"),
        (break_many_dict, "Type dict is not supported when using 'many'"),
        (break_required_group, "configuration.advanced: A group cannot be required"),
        (break_shm_size, "shm_size"),
        (break_duplicate_key, "Duplicate key"),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_official_validator_rejects_broken_copy(tmp_path, capsys, breaker, message):
    """The validator really runs on our file's structure: a broken copy of it fails."""
    worker = new_worker()
    breaker(worker)
    path = tmp_path / NEW_MANIFESTS[0].name
    path.write_text(yaml.safe_dump(worker, sort_keys=False))

    assert validate_files([path]) == 1
    assert message in capsys.readouterr().err


def test_old_manifest_converts_to_the_new_one(tmp_path):
    """The official converter (run on a copy: its `convert` command deletes `.arkindex.yml`)
    turns the old manifest into a valid new one, without warnings, equal to ours but for what
    the old format cannot say: help texts, groups, element type lists."""
    shutil.copy(OLD_MANIFEST, tmp_path / OLD_MANIFEST.name)
    for worker in old_workers():
        description = tmp_path / worker["description"]
        description.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / worker["description"], description)

        # Validates its output with the official validator, raises on any error
        assert convert_worker(worker, tmp_path) is False, "the conversion logged warnings"

    converted = load(tmp_path / "arkindex" / NEW_MANIFESTS[0].name)
    ours = new_worker()
    top_level = ("slug", "display_name", "type", "gpu_usage", "model_usage", "docker")
    assert {key: converted.get(key) for key in top_level} == {
        key: ours.get(key) for key in top_level
    }
    assert converted["description"].strip() == ours["description"].strip()

    expected = {}
    for key, field in new_fields(ours).items():
        field = {name: value for name, value in field.items() if name != "help_text"}
        field["key"] = key
        if field["type"] == "element_type":
            field["type"] = "string"
        if not field.get("many"):
            field.pop("many", None)
        expected[key] = field
    assert {item["key"]: item for item in converted["configuration"]} == expected


# ---------------------------------------------------------------- generated from the options


def test_committed_files_equal_the_generated_ones():
    """Manifests and the documentation's option table derive from `config.OPTIONS`:
    `make manifests`."""
    for path, content in generated_files().items():
        assert path.read_text() == content, f"{path.name} is stale: run `make manifests`"


def test_options_table_is_regenerated_between_its_markers():
    page = "intro\n<!-- options:start -->\nold\n<!-- options:end -->\nrest\n"
    updated = page_with_options(page)
    assert updated.startswith("intro\n<!-- options:start -->\n| key |")
    assert updated.endswith("<!-- options:end -->\nrest\n")
    assert all(f"| `{option.key}` |" in updated for option in OPTIONS)


def test_every_option_is_in_both_manifests():
    assert list(new_fields(new_worker())) == [option.key for option in OPTIONS]
    assert list(old_fields(old_workers()[0])) == [option.key for option in OPTIONS]


@pytest.mark.parametrize("which", ["old", "new"])
def test_manifest_defaults_parse_like_the_code_defaults(which):
    """What Arkindex sends when the user changes nothing: every field with its default (null
    when it has none) and the required class names."""
    fields = old_fields(old_workers()[0]) if which == "old" else new_fields(new_worker())
    raw = {key: field.get("default") for key, field in fields.items()}
    raw["class_names"] = CLASS_NAMES

    assert parse_config(raw) == parse_config({"class_names": CLASS_NAMES})


def test_required_fields_are_required_by_the_code():
    """A field the manifests mark required has no default in the code, and the reverse."""
    required = {key for key, field in new_fields(new_worker()).items() if field.get("required")}
    without_default = {option.key for option in OPTIONS if option.default is UNSET}
    assert required == without_default


# ---------------------------------------------------------------- worker attributes


def test_docker_command_is_the_console_script():
    scripts = console_scripts()
    commands = [worker["docker"]["command"] for worker in old_workers()]
    commands.append(new_worker()["docker"]["command"])
    for command in commands:
        assert command in scripts, f"{command!r} is not in [project.scripts]: {scripts}"
        module, function = scripts[command].split(":")
        assert callable(getattr(importlib.import_module(module), function))


def test_docker_shared_memory_fits_data_loaders():
    sizes = [worker["docker"]["shm_size"] for worker in old_workers()]
    sizes.append(new_worker()["docker"]["shm_size"])
    for size in sizes:
        assert memory_bytes(size) >= MIN_SHM_BYTES, size
