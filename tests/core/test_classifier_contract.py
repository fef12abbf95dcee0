"""The classify model version against Teklia's real YOLO classifier (teklia-yolo-worker 1.4.3).

The classifier pins another ultralytics and base-worker than this project: it runs in its own venv
(`/tmp/segvenv`, made by `benchmarks/segmenter_agreement.py` or `classifier_agreement.py`, or
`$TEKLIA_YOLO_WORKER_VENV`), through `benchmarks/classifier_driver.py`, as Arkindex runs it: a
worker run whose configuration is merged (the classifier's defaults, the model version's
configuration, the user's values). Without that venv those tests are skipped, with the reason;
the first test runs anyway (the published keys against the classifier's table, as
tests/core/test_segmenter_contract.py checks the segmenter's without its venv).
`benchmarks/classifier_agreement.py` runs the classifier on whole splits of a classify run.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from benchmarks.classifier_agreement import api_answers, classifier_defaults, run_classifier
from tests.helpers import TEKLIA_WORKER_PYTHON, TEKLIA_WORKER_VENV, teklia_worker_available
from worker_yolo_training.config import parse_config
from worker_yolo_training.modes import spec_for

PYTHON = TEKLIA_WORKER_PYTHON
CLASS_NAMES = ["text", "illustrated", "blank"]
TABLE = json.loads(
    (Path(__file__).parents[1] / "data" / "yolo_segmenter_configuration.json").read_text()
)
# What `YOLOWorker.configure` (worker_yolo/worker.py) reads, which the classifier inherits
CLASSIFIER_FIELDS = {
    key: field for key, field in TABLE["fields"].items() if field["source"].startswith("worker.py")
}

needs_classifier = pytest.mark.skipif(
    not teklia_worker_available(),
    reason=f"teklia-yolo-worker 1.4.3 is not installed in {TEKLIA_WORKER_VENV} (benchmarks/README.md)",
)


def test_published_keys_are_the_classifiers_with_its_types():
    """Without its venv: the published keys are keys the classifier reads, of their type."""
    configuration = published()
    assert set(configuration) <= set(CLASSIFIER_FIELDS)
    assert {"thumbnail_size", "confidence_threshold"} <= set(configuration)
    assert isinstance(configuration["thumbnail_size"], int)
    assert 0 < configuration["confidence_threshold"] <= 1


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A classify `model.pt` whose class names are `CLASS_NAMES`, from the architecture."""
    import torch
    from ultralytics.nn.tasks import ClassificationModel

    folder = tmp_path_factory.mktemp("model")
    network = ClassificationModel("yolov8n-cls.yaml", nc=len(CLASS_NAMES), verbose=False)
    network.names = dict(enumerate(CLASS_NAMES))
    # What Ultralytics' trainer saves: the network and the arguments it was trained with
    torch.save(
        {"model": network, "train_args": {"task": "classify", "imgsz": 224}}, folder / "model.pt"
    )
    return folder


def published() -> dict:
    """What a classify run publishes (the mode's own configuration)."""
    config = parse_config({"class_names": CLASS_NAMES, "mode": "classify", "image_size": 224})
    return spec_for(config.mode).inference_configuration(config, 0.42, None)


@needs_classifier
def test_published_configuration_loads_in_the_classifiers_configure(model_dir, tmp_path):
    output = run_classifier(PYTHON, model_dir, None, api_answers(published(), {}), tmp_path)
    assert output["configured"] == {
        "confidence_threshold": 0.42,
        "thumbnail_size": 224,
        "image_extension": "jpg",
        "resize_1px": False,
        "model_names": CLASS_NAMES,
        "model_task": "classify",
    }
    # Configured as a worker run: its worker run and configuration came from the API
    operations = [call["operation"] for call in output["calls"]]
    assert operations == ["RetrieveWorkerRun", "RetrieveWorkerRunConfiguration"]


@needs_classifier
def test_user_values_win_over_the_published_ones(model_dir, tmp_path):
    answers = api_answers(published(), {"confidence_threshold": 0.9})
    output = run_classifier(PYTHON, model_dir, None, answers, tmp_path)
    assert output["configured"]["confidence_threshold"] == 0.9


@needs_classifier
def test_a_configuration_without_threshold_stops_the_classifier(model_dir, tmp_path, capfd):
    """The check is real: `YOLOWorker.configure` reads `config["confidence_threshold"]`."""
    answers = api_answers({}, {})
    answers["configuration"]["configuration"] = [
        item for item in answers["configuration"]["configuration"]
        if item["key"] != "confidence_threshold"
    ]  # fmt: skip
    assert "confidence_threshold" in classifier_defaults()
    with pytest.raises(subprocess.CalledProcessError):
        run_classifier(PYTHON, model_dir, None, answers, tmp_path)
    assert "KeyError: 'confidence_threshold'" in capfd.readouterr().err
