"""What leaves the worker: the model directory, the model version's configuration and description,
the training metadata, and the `results.tar.zst` archive of the training and evaluation folders.

The model version's configuration is a contract with Teklia's YOLO segmenter
(`teklia-yolo-worker` 1.4.3, `worker_yolo/segmenter.py`): Arkindex merges it into the segmenter's
configuration (the segmenter's defaults, then these keys, then the user's values), so it holds
only keys the segmenter reads, each with the segmenter's meaning. What this training was (mode,
classes, sizes, versions, dataset counts) goes into the description and `training.json`.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from arkindex_worker.utils import create_tar_zst_archive

from worker_yolo_training.config import Mode
from worker_yolo_training.dataset import summary_table

MODEL_FILE = "model.pt"
RESULTS_ARCHIVE = "results.tar.zst"
TRAINING_METADATA_FILE = "training.json"
MODEL_VERSION_FILE = "model_version.json"

# Every key of the segmenter's configuration (teklia-yolo-worker 1.4.3: worker_yolo/worker.py
# `YOLOWorker.configure`, worker_yolo/segmenter.py `YOLOSegmenter.configure`). A model version
# may carry any of them, and Arkindex merges a model version's configuration into the
# configuration of every worker run that uses it, this worker's fine-tuning runs included.
SEGMENTER_KEYS = frozenset(
    {
        "thumbnail_size",
        "use_segment",
        "mode",
        "confidence_threshold",
        "max_detection",
        "iou",
        "image_extension",
        "resize_1px",
        "name_after_parent",
        "overlap.remove_overlapping_objects",
        "overlap.min_overlap_threshold",
        "overlap.max_overlap_threshold",
        "overlap.max_overlap_count",
    }
)
# The segmenter's own defaults (Ultralytics' too): 300 detections, confidence 0.25
DEFAULT_MAX_DETECTION = 300
DEFAULT_CONFIDENCE_THRESHOLD = 0.25
# max_detection is rounded up to a multiple of this, leaving room for pages a little fuller
# than the fullest training element
MAX_DETECTION_STEP = 100


def build_model_dir(best_weights: Path, model_dir: Path) -> Path:
    """A directory holding only `model.pt`, as the YOLO inference worker loads it."""
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True)
    shutil.copyfile(best_weights, model_dir / MODEL_FILE)
    return model_dir


# ------------------------------------------------------------------ the segmenter's configuration


def largest_label_count(dataset_dir: Path) -> int:
    """The largest number of objects on one element of a YOLO dataset: the most lines in one
    `labels/<split>/<element>.txt` file (0 for a dataset without labels)."""
    return max(
        (
            sum(1 for line in path.read_text().splitlines() if line.strip())
            for path in dataset_dir.glob("labels/*/*.txt")
        ),
        default=0,
    )


def max_detection_for(largest_element_objects: int) -> int:
    """The segmenter's `max_detection` for a model trained on elements holding at most this many
    objects: that number rounded up to a multiple of 100, and at least 300 (Ultralytics' and the
    segmenter's default), so that a full page is never cut short."""
    if largest_element_objects < 0:
        raise ValueError(f"a number of objects cannot be negative, got {largest_element_objects}")
    rounded = math.ceil(largest_element_objects / MAX_DETECTION_STEP) * MAX_DETECTION_STEP
    return max(DEFAULT_MAX_DETECTION, rounded)


def model_configuration(
    *,
    mode: Mode,
    class_names: Sequence[str],
    image_size: int,
    confidence_threshold: float,
    max_detection: int,
) -> dict[str, Any]:
    """The model version's configuration: only keys of the YOLO segmenter, with its meaning.

    - `thumbnail_size`: the training image size; the segmenter fetches each element to fit in
      that square, as the training images were made;
    - `use_segment`: the class names (raw, as the model names them) in segment mode, so that the
      segmenter outputs mask polygons; `[]` otherwise: boxes, and in obb mode the oriented box
      corners (the segmenter reads `results.obb.xyxyxyxy` when the model has no masks, whatever
      its `mode`, whose default `default` is what obb needs);
    - `confidence_threshold`: the threshold the page-level evaluation used;
    - `max_detection`: see `max_detection_for`.

    The segmenter's `mode` is not published: its default (`default`) is right for every mode, and
    `minimum_rotated_rectangle` (each mask replaced by its minimum rotated rectangle) stays the
    user's choice.
    """
    if not 0 < confidence_threshold <= 1:
        raise ValueError(f"confidence_threshold must be in (0, 1], got {confidence_threshold}")
    if isinstance(max_detection, bool) or not isinstance(max_detection, int) or max_detection < 1:
        raise ValueError(f"max_detection must be a positive integer, got {max_detection!r}")
    return {
        "thumbnail_size": int(image_size),
        "use_segment": list(class_names) if mode is Mode.Segment else [],
        "confidence_threshold": float(confidence_threshold),
        "max_detection": max_detection,
    }


def model_version_payload(configuration: Mapping[str, Any], description: str) -> dict[str, Any]:
    """What would be published, as written to `OUT/model_version.json` in local mode."""
    return {"configuration": dict(configuration), "description": description}


# ------------------------------------------------------------------ what the training was


def training_metadata(
    *,
    mode: Mode,
    class_names: Sequence[str],
    image_size: int,
    model_size: str,
    ultralytics_version: str,
    dataset_splits: Mapping[str, Mapping[str, Any]],
    confidence_threshold: float,
    confidence_threshold_source: str,
    largest_element_objects: int,
    max_detection: int,
    base_model: str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`training.json` for the results archive, and the facts the description shows.

    :param dataset_splits: `summary.json`'s `splits` (per split: `elements`, `images`,
       `objects` per class, `skipped` per reason; other keys are left out).
    :param confidence_threshold_source: how the threshold was chosen, in words
       (e.g. "calibrated: best F1 on val", "advanced.confidence_threshold").
    :param base_model: the weights training started from (a file name or path).
    :param settings: other training settings worth keeping (epochs, batch size, …).
    """
    return {
        "mode": mode.value,
        "task": mode.task,
        "class_names": list(class_names),
        "image_size": image_size,
        "ultralytics_model_size": model_size,
        "ultralytics_version": ultralytics_version,
        "base_model": base_model,
        "dataset": {
            split: {
                "elements": report["elements"],
                "images": report["images"],
                "objects": dict(report["objects"]),
                "skipped": dict(report.get("skipped", {})),
            }
            for split, report in dataset_splits.items()
        },
        "confidence_threshold": confidence_threshold,
        "confidence_threshold_source": confidence_threshold_source,
        "largest_element_objects": largest_element_objects,
        "max_detection": max_detection,
        "settings": dict(settings or {}),
    }


def model_description(
    metadata: Mapping[str, Any], page_table: str, worst_elements: str, map_table: str
) -> str:
    """Markdown shown on the model version's page: a summary line, the page-level table, the
    worst elements, Ultralytics' mAP table, then the training details (from `training_metadata`).
    The tables are given as Markdown."""
    names = ", ".join(f"`{name}`" for name in metadata["class_names"])
    threshold = metadata["confidence_threshold"]
    sections = [
        f"YOLO{metadata['ultralytics_model_size']} trained in {metadata['mode']} mode on {names} "
        f"({metadata['image_size']} px, Ultralytics {metadata['ultralytics_version']}).",
        f"## Page-level evaluation (confidence ≥ {threshold:g}, match: same class and "
        f"IoU ≥ 0.5)\n\n{page_table.strip()}",
        f"## Worst elements\n\n{worst_elements.strip()}",
        f"## Ultralytics metrics\n\n{map_table.strip()}",
        "## Training\n\n" + _settings_table(metadata),
        "### Dataset\n\n" + summary_table({"splits": metadata["dataset"]}),
    ]
    return "\n\n".join(sections) + "\n"


def _settings_table(metadata: Mapping[str, Any]) -> str:
    rows = [
        ("mode", f"{metadata['mode']} (Ultralytics task {metadata['task']})"),
        ("class names", ", ".join(metadata["class_names"])),
        ("image size", f"{metadata['image_size']} px"),
        ("YOLO size", metadata["ultralytics_model_size"]),
        ("Ultralytics", metadata["ultralytics_version"]),
        ("base model", metadata["base_model"] or "-"),
        (
            "confidence threshold",
            f"{metadata['confidence_threshold']:g} ({metadata['confidence_threshold_source']})",
        ),
        (
            "max detections",
            f"{metadata['max_detection']} (largest element: "
            f"{metadata['largest_element_objects']} objects)",
        ),
        *((str(key), str(value)) for key, value in metadata["settings"].items()),
    ]
    lines = ["| setting | value |", "|---|---|"]
    lines += [f"| {key} | {_cell(value)} |" for key, value in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    # A pipe would end the Markdown cell
    return str(value).replace("|", "\\|")


# ------------------------------------------------------------------ the results archive


def build_results_archive(
    folders: Iterable[Path], files: Iterable[Path], destination: Path
) -> Path:
    """`results.tar.zst`: the given folders (minus weights) and files, at the archive root."""
    with tempfile.TemporaryDirectory(prefix="yolo-results-") as staging:
        staging = Path(staging)
        for folder in folders:
            if folder.is_dir():
                shutil.copytree(
                    folder, staging / folder.name, ignore=shutil.ignore_patterns("weights", "*.pt")
                )
        for file in files:
            if file.is_file():
                shutil.copyfile(file, staging / file.name)
        destination.unlink(missing_ok=True)
        create_tar_zst_archive(staging, destination)
    return destination
