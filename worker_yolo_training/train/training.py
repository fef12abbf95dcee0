"""Training and Ultralytics' validation: the device (every GPU, else every CPU core), the
training arguments, the run folders."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from worker_yolo_training.config import TrainingConfig
from worker_yolo_training.core import checkpoint
from worker_yolo_training.train.environment import use_weights_dir

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Device:
    """Where training runs: `device` as Ultralytics takes it, and whether AMP applies."""

    argument: str
    amp: bool
    gpus: int

    @property
    def main(self) -> str:
        """The one device of single-device work (evaluation, prediction)."""
        return self.argument.split(",")[0]


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
    task: str,
    base_model: str,
    data_yaml: Path,
    run_folder: Path,
    device: Device,
    arguments: dict,
    resume_from: Path | None = None,
) -> Path:
    """Train the Ultralytics `task`, writing Ultralytics' run folder at `run_folder`; returns
    the best weights.

    `arguments` are the Ultralytics arguments derived from the dataset with the user's
    `advanced.training_kwargs` over them (`extract.derive`). `resume_from` (a `last.pt`)
    continues an interrupted training with Ultralytics' resume: its own arguments are reused,
    only the device and data loaders are set again.
    """
    from ultralytics import YOLO

    use_weights_dir()
    if resume_from is not None and finished(resume_from):
        logger.info(f"Training had finished ({resume_from}): its best weights are evaluated")
        return checkpoint(run_folder, "best")
    if resume_from is not None:
        model = YOLO(str(resume_from), task=task)
        results = model.train(
            resume=True, data=str(data_yaml), device=device.argument, workers=config.workers
        )
        return _best_weights(results, model)
    model = YOLO(base_model, task=task)
    training = training_arguments(config, data_yaml, run_folder, device, arguments)
    return _best_weights(model.train(**training), model)


def finished(last_weights: Path) -> bool:
    """Whether Ultralytics ended the training of this `last.pt`: it then strips the optimizer and
    marks the epoch -1 (`strip_optimizer`), and refuses to resume it."""
    from ultralytics.utils.patches import torch_load

    return torch_load(last_weights, map_location="cpu").get("epoch") == -1


def ultralytics_folder(folder: Path) -> dict[str, str]:
    """Ultralytics' `project` and `name` arguments that make its run folder `folder`."""
    folder = Path(folder).resolve()
    return {"project": str(folder.parent), "name": folder.name}


def training_arguments(
    config: TrainingConfig, data_yaml: Path, run_folder: Path, device: Device, arguments: dict
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
        **ultralytics_folder(run_folder),
        "exist_ok": True,
        "plots": True,
        "verbose": True,
    }


def _best_weights(results, model) -> Path:
    save_dir = Path(getattr(results, "save_dir", None) or model.trainer.save_dir)
    best = checkpoint(save_dir, "best")
    if not best.is_file():
        raise RuntimeError(f"Training finished without best weights in {best.parent}")
    return best


def validate(
    weights: Path,
    config: TrainingConfig,
    task: str,
    data_yaml: Path,
    split: str,
    folder: Path,
    device: Device,
    arguments: dict,
):
    """Ultralytics' validation of weights on one split into `folder`, with the evaluation
    arguments derived from the dataset (`max_det`, `overlap_mask`); returns Ultralytics' metrics."""
    from ultralytics import YOLO

    model = YOLO(str(weights), task=task)
    return model.val(
        data=str(data_yaml),
        split=split,
        imgsz=config.image_size,
        batch=max(config.batch_size, 1),
        device=device.main,
        **ultralytics_folder(folder),
        exist_ok=True,
        plots=True,
        verbose=False,
        **arguments,
    )
