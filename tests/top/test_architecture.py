"""The package reads by stage, and stays that way (docs/development.md, "Rules"): imports point
down, no cycle, public names only across packages, every output name and default spelled once, the
mode looked up in one module, small modules and classes, no process-wide Pillow limit changed.

Read from the source with `ast`: every import counts, inside functions and under TYPE_CHECKING."""

from __future__ import annotations

import ast
import subprocess
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

from worker_yolo_training.config import OPTIONS

PACKAGE = Path(__file__).resolve().parents[2] / "worker_yolo_training"
# Bottom to top: a package may import only those before it
STAGES = ("core", "config", "export", "images", "extract", "train", "evaluate", "publish", "modes")
TOP = ("pipeline", "worker", "resume", "cli", "__main__", "__init__")
# Build tools of a package, run with `python -m`, imported by no module of the worker
TOOLS = {"worker_yolo_training.config.manifests"}
# Looked for in every string constant but docstrings (messages included)
OUTPUT_NAMES = (
    "summary.json", "eval_", "predictions.jsonl", "metrics.json", "evaluation.md",
    "training.json", "model_version.json", "run.json", "model.pt", "results.tar.zst",
    "crops.tmp", "data.yaml", ".ndjson.yaml", ".previous-run-",
)  # fmt: skip
# The inference workers' confidence threshold and NMS IoU, and our match IoU
DEFAULTS = (0.25, 0.7, 0.5)


@cache
def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


@cache
def tree(name: str) -> ast.Module:
    return ast.parse(modules()[name].read_text())


def imports(name: str) -> list[tuple[str, str | None]]:
    """(module, imported name or None) of every import of the package in a module."""
    found = []
    for node in ast.walk(tree(name)):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".")
                if modules()[name].name != "__init__.py":
                    package = package[:-1]
                base = ".".join([*package[: len(package) - node.level + 1], base])
            found += [(base, alias.name) for alias in node.names]
    return [(module, item) for module, item in found if module.split(".")[0] == PACKAGE.name]


def target(module: str, item: str | None) -> str:
    """The module of the package an import reaches."""
    if item and f"{module}.{item}" in modules():
        return f"{module}.{item}"
    while module not in modules():
        module = module.rpartition(".")[0]
    return module


def edges() -> dict[str, set[str]]:
    return {name: {target(*found) for found in imports(name)} - {name} for name in modules()}


def package_of(name: str) -> str:
    """The stage of a module, or "top"."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else "top"


def rank(package: str) -> int:
    return STAGES.index(package) if package in STAGES else len(STAGES)


def strings(name: str) -> list[str]:
    """The string constants of a module, docstrings aside (f-string parts included)."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree(name))
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree(name))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and id(node) not in docstrings
    ]  # fmt: skip


def test_no_import_cycle():
    graph, cycles = edges(), []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for following in graph[node]:
            if state.get(following) == 1:
                cycles.append([*path[path.index(following) :], following])
            elif following not in state:
                visit(following, [*path, following])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def may_import(importer: str, imported: str) -> bool:
    """Within a package anything; the top anything; a stage only the stages below it."""
    below, above = package_of(imported), package_of(importer)
    if above in (below, "top"):
        return True
    return below != "top" and rank(below) < rank(above)


def test_imports_point_down():
    wrong = [
        (name, reached)
        for name, reached_all in edges().items()
        for reached in reached_all
        if not may_import(name, reached)
    ]
    assert wrong == []


def test_other_packages_are_imported_by_their_public_names():
    wrong = []
    for name in modules():
        for module, item in imports(name):
            reached = target(module, item)
            if package_of(reached) in ("top", package_of(name)) or reached.count(".") == 0:
                continue
            package = ".".join(reached.split(".")[:2])
            public = public_names(package)
            whole = f"{module}.{item}" == reached  # `from package import stage`
            if reached != package or (item is not None and not whole and item not in public):
                wrong.append((name, module, item))
    assert wrong == []


def public_names(package: str) -> set[str]:
    for node in tree(package).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "__all__":
            return set(ast.literal_eval(node.value))
    return set()


def test_tools_are_imported_by_no_module():
    assert not [name for name, reached in edges().items() if reached & TOOLS]


def test_the_package_root_holds_the_top_only():
    root = [name for name in modules() if name.count(".") == 1 and name not in (
        f"{PACKAGE.name}.{stage}" for stage in STAGES)]  # fmt: skip
    assert len([name for name in root if not name.endswith(("__main__",))]) <= 7
    assert len([stage for stage in STAGES if f"{PACKAGE.name}.{stage}" in modules()]) >= 5


def test_modules_and_classes_stay_small():
    long_modules = [
        name for name, path in modules().items() if len(path.read_text().splitlines()) > 450
    ]
    long_classes = [
        (name, node.name)
        for name in modules()
        for node in ast.walk(tree(name))
        if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 230
    ]
    assert (long_modules, long_classes) == ([], [])


@pytest.mark.parametrize("output", OUTPUT_NAMES)
def test_each_output_name_is_spelled_in_one_module(output):
    spelled = [
        name
        for name in modules()
        if name not in TOOLS and any(output in text for text in strings(name))
    ]
    assert len(spelled) <= 1, spelled


@pytest.mark.parametrize("default", DEFAULTS)
def test_each_default_is_spelled_in_one_module(default):
    spelled = {
        name
        for name in modules()
        for node in ast.walk(tree(name))
        if isinstance(node, ast.Constant) and type(node.value) is float and node.value == default
    }
    assert len(spelled) == 1, spelled


def test_option_keys_are_spelled_in_the_options_module_only():
    keys = {option.key for option in OPTIONS if "." in option.key}
    spelled = Counter(name for name in modules() for text in strings(name) if text in keys)
    assert set(spelled) == {f"{PACKAGE.name}.config.options"}


def test_the_mode_is_looked_up_in_one_module():
    calls = {
        name
        for name in modules()
        for node in ast.walk(tree(name))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "spec_for"
    }
    assert calls == {f"{PACKAGE.name}.pipeline"}


def test_no_module_changes_pillows_limits():
    assigned = [
        name
        for name in modules()
        for node in ast.walk(tree(name))
        if isinstance(node, ast.Assign | ast.AugAssign)
        for target_node in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target_node, ast.Attribute) and target_node.attr == "MAX_IMAGE_PIXELS"
    ]
    assert assigned == []


def test_no_generated_output_is_tracked():
    """Outputs of runs, weights, archives and environments stay out of git (.gitignore)."""
    listed = subprocess.run(
        ["git", "ls-files"], cwd=PACKAGE.parent, capture_output=True, text=True, check=False
    )
    if listed.returncode:
        pytest.skip("not a git checkout")
    generated = [
        path
        for path in listed.stdout.splitlines()
        if path.split("/")[0] in ("output", "demo-output", "demo-output-classify", "runs", ".venv")
        or path.endswith((".pt", ".tar.zst", ".cache", ".pyc"))
    ]
    assert generated == []
