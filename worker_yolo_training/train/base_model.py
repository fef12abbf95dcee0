"""The model training starts from: a model version's weights (fine-tuning, with what changes in
its classes), Ultralytics' pretrained weights, or an architecture file (no download needed)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import requests

from worker_yolo_training.config import TrainingConfig
from worker_yolo_training.core import MODEL_FILE

logger = logging.getLogger(__name__)

WEIGHTS_URL = "https://github.com/ultralytics/assets/releases/download/v8.4.0/{name}"
DOWNLOAD_TIMEOUT = (10, 120)


@dataclass(frozen=True)
class Architecture:
    """A mode's family of Ultralytics models: its task and the suffix of its file names."""

    #: Ultralytics' task name (`YOLO(..., task=...)`)
    task: str
    #: Suffix of Ultralytics' file names (`yolov8m-seg.pt`)
    suffix: str

    def weights(self, model_size: str) -> str:
        """File name of Ultralytics' pretrained weights of this size."""
        return f"yolo{model_size}{self.suffix}.pt"

    def definition(self, model_size: str) -> str:
        """File name of Ultralytics' architecture of this size (no download needed)."""
        return f"yolo{model_size}{self.suffix}.yaml"


class BaseModelError(Exception):
    """The base model cannot be obtained; the message says how to provide it."""


def download(url: str, target: Path) -> None:
    """`url` streamed to `target` (a partial file until it is whole)."""
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


def finetuned_model(model_dir: Path, config: TrainingConfig, task: str) -> str:
    """The `model.pt` of the model version being fine-tuned; says which classes are kept, new and
    dropped, and warns when its task or training image size differ from this training's."""
    path = Path(model_dir) / MODEL_FILE
    if not path.is_file():
        raise BaseModelError(
            f"The model version to fine-tune has no {MODEL_FILE} in {model_dir}: "
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
    config: TrainingConfig,
    architecture: Architecture,
    weights_dir: Path,
    finetune_dir: Path | None = None,
) -> str:
    """The model training starts from: a model version's weights, pretrained weights, or an
    architecture.

    Pretrained weights are looked for in `weights_dir`, then downloaded there. Called before any
    image is fetched, so that a missing file costs seconds, not a dataset download.
    """
    if finetune_dir is not None:
        return finetuned_model(finetune_dir, config, architecture.task)
    definition = architecture.definition(config.model_size)
    weights = architecture.weights(config.model_size)
    if not config.pretrained:
        return definition
    target = Path(weights_dir) / weights
    if target.is_file():
        return str(target)
    url = WEIGHTS_URL.format(name=weights)
    logger.info(f"Downloading pretrained weights {url} to {target}")
    try:
        download(url, target)
    except requests.RequestException as error:
        raise BaseModelError(
            f"Could not download the pretrained weights {weights} ({error}). "
            f"Place the file at {target}, or set `advanced.pretrained: false` to train "
            f"{definition} from scratch."
        ) from error
    return str(target)
