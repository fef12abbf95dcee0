"""Out of GPU memory during training or evaluation: one clear message, what was done kept."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import SAMPLE, console_script
from tests.production import tar_zst_members
from worker_yolo_training import train
from worker_yolo_training.config import parse_config

CUDA_MESSAGE = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 15.77 GiB of "
    "which 1.06 GiB is free."
)


def config(**values):
    return parse_config({"class_names": ["text_line"], **values})


@pytest.mark.parametrize(
    "error", [torch.cuda.OutOfMemoryError(CUDA_MESSAGE), RuntimeError(CUDA_MESSAGE)]
)
def test_out_of_memory_in_training_names_the_sizes_and_what_to_try(error):
    with pytest.raises(train.OutOfGpuMemory) as raised, train.gpu_memory(config(), "training"):
        raise error
    assert str(raised.value) == (
        "Out of GPU memory during training with `batch_size` 16 and `image_size` 640: try a "
        "smaller `batch_size` (e.g. 8), or `batch_size: -1` (Ultralytics' AutoBatch picks one "
        "that fits), or a smaller `image_size` (e.g. 320). No model version is published."
    )
    assert raised.value.__cause__ is error


def test_with_autobatch_a_fixed_smaller_batch_is_suggested():
    message = train.out_of_memory_message("training", -1, 1024)
    assert "with `batch_size` -1 (AutoBatch) and `image_size` 1024" in message
    assert "a fixed `batch_size` below the one AutoBatch chose" in message
    assert "`batch_size: -1`" not in message and "(e.g. 512)" in message


def test_in_evaluation_autobatch_is_not_suggested():
    """Validation and prediction do not use AutoBatch."""
    message = train.out_of_memory_message("evaluation", 4, 96)
    assert message.startswith("Out of GPU memory during evaluation with `batch_size` 4")
    assert "(e.g. 2)" in message and "AutoBatch" not in message and "(e.g. 32)" in message


def test_other_errors_pass_unchanged():
    error = RuntimeError("shape mismatch")
    with pytest.raises(RuntimeError) as raised, train.gpu_memory(config(), "training"):
        raise error
    assert raised.value is error
    assert not train.is_out_of_memory(error)


# Ultralytics callbacks (its public callback table) that run out of memory: at the end of the first
# epoch, once that epoch's results are written; or when the worker's evaluation starts
OUT_OF_MEMORY_HOOK = f"""
import torch
from ultralytics.utils.callbacks.base import default_callbacks


def out_of_memory(*args):
    raise torch.cuda.OutOfMemoryError({CUDA_MESSAGE!r})


def in_evaluation(validator):
    # The worker's evaluation writes in eval_<split>/, not the trainer's validations
    if validator.save_dir.name.startswith("eval_"):
        out_of_memory()


default_callbacks[{{event!r}}].append({{callback}})
"""
STAGES = {
    "training": ("on_fit_epoch_end", "out_of_memory"),
    "evaluation": ("on_val_start", "in_evaluation"),
}
MESSAGES = {
    "training": "Out of GPU memory during training with `batch_size` 8 and `image_size` 32: try a "
    "smaller `batch_size` (e.g. 4), or `batch_size: -1` (Ultralytics' AutoBatch picks one that "
    "fits), or a smaller `image_size` (e.g. 32). No model version is published.",
    "evaluation": "Out of GPU memory during evaluation with `batch_size` 8 and `image_size` 32: "
    "try a smaller `batch_size` (e.g. 4), or a smaller `image_size` (e.g. 32). No model version "
    "is published.",
}


@pytest.mark.parametrize("stage", STAGES)
def test_a_run_out_of_gpu_memory_ends_in_one_message_and_keeps_its_results(tmp_path, stage):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    event, callback = STAGES[stage]
    (hooks / "sitecustomize.py").write_text(
        OUT_OF_MEMORY_HOOK.format(event=event, callback=callback)
    )
    settings = yaml.safe_load((SAMPLE / "config-classify.yml").read_text())
    settings.update(image_size=32, num_epochs=2, batch_size=8)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(settings))
    output = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(hooks)}

    process = subprocess.run(
        run_local_command(config_file, output), capture_output=True, text=True, env=env
    )

    assert process.returncode == 2, process.stderr
    assert "Traceback" not in process.stderr
    errors = [line for line in process.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and errors[0].endswith(MESSAGES[stage])
    # What was done: the training's results so far, the extraction summary; no model version
    members = {
        name.removeprefix("./")
        for name in tar_zst_members((output / "results.tar.zst").read_bytes())
    }
    assert {"training/results.csv", "training/args.yaml", "summary.json"} <= members
    assert not (output / "model").exists() and not (output / "model_version.json").exists()
    assert ("metrics.json" in members) is False


def run_local_command(config_file: Path, output: Path) -> list[str]:
    """The console script's local-mode command on the bundled sample, training included."""
    return [
        console_script(), "--dev", "--database", str(SAMPLE / "export.sqlite"),
        "--config", str(config_file), "--images", str(SAMPLE / "images"), "--output", str(output),
    ]  # fmt: skip
