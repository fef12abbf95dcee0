"""A run compared with the model it replaces, on the bundled sample: an earlier local run's model
fine-tuned (locally, then as a Ponos task against the fake Arkindex), its page-level evaluation
beside the new one's, and the publication guard.

Training is one epoch at 96 px; the earlier run's threshold is fixed low so that its model
predicts something (its evaluation is then not trivially empty)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
import yaml
from arkindex_worker.utils import create_tar_zst_archive

from tests.helpers import SAMPLE, run_cli
from tests.production import tar_zst_members, training_task

SMALL = {"num_epochs": 1, "image_size": 96}
VERSION = "5b6e5b55-8a26-4a0e-9c59-3c6f4d6a0b11"


def sample_config(path: Path, **values) -> Path:
    config = yaml.safe_load((SAMPLE / "config.yml").read_text())
    config.update(SMALL)
    for key, value in values.items():
        config["advanced"][key] = value
    path.write_text(yaml.safe_dump(config))
    return path


def run_sample(output: Path, config: Path, *args, env=None, check=True):
    return run_cli(
        "--dev", "--database", SAMPLE / "export.sqlite", "--images", SAMPLE / "images",
        "--config", config, "--output", output, *args, env=env, check=check,
    )  # fmt: skip


@pytest.fixture(scope="module")
def earlier(tmp_path_factory) -> Path:
    """An earlier local run's output folder: its model and what it would publish."""
    root = tmp_path_factory.mktemp("earlier")
    run_sample(root / "out", sample_config(root / "config.yml", confidence_threshold=0.001))
    return root / "out"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def ordered(pages: dict) -> dict:
    return {
        split: {**figures, "elements": sorted(figures["elements"], key=lambda e: e["element"])}
        for split, figures in pages.items()
    }


def test_finetuning_is_compared_with_the_version_it_starts_from(earlier, tmp_path):
    """Fine-tuning locally (a model version id and its folder, as in Arkindex): the baseline's
    figures are exactly those the earlier run computed for its own model."""
    env = {**os.environ, "ARKINDEX_MODEL_VERSION_ID": VERSION}
    output = tmp_path / "out"
    config = sample_config(tmp_path / "config.yml")
    run = run_sample(output, config, "--extras-dir", earlier / "model", env=env)

    metrics, before = read_json(output / "metrics.json"), read_json(earlier / "metrics.json")
    baseline = metrics["baseline"]
    # The same figures; elements come in the order this run extracted them
    assert ordered(baseline["pages"]) == ordered(
        {split: before["pages"][split] for split in ("val", "test")}
    )
    assert baseline["pages"]["test"]["all"]["predictions"] > 0
    assert baseline["model"]["name"] == f"model version {VERSION}"
    published = read_json(earlier / "model_version.json")["configuration"]
    assert baseline["model"]["configuration"] == published
    assert baseline["model"]["compared_classes"] == ["text_line", "illustration"]
    for split in ("val", "test"):
        for rate in ("precision", "recall", "f1"):
            now, then = metrics["pages"][split]["all"][rate], before["pages"][split]["all"][rate]
            assert metrics["delta"][split]["all"][rate] == round(now - then, 5)
    # Trained from the earlier model, not from the architecture
    training = yaml.safe_load((output / "training" / "args.yaml").read_text())
    assert training["model"] == str(earlier / "model" / "model.pt")
    for report in (
        (output / "evaluation.md").read_text(),
        read_json(output / "model_version.json")["description"],
    ):
        assert "## Compared with the baseline" in report
        assert f"Compared with model version {VERSION}" in report
        assert "**val**" in report and "**test**" in report
    assert f"Baseline evaluation of model version {VERSION} on val, test: " in run.stderr
    members = tar_zst_members((output / "results.tar.zst").read_bytes())
    assert "baseline/eval_test/pages/predictions.jsonl" in members


def test_a_baseline_of_another_mode_is_refused_before_any_image(earlier, tmp_path):
    config = sample_config(tmp_path / "config.yml")
    values = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**values, "mode": "bbox"}))
    output = tmp_path / "out"
    process = run_sample(output, config, "--baseline", earlier / "model" / "model.pt", check=False)
    assert process.returncode == 2
    assert (
        f"The baseline {earlier / 'model' / 'model.pt'} is a segment model and this run trains a "
        "detect model (mode bbox): their predictions cannot be compared. Choose a detect model "
        "as baseline."
    ) in process.stderr
    assert not (output / "dataset").exists()


def without_test_objects(export: Path) -> None:
    """The sample's test pages without their objects: a model that predicts nothing there has
    F1 1, one that predicts anything has F1 0."""
    with sqlite3.connect(export) as db:
        db.execute(
            "DELETE FROM element_path WHERE parent_id IN "
            "(SELECT element_id FROM dataset_element WHERE set_name = 'test')"
        )


@pytest.mark.parametrize(
    ("threshold", "baseline_threshold", "published"),
    [(0.001, 1.0, False), (1.0, 0.001, True)],
    ids=["better-baseline", "worse-baseline"],
)
def test_publish_if_better(earlier, tmp_path, threshold, baseline_threshold, published):
    """A Ponos task fine-tuning the earlier model: with `publish_if: better`, no model version
    when the new test F1 is lower than the baseline's (exit 0, the artifact kept)."""
    archive = create_tar_zst_archive(earlier / "model", tmp_path / "model.tar.zst")[1]
    overrides = {
        "advanced.publish_if": "better",
        "advanced.confidence_threshold": threshold,
        "image_size": SMALL["image_size"],
    }
    with training_task(tmp_path / "task", overrides) as task:
        without_test_objects(task.directory / "export.sqlite")
        task.fake.set_export_data(task.fake.dataset["id"], task.directory / "export.sqlite")
        configuration = read_json(earlier / "model_version.json")["configuration"]
        parent = task.fake.set_worker_run_model_version(
            configuration={**configuration, "confidence_threshold": baseline_threshold},
            data=Path(archive).read_bytes(),
        )
        run = task.run(model_dir=earlier / "model").check()
        results = tar_zst_members((task.work_dir / "results.tar.zst").read_bytes())
        metrics = json.loads(results["metrics.json"])
        new = metrics["pages"]["test"]["all"]["f1"]
        old = metrics["baseline"]["pages"]["test"]["all"]["f1"]
        created = task.fake.created_model_versions()
        if published:
            assert (new, old) == (1.0, 0.0)
            (version,) = created
            assert version.body["parent"] == parent.id
            assert "## Compared with the baseline" in version.body["description"]
            assert "F1 1.000 >= 0.000 of the baseline on test" in run.output
        else:
            assert (new, old) == (0.0, 1.0)
            assert created == [] and "CreateModelVersion" not in task.fake.operation_ids()
            assert (
                f"not published: F1 0.000 < 1.000 of model version {parent.id} on test "
                "(`advanced.publish_if: better`): the results archive is kept"
            ) in run.output
