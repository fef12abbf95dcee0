"""The model a run compares its new weights with (the baseline): the model version being
fine-tuned, weights given with `--baseline`, or a version of the target model; with the
configuration it was published with, as the inference worker would run it."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import requests
from arkindex_worker.utils import extract_tar_zst_archive

from worker_yolo_training.config import TrainingConfig, key_of
from worker_yolo_training.core import MODEL_FILE, RunLayout, inference_settings
from worker_yolo_training.train.base_model import BaseModelError, download, read_parent

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Baseline:
    """A model to compare with: what it is called in the reports, its weights, the inference
    configuration it was published with, and what its checkpoint says (task, classes)."""

    name: str
    weights: Path
    configuration: Mapping[str, Any] = field(default_factory=dict)
    task: str = ""
    class_names: tuple[str, ...] = ()
    #: Asked for by the user (`--baseline`): a baseline that cannot be compared is an error
    explicit: bool = False

    def payload(self) -> dict[str, Any]:
        """`metrics.json`'s `baseline.model`."""
        return {
            "name": self.name,
            "task": self.task,
            "class_names": list(self.class_names),
            "configuration": dict(self.configuration),
        }


def load_baseline(
    weights: Path, configuration: Mapping[str, Any], name: str, explicit: bool = False
) -> Baseline:
    """A baseline from its checkpoint (task and classes read from it)."""
    if not Path(weights).is_file():
        raise BaseModelError(f"The baseline {name} has no weights at {weights}")
    parent = read_parent(Path(weights))
    return Baseline(
        name, Path(weights), dict(configuration), parent.task, tuple(parent.class_names), explicit
    )


def local_configuration(weights: Path) -> dict[str, Any]:
    """The configuration a local run would have published with these weights: the one it
    wrote in its output folder (weights in `OUT/model/`, or beside it); {} when there is none."""
    for root in (weights.parent.parent, weights.parent):
        path = RunLayout(root).model_version
        if path.is_file():
            logger.info(f"Baseline configuration read from {path}")
            return dict(json.loads(path.read_text()).get("configuration") or {})
    logger.warning(
        f"No published configuration found for the baseline {weights}: it is evaluated with the "
        "inference worker's defaults"
    )
    return {}


def local_baseline(weights: Path) -> Baseline:
    """`--baseline PATH`: weights and the configuration their run would have published."""
    return load_baseline(weights, local_configuration(weights), str(weights), explicit=True)


def usable_baseline(baseline: Baseline, config: TrainingConfig, task: str) -> Baseline | None:
    """The baseline when it can be compared with this training's model; None (with a warning)
    when its task differs, an error when the user asked for it. Warns when the inference worker
    would fetch its images at another size than this run's evaluation images."""
    if baseline.task != task:
        message = (
            f"The baseline {baseline.name} is a {baseline.task} model and this run trains a "
            f"{task} model (mode {config.mode.value}): their predictions cannot be compared"
        )
        if baseline.explicit:
            raise BaseModelError(f"{message}. Choose a {task} model as baseline.")
        logger.warning(f"{message}: no comparison.")
        return None
    thumbnail = inference_settings(baseline.configuration).thumbnail_size
    if thumbnail and thumbnail != config.image_size:
        logger.warning(
            f"The baseline {baseline.name} was published with thumbnail_size {thumbnail}: it is "
            f"evaluated on this run's images ({config.image_size} px), at its own prediction size"
        )
    return baseline


def _version(api_client: Any, config: TrainingConfig) -> tuple[dict | None, bool]:
    """`advanced.baseline_model_version` (explicit), else the latest available version of the
    target model, as the API describes it."""
    if config.baseline_model_version:
        return api_client.request("RetrieveModelVersion", id=config.baseline_model_version), True
    if not config.target_model_id:
        return None, False
    versions = api_client.paginate("ListModelVersions", id=config.target_model_id)
    available = [version for version in versions if version["state"] == "available"]
    if not available:
        logger.info("The target model has no available version: no baseline to compare with")
        return None, False
    return max(available, key=lambda version: version["created"]), False


def published_baseline(api_client: Any, config: TrainingConfig, folder: Path) -> Baseline | None:
    """A model version of Arkindex as baseline (`_version`), its archive downloaded and
    extracted in `folder`; None when there is none to compare with."""
    version, explicit = _version(api_client, config)
    if version is None:
        return None
    name = f"model version {version['id']}"
    if version["state"] != "available" or not version.get("s3_url"):
        message = f"The baseline {name} cannot be downloaded (state {version['state']})"
        if explicit:
            raise BaseModelError(f"{message}: fix `{key_of('baseline_model_version')}`.")
        logger.warning(f"{message}: no comparison.")
        return None
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / f"{version['id']}.tar.zst"
    try:
        download(version["s3_url"], archive)
    except requests.RequestException as error:
        raise BaseModelError(f"The baseline {name} could not be downloaded ({error})") from error
    extract_tar_zst_archive(archive, folder / version["id"])
    archive.unlink()
    weights = folder / version["id"] / MODEL_FILE
    return load_baseline(weights, version["configuration"], name, explicit)


def choose_baseline(
    config: TrainingConfig,
    task: str,
    explicit: Path | None,
    finetuned: Baseline | None,
    published: Callable[[], Baseline | None] | None = None,
) -> Baseline | None:
    """The baseline of a run: `--baseline` (`explicit`), else the model version being fine-tuned
    (locally, without a published configuration, the one its run wrote), else a version from
    Arkindex (`published`, None in local mode), else none."""
    if explicit is not None:
        chosen = local_baseline(explicit)
    elif finetuned is not None:
        configuration = finetuned.configuration or local_configuration(finetuned.weights)
        chosen = replace(finetuned, configuration=configuration)
    elif published is not None and (found := published()) is not None:
        chosen = found
    else:
        if config.baseline_model_version and published is None:
            logger.warning(
                f"`{key_of('baseline_model_version')}` is read in Arkindex only: locally, give "
                "the weights with --baseline"
            )
        return None
    logger.info(f"Baseline: {chosen.name} ({chosen.task}, classes {list(chosen.class_names)})")
    return usable_baseline(chosen, config, task)
