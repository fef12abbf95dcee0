"""Base model resolution and device selection (the parts of training that run without a GPU)."""

import os

import pytest

from worker_yolo_training import train as training
from worker_yolo_training.config import parse_config
from worker_yolo_training.modes import spec_for


@pytest.fixture(autouse=True)
def restored_environment(monkeypatch):
    """prepare_environment() sets process-wide variables: give them back after each test."""
    for name in ("YOLO_CONFIG_DIR", "YOLO_OFFLINE", "YOLO_AUTOINSTALL", "MPLCONFIGDIR"):
        monkeypatch.setenv(name, os.environ.get(name, ""))
        monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def weights_dir(tmp_path):
    return training.prepare_environment(tmp_path / "yolo")


def architecture(config):
    """The Ultralytics models of the configuration's mode."""
    return spec_for(config.mode).architecture


def test_architecture_when_not_pretrained(weights_dir):
    config = parse_config({"class_names": ["a"], "mode": "obb", "ultralytics_model_size": "11s",
                           "advanced.pretrained": False})  # fmt: skip
    assert (
        training.resolve_base_model(config, architecture(config), weights_dir) == "yolo11s-obb.yaml"
    )


def test_pretrained_weights_found_in_the_weights_dir(weights_dir):
    (weights_dir / "yolov8m-seg.pt").write_bytes(b"weights")
    config = parse_config({"class_names": ["a"]})
    assert training.resolve_base_model(config, architecture(config), weights_dir) == str(
        weights_dir / "yolov8m-seg.pt"
    )


def test_failed_weights_download_says_how_to_provide_them(weights_dir, monkeypatch):
    # A closed loopback port: the download fails at once, as it does offline
    monkeypatch.setattr(training, "WEIGHTS_URL", "http://127.0.0.1:9/{name}")
    config = parse_config({"class_names": ["a"], "mode": "bbox", "ultralytics_model_size": "26n"})
    with pytest.raises(training.BaseModelError) as error:
        training.resolve_base_model(config, architecture(config), weights_dir)
    message = str(error.value)
    assert "yolo26n.pt" in message and str(weights_dir / "yolo26n.pt") in message
    assert "advanced.pretrained: false" in message
    assert not (weights_dir / "yolo26n.pt").exists()
    assert not list(weights_dir.glob("*.partial"))


def test_finetuning_needs_a_model_file(tmp_path, weights_dir):
    config = parse_config({"class_names": ["a"]})
    with pytest.raises(training.BaseModelError, match=r"no model\.pt"):
        training.resolve_base_model(
            config, architecture(config), weights_dir, finetune_dir=tmp_path
        )


def test_cpu_training_uses_every_core():
    import torch
    from ultralytics.utils import torch_utils

    if torch.cuda.is_available():
        pytest.skip("this checks the CPU path")
    device = training.select_device(batch_size=16)
    assert device == training.Device("cpu", amp=False, gpus=0)
    assert os.cpu_count() == torch_utils.NUM_THREADS
    assert torch.get_num_threads() == os.cpu_count()


def test_prepare_environment_is_offline_and_local(tmp_path):
    weights = training.prepare_environment(tmp_path / "yolo")
    assert weights == tmp_path / "yolo" / "weights" and weights.is_dir()
    assert os.environ["YOLO_OFFLINE"] == "1" and os.environ["YOLO_AUTOINSTALL"] == "false"
    for font in ("Arial.ttf", "Arial.Unicode.ttf"):
        assert (tmp_path / "yolo" / "Ultralytics" / font).stat().st_size > 100_000


def test_a_run_that_does_not_train_installs_no_fonts(tmp_path):
    """`--extract-only` prepares Ultralytics' environment without its plots' fonts: neither
    matplotlib's font manager (0.2 s, and 0.3 s more to build its cache the first time) nor a
    font file."""
    import subprocess
    import sys

    script = (
        "import os, sys\n"
        "from worker_yolo_training.train import prepare_environment\n"
        f"weights = prepare_environment({str(tmp_path / 'yolo')!r}, fonts=False)\n"
        "print('matplotlib.font_manager' in sys.modules, weights.is_dir(),"
        " os.environ['YOLO_CONFIG_DIR'])\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "YOLO_CONFIG_DIR"}
    printed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    assert printed == ["False", "True", str(tmp_path / "yolo")]
    assert not (tmp_path / "yolo" / "Ultralytics").exists()


def test_fonts_in_place_cost_no_font_manager_import(tmp_path):
    """Every run prepares the environment, extraction-only ones too: once the fonts are there,
    matplotlib's font manager (0.2 s) is not imported."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from worker_yolo_training.train import prepare_environment\n"
        f"prepare_environment({str(tmp_path / 'yolo')!r})\n"
        "print('matplotlib.font_manager' in sys.modules)\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "YOLO_CONFIG_DIR"}
    imported = [
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
        ).stdout.strip()
        for _ in range(2)
    ]
    assert imported == ["True", "False"]
    assert (tmp_path / "yolo" / "Ultralytics" / "Arial.Unicode.ttf").stat().st_size > 100_000


@pytest.mark.parametrize(
    ("gpus", "batch_size", "expected"),
    [(1, 16, "0"), (2, 16, "0,1"), (4, 32, "0,1,2,3"), (2, -1, "0"), (1, -1, "0")],
)
def test_every_visible_gpu_with_amp_unless_autobatch(
    monkeypatch, caplog, gpus, batch_size, expected
):
    """The GPU decision itself (no GPU needed): DDP over all GPUs, AMP on, one GPU for AutoBatch."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    device = training.select_device(batch_size)
    assert device.argument == expected and device.amp is True
    assert ("cannot be split" in caplog.text) == (gpus > 1 and batch_size < 1)


def test_ultralytics_looks_for_its_own_weights_in_our_folder(weights_dir, monkeypatch):
    """The GPU AMP check loads yolo26n.pt from Ultralytics' weights_dir: ours, so that a file
    shipped there is found offline."""
    from ultralytics import utils

    monkeypatch.setattr(utils, "WEIGHTS_DIR", utils.WEIGHTS_DIR)
    assert training.use_weights_dir() == weights_dir
    from ultralytics.utils import SETTINGS, WEIGHTS_DIR

    assert weights_dir == WEIGHTS_DIR and SETTINGS["weights_dir"] == str(weights_dir)


def test_multi_gpu_training_finds_its_requirement():
    """Ultralytics' DDP launcher imports cloudpickle after a check that cannot install it here
    (YOLO_AUTOINSTALL is off): it must be a dependency."""
    from ultralytics.utils.checks import check_requirements

    assert check_requirements("cloudpickle>=3.1.1", install=False)


def test_a_users_amp_false_wins_over_amp_on_gpus(tmp_path):
    """The reference's FP32 setting must be reachable: `advanced.training_kwargs` amp: false."""
    config = parse_config({"class_names": ["a"], "advanced.training_kwargs": {"amp": "false"}})
    gpu = training.Device("0", amp=True, gpus=1)
    arguments = training.training_arguments(
        config, tmp_path / "d.yaml", tmp_path, gpu, {"amp": False}
    )
    assert arguments["amp"] is False and arguments["device"] == "0"
    default = training.training_arguments(config, tmp_path / "d.yaml", tmp_path, gpu, {})
    assert default["amp"] is True
