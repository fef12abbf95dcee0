"""The workers' manifests: valid for Arkindex, and in line with the configuration the code parses.

`arkindex/<slug>.yml` (one per worker, read by `arkindex worker import IMAGE`, which reads every
`./arkindex/*.yml`) are checked with the official validator, `teklia-worker-configuration`, and
compared, key by key, with `worker_yolo_training.config.OPTIONS`. `.arkindex.yml` keeps only what
arkindex-cli still reads there (`arkindex models publish`: `version`, `models`).
"""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from teklia_toolbox.config import UNSET
from worker_configuration.validator import validate_file, validate_files

from worker_yolo_training.config import GROUP_SEPARATOR, OPTIONS, parse_config
from worker_yolo_training.config.manifests import WORKERS, generated_files, page_with_options

ROOT = Path(__file__).resolve().parents[2]
OLD_MANIFEST = ROOT / ".arkindex.yml"
NEW_MANIFESTS = sorted((ROOT / "arkindex").glob("*.yml"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DETECTION, CLASSIFICATION = (ROOT / "arkindex" / f"{worker.slug}.yml" for worker in WORKERS)

CLASS_NAMES = ["text_line", "illustration"]
# PyTorch's data loader workers share tensors through /dev/shm; Docker's 64m default is too small.
MIN_SHM_BYTES = 1 << 30
# What arkindex-cli 0.5.0 reads in .arkindex.yml (commands/utils.py `configuration_parser`)
ARKINDEX_CLI_KEYS = {"version", "models"}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


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


def memory_bytes(size: str) -> int:
    number, unit = re.fullmatch(r"([0-9]+)([bkmg]?)", str(size)).groups()
    return int(number) * {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit]


# ---------------------------------------------------------------- the official validator


@pytest.mark.parametrize("path", NEW_MANIFESTS, ids=lambda path: path.name)
def test_new_manifest_passes_official_validator(path):
    # Raises yamale.YamaleError listing every problem
    validate_file(path)
    assert validate_files([path]) == 0


def test_one_manifest_per_worker_named_after_its_slug():
    assert sorted([DETECTION, CLASSIFICATION]) == NEW_MANIFESTS
    for path in NEW_MANIFESTS:
        assert path.name == f"{load(path)['slug']}.yml"


def test_old_manifest_keeps_only_what_arkindex_cli_reads():
    """Arkindex 1.12.0 no longer imports `workers:` from .arkindex.yml: none is left to drift."""
    assert set(load(OLD_MANIFEST)) <= ARKINDEX_CLI_KEYS
    assert load(OLD_MANIFEST)["version"] == 2


def break_enum_default(worker):
    next(f for f in worker["configuration"] if f["key"] == "ultralytics_model_size")["default"] = (
        "v9"
    )


def break_many_dict(worker):
    group = next(f for f in worker["configuration"] if f["type"] == "group")
    next(f for f in group["children"] if f["type"] == "dict")["many"] = True


def break_required_group(worker):
    next(f for f in worker["configuration"] if f["type"] == "group")["required"] = True


def break_shm_size(worker):
    worker["docker"]["shm_size"] = "2 GB"


def break_duplicate_key(worker):
    worker["configuration"].append(dict(worker["configuration"][0]))


def break_fixed_mode(worker):
    """A fixed value needs its default; an enum of one choice is refused."""
    del next(f for f in worker["configuration"] if f["key"] == "mode")["default"]


def break_single_choice(worker):
    mode = next(f for f in worker["configuration"] if f["key"] == "mode")
    mode.update(type="enum", choices=["classify"], editable=True)


@pytest.mark.parametrize(
    ("breaker", "message"),
    [
        (break_enum_default, "Default value must be one of the choices"),
        (break_many_dict, "Type dict is not supported when using 'many'"),
        (break_required_group, "configuration.advanced: A group cannot be required"),
        (break_shm_size, "shm_size"),
        (break_duplicate_key, "Duplicate key"),
        (break_fixed_mode, "configuration.mode: Missing default value on non-editable option"),
        (break_single_choice, "choices"),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_official_validator_rejects_broken_copy(tmp_path, capsys, breaker, message):
    """The validator really runs on our files' structure: a broken copy fails."""
    worker = load(CLASSIFICATION)
    breaker(worker)
    path = tmp_path / CLASSIFICATION.name
    path.write_text(yaml.safe_dump(worker, sort_keys=False))

    assert validate_files([path]) == 1
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------- what each modal asks


def test_detection_modal_asks_for_element_types_and_detection_modes():
    fields = new_fields(load(DETECTION))
    assert fields["class_names"]["type"] == "element_type" and fields["class_names"]["many"]
    assert fields["mode"]["type"] == "enum"
    assert fields["mode"]["choices"] == ["segment", "bbox", "obb"]
    assert fields["mode"]["default"] == "segment"


def test_classification_modal_asks_for_class_names_in_classify_mode():
    """No field type lists ML classes: the classes are text; `mode` is fixed to classify."""
    fields = new_fields(load(CLASSIFICATION))
    assert fields["class_names"]["type"] == "string" and fields["class_names"]["many"]
    assert (
        fields["class_names"]["required"]
        and "element type" not in fields["class_names"]["help_text"]
    )
    assert fields["mode"] == {
        **fields["mode"], "type": "string", "default": "classify", "editable": False,
    }  # fmt: skip


def test_the_two_modals_differ_only_by_classes_and_mode():
    detection, classification = new_fields(load(DETECTION)), new_fields(load(CLASSIFICATION))
    assert list(detection) == list(classification)
    differ = {key for key in detection if detection[key] != classification[key]}
    assert differ == {"class_names", "mode"}
    assert load(DETECTION)["docker"] == load(CLASSIFICATION)["docker"]


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


@pytest.mark.parametrize("path", NEW_MANIFESTS, ids=lambda path: path.name)
def test_every_option_is_in_every_manifest(path):
    assert list(new_fields(load(path))) == [option.key for option in OPTIONS]


@pytest.mark.parametrize(("path", "mode"), [(DETECTION, "segment"), (CLASSIFICATION, "classify")])
def test_manifest_defaults_parse_like_the_code_defaults(path, mode):
    """What Arkindex sends when the user changes nothing: every field with its default (null
    when it has none) and the required class names; the classification worker's fixed mode."""
    raw = {key: field.get("default") for key, field in new_fields(load(path)).items()}
    raw["class_names"] = CLASS_NAMES

    assert parse_config(raw) == parse_config({"class_names": CLASS_NAMES, "mode": mode})


@pytest.mark.parametrize("path", NEW_MANIFESTS, ids=lambda path: path.name)
def test_required_fields_are_required_by_the_code(path):
    """A field the manifests mark required has no default in the code, and the reverse."""
    required = {key for key, field in new_fields(load(path)).items() if field.get("required")}
    without_default = {option.key for option in OPTIONS if option.default is UNSET}
    assert required == without_default


# ---------------------------------------------------------------- worker attributes


@pytest.mark.parametrize("path", NEW_MANIFESTS, ids=lambda path: path.name)
def test_docker_command_is_the_console_script(path):
    scripts = PYPROJECT["project"]["scripts"]
    command = load(path)["docker"]["command"]
    assert command in scripts, f"{command!r} is not in [project.scripts]: {scripts}"
    module, function = scripts[command].split(":")
    assert callable(getattr(importlib.import_module(module), function))


@pytest.mark.parametrize("path", NEW_MANIFESTS, ids=lambda path: path.name)
def test_docker_shared_memory_fits_data_loaders(path):
    assert memory_bytes(load(path)["docker"]["shm_size"]) >= MIN_SHM_BYTES
