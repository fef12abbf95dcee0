"""Everything Ultralytics: an offline-safe environment, the base model, training and evaluation.

Ultralytics reads its environment when first imported, and tries to download fonts, weights and
check models on the way. `prepare_environment()` must run before the first `import ultralytics`;
the heavy imports stay inside functions so that configuration errors and `--extract-only` are fast.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import requests

from worker_yolo_training.config import TrainingConfig
from worker_yolo_training.tasks import architecture_name, task_for, weights_name

logger = logging.getLogger(__name__)

WEIGHTS_URL = "https://github.com/ultralytics/assets/releases/download/v8.4.0/{name}"
FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
DOWNLOAD_TIMEOUT = (10, 120)


class BaseModelError(Exception):
    """The base model cannot be obtained; the message says how to provide it."""


def default_config_dir() -> Path:
    """Ultralytics' settings, fonts and weights: `$YOLO_CONFIG_DIR`, else the user cache dir."""
    if os.environ.get("YOLO_CONFIG_DIR"):
        return Path(os.environ["YOLO_CONFIG_DIR"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "worker-yolo-training" / "ultralytics"


def prepare_environment(config_dir: Path | None = None) -> Path:
    """Make Ultralytics work offline: own config dir, no network checks, no pip installs, fonts
    available locally (DejaVu Sans from matplotlib under Arial's names, it covers non-ASCII text).
    Returns the folder where pretrained weights are looked for."""
    config_dir = Path(config_dir or default_config_dir())
    fonts_dir = config_dir / "Ultralytics"
    fonts_dir.mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ["YOLO_AUTOINSTALL"] = "false"
    os.environ.setdefault("MPLCONFIGDIR", str(config_dir / "matplotlib"))
    from matplotlib import font_manager

    dejavu = Path(font_manager.findfont("DejaVu Sans", fallback_to_default=True))
    for name in FONT_NAMES:
        if not (fonts_dir / name).exists():
            shutil.copyfile(dejavu, fonts_dir / name)
    weights_dir = config_dir / "weights"
    weights_dir.mkdir(exist_ok=True)
    return weights_dir


def use_weights_dir() -> Path:
    """Point Ultralytics' own `weights_dir` setting at our weights folder and return it.

    Ultralytics fetches some weights by itself, e.g. `yolo26n.pt` for the GPU AMP check
    (`utils/checks.py` `check_amp`), from `weights_dir`: by default `<git root>/weights` or
    `./weights`. Offline, a file shipped in our folder (`$YOLO_CONFIG_DIR/weights`) is only found
    there once this setting points at it.
    """
    from ultralytics import utils

    weights_dir = Path(os.environ["YOLO_CONFIG_DIR"]) / "weights"
    if utils.SETTINGS.get("weights_dir") != str(weights_dir):
        utils.SETTINGS.update(weights_dir=str(weights_dir))
    # Read by check_amp at call time; set once at import from the settings
    utils.WEIGHTS_DIR = weights_dir
    return weights_dir


def _download(url: str, target: Path) -> None:
    partial = target.with_suffix(".partial")
    with requests.get(url, stream=True, timeout=DOWNLOAD_TIMEOUT) as response:
        response.raise_for_status()
        with partial.open("wb") as output:
            for chunk in response.iter_content(1 << 20):
                output.write(chunk)
    partial.replace(target)


@dataclass(frozen=True)
class ParentModel:
    """What a model version to fine-tune was trained for, read from its checkpoint."""

    task: str
    class_names: list[str]
    image_size: int | None


def read_parent(path: Path) -> ParentModel:
    """The task, classes and training image size of an Ultralytics checkpoint."""
    from ultralytics.nn.tasks import load_checkpoint

    model, checkpoint = load_checkpoint(path)
    train_args = checkpoint.get("train_args") or {}
    image_size = train_args.get("imgsz")
    return ParentModel(
        task=train_args.get("task") or model.task,
        class_names=[str(name) for name in model.names.values()],
        image_size=image_size if isinstance(image_size, int) else None,
    )


def _same_name(name: str) -> str:
    # How Ultralytics matches class names between a checkpoint and the new dataset
    # (nn/tasks.py `BaseModel._remap_cls_by_names`)
    return name.strip().lower()


@dataclass(frozen=True)
class ClassChanges:
    """The classes of a fine-tuning: those whose class-head weights are kept (matched by name, as
    Ultralytics' `cls_remap` does), those learned from scratch, those the new model drops."""

    kept: list[str]
    new: list[str]
    dropped: list[str]

    def __str__(self) -> str:
        def listed(names: list[str]) -> str:
            return ", ".join(names) or "none"

        return (
            f"kept (their class-head weights are copied): {listed(self.kept)}; "
            f"new (learned from scratch): {listed(self.new)}; dropped: {listed(self.dropped)}"
        )


def class_changes(parent: list[str], class_names: list[str]) -> ClassChanges:
    """Compare the parent's classes with this training's `class_names`."""
    known = {_same_name(name) for name in parent}
    wanted = {_same_name(name) for name in class_names}
    return ClassChanges(
        kept=[name for name in class_names if _same_name(name) in known],
        new=[name for name in class_names if _same_name(name) not in known],
        dropped=[name for name in parent if _same_name(name) not in wanted],
    )


def finetuned_model(model_dir: Path, config: TrainingConfig) -> str:
    """The `model.pt` of the model version being fine-tuned; says which classes are kept, new and
    dropped, and warns when its task or training image size differ from this training's."""
    path = Path(model_dir) / "model.pt"
    if not path.is_file():
        raise BaseModelError(
            f"The model version to fine-tune has no model.pt in {model_dir}: "
            "pick a version published by this worker, or run without a model version."
        )
    parent = read_parent(path)
    logger.info(
        f"Fine-tuning {path}: task {parent.task}, classes {parent.class_names}, "
        f"image_size {parent.image_size or 'unknown'}"
    )
    if parent.class_names != list(config.class_names):
        changes = class_changes(parent.class_names, config.class_names)
        logger.warning(
            f"The fine-tuned model predicts {parent.class_names}, this training uses "
            f"{list(config.class_names)}: {changes}."
        )
    task = task_for(config.mode).ultralytics_task
    if parent.task != task:
        logger.warning(
            f"The fine-tuned model was trained for the {parent.task} task, this training is "
            f"{task} (mode {config.mode.value}): only the layers both share are reused."
        )
    if parent.image_size and parent.image_size != config.image_size:
        logger.warning(
            f"The fine-tuned model was trained at image_size {parent.image_size}, this training "
            f"uses {config.image_size}: objects appear at another scale than it learned."
        )
    return str(path)


def resolve_base_model(
    config: TrainingConfig, weights_dir: Path, finetune_dir: Path | None = None
) -> str:
    """The model training starts from: a model version's weights, pretrained weights, or an
    architecture.

    Pretrained weights are looked for in `weights_dir`, then downloaded there. Called before any
    image is fetched, so that a missing file costs seconds, not a dataset download.
    """
    if finetune_dir is not None:
        return finetuned_model(finetune_dir, config)
    task = task_for(config.mode)
    architecture, weights = (
        architecture_name(task, config.model_size),
        weights_name(task, config.model_size),
    )
    if not config.pretrained:
        return architecture
    target = Path(weights_dir) / weights
    if target.is_file():
        return str(target)
    url = WEIGHTS_URL.format(name=weights)
    logger.info(f"Downloading pretrained weights {url} to {target}")
    try:
        _download(url, target)
    except requests.RequestException as error:
        raise BaseModelError(
            f"Could not download the pretrained weights {weights} ({error}). "
            f"Place the file at {target}, or set `advanced.pretrained: false` to train "
            f"{architecture} from scratch."
        ) from error
    return str(target)


@dataclass(frozen=True)
class Device:
    """Where training runs: `device` as Ultralytics takes it, and whether AMP applies."""

    argument: str
    amp: bool
    gpus: int


def select_device(batch_size: int) -> Device:
    """All visible GPUs (Ultralytics DDP when more than one), else the CPU with every core."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus > 1 and batch_size < 1:
        # Ultralytics refuses AutoBatch with DDP, once training starts: decide now
        logger.warning(
            f"batch_size {batch_size} (automatic) cannot be split over {gpus} GPUs: "
            "training on GPU 0 only; set a batch size to use them all"
        )
        gpus = 1
    if gpus:
        return Device(",".join(map(str, range(gpus))), amp=True, gpus=gpus)
    from ultralytics.utils import torch_utils

    # Ultralytics caps CPU threads at cores - 1 (one on a 2-core machine); training is the only
    # work here, so give it every core.
    torch_utils.NUM_THREADS = os.cpu_count() or 1
    torch.set_num_threads(torch_utils.NUM_THREADS)
    return Device("cpu", amp=False, gpus=0)


def train(
    config: TrainingConfig,
    base_model: str,
    data_yaml: Path,
    output_dir: Path,
    device: Device,
    arguments: dict,
    resume_from: Path | None = None,
) -> Path:
    """Train, writing Ultralytics' run folder to `output_dir/training`; returns best weights.

    `arguments` are the Ultralytics arguments derived from the dataset with the user's
    `advanced.training_kwargs` over them (`derived.derive`). `resume_from` (a `last.pt`) continues an interrupted training with Ultralytics' resume: its
    own arguments are reused, only the device and data loaders are set again.
    """
    from ultralytics import YOLO

    use_weights_dir()
    if resume_from is not None:
        model = YOLO(str(resume_from), task=task_for(config.mode).ultralytics_task)
        results = model.train(
            resume=True, data=str(data_yaml), device=device.argument, workers=config.workers
        )
        return _best_weights(results, model)
    model = YOLO(base_model, task=task_for(config.mode).ultralytics_task)
    training = training_arguments(config, data_yaml, output_dir, device, arguments)
    return _best_weights(model.train(**training), model)


def training_arguments(
    config: TrainingConfig, data_yaml: Path, output_dir: Path, device: Device, arguments: dict
) -> dict:
    """`model.train`'s arguments: our options, then the derived and user arguments over them
    (a user's `amp: false` wins over AMP on GPUs), then what is ours alone to decide."""
    return {
        "data": str(data_yaml),
        "epochs": config.num_epochs,
        "imgsz": config.image_size,
        "batch": config.batch_size,
        "patience": config.patience,
        "workers": config.workers,
        "amp": device.amp,
        **arguments,
        # Where data is read and results written is ours to decide
        "device": device.argument,
        "project": str(Path(output_dir).resolve()),
        "name": "training",
        "exist_ok": True,
        "plots": True,
        "verbose": True,
    }


def _best_weights(results, model) -> Path:
    save_dir = Path(getattr(results, "save_dir", None) or model.trainer.save_dir)
    best = save_dir / "weights" / "best.pt"
    if not best.is_file():
        raise RuntimeError(f"Training finished without best weights in {best.parent}")
    return best


def evaluate(
    weights: Path,
    config: TrainingConfig,
    data_yaml: Path,
    split: str,
    output_dir: Path,
    device: Device,
    arguments: dict,
):
    """Evaluate weights on one split into `output_dir/eval_<split>`, with the evaluation
    arguments derived from the dataset (`max_det`, `overlap_mask`); returns Ultralytics' metrics."""
    from ultralytics import YOLO

    model = YOLO(str(weights), task=task_for(config.mode).ultralytics_task)
    return model.val(
        data=str(data_yaml),
        split=split,
        imgsz=config.image_size,
        batch=max(config.batch_size, 1),
        device=device.argument.split(",")[0],
        project=str(Path(output_dir).resolve()),
        name=f"eval_{split}",
        exist_ok=True,
        plots=True,
        verbose=False,
        **arguments,
    )
