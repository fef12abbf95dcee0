"""What leaves the worker: the model directory, the model version's configuration and description,
the training metadata, and the `results.tar.zst` archive of the training and evaluation folders.

The model version's configuration is a contract with Teklia's YOLO segmenter
(`teklia-yolo-worker` 1.4.3, `worker_yolo/segmenter.py`): Arkindex merges it into the segmenter's
configuration (the segmenter's defaults, then these keys, then the user's values), so it holds
only keys the segmenter reads, each with the segmenter's meaning. What this training was (mode,
classes, sizes, versions, dataset counts) goes into the description and `training.json`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from arkindex_worker.utils import create_tar_zst_archive

from worker_yolo_training.config import Mode
from worker_yolo_training.dataset import summary_table
from worker_yolo_training.layout import RunLayout

MODEL_FILE = "model.pt"


def build_model_dir(best_weights: Path, model_dir: Path) -> Path:
    """A directory holding only `model.pt`, as the YOLO inference worker loads it."""
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True)
    shutil.copyfile(best_weights, model_dir / MODEL_FILE)
    return model_dir


# ------------------------------------------------------------------ the segmenter's configuration


def model_configuration(
    *,
    use_segment: Sequence[str],
    image_size: int,
    confidence_threshold: float,
    max_detection: int,
) -> dict[str, Any]:
    """The model version's configuration: only keys of the YOLO segmenter, with its meaning.

    - `thumbnail_size`: the training image size; the segmenter fetches each element to fit in
      that square, as the training images were made;
    - `use_segment` (`Task.use_segment`): the class names (raw, as the model names them) in
      segment mode, so that the segmenter outputs mask polygons; `[]` otherwise: boxes, and in obb
      mode the oriented box corners (the segmenter reads `results.obb.xyxyxyxy` when the model
      has no masks, whatever its `mode`, whose default `default` is what obb needs);
    - `confidence_threshold`: the threshold the page-level evaluation used;
    - `max_detection`: the `max_det` derived from the densest element (`derived.py`).

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
        "use_segment": list(use_segment),
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
    task: str,
    class_names: Sequence[str],
    image_size: int,
    model_size: str,
    ultralytics_version: str,
    dataset_splits: Mapping[str, Mapping[str, Any]],
    confidence_threshold: float,
    confidence_threshold_source: str,
    largest_element_objects: int,
    max_detection: int | None,
    base_model: str | None = None,
    settings: Mapping[str, Any] | None = None,
    derived: Sequence[str] = (),
) -> dict[str, Any]:
    """`training.json` for the results archive, and the facts the description shows.

    :param dataset_splits: `summary.json`'s `splits` (per split: `elements`, `images`,
       `objects` per class, `skipped` per reason; other keys are left out).
    :param confidence_threshold_source: how the threshold was chosen, in words
       (e.g. "calibrated: best F1 on val", "advanced.confidence_threshold").
    :param base_model: the weights training started from (a file name or path).
    :param settings: other training settings worth keeping (epochs, batch size, …).
    :param derived: the settings read from the dataset, each with its evidence and override.
    """
    return {
        "mode": mode.value,
        "task": task,
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
                "objects_with_several_parts": report.get("objects_with_several_parts", 0),
                "skipped": dict(report.get("skipped", {})),
            }
            for split, report in dataset_splits.items()
        },
        "confidence_threshold": confidence_threshold,
        "confidence_threshold_source": confidence_threshold_source,
        "largest_element_objects": largest_element_objects,
        "max_detection": max_detection,
        "settings": dict(settings or {}),
        "derived": list(derived),
    }


def model_description(
    metadata: Mapping[str, Any],
    page_table: str,
    worst_elements: str,
    map_table: str,
    heading: str | None = None,
) -> str:
    """Markdown shown on the model version's page: a summary line, the page-level table (under
    `heading`, by default the page-level evaluation's), the worst elements (when there are),
    Ultralytics' metrics, then the training details (from `training_metadata`). The tables are
    given as Markdown."""
    names = ", ".join(f"`{name}`" for name in metadata["class_names"])
    threshold = metadata["confidence_threshold"]
    heading = heading or (
        f"Page-level evaluation (confidence ≥ {threshold:g}, match: same class and IoU ≥ 0.5)"
    )
    sections = [
        f"YOLO{metadata['ultralytics_model_size']} trained in {metadata['mode']} mode on {names} "
        f"({metadata['image_size']} px, Ultralytics {metadata['ultralytics_version']}).",
        f"## {heading}\n\n{page_table.strip()}",
        *([f"## Worst elements\n\n{worst_elements.strip()}"] if worst_elements.strip() else []),
        f"## Ultralytics metrics\n\n{map_table.strip()}",
        "## Training\n\n" + _settings_table(metadata),
        *(
            ["### Settings read from the dataset\n\n" + "\n".join(f"- {d}" for d in derived)]
            if (derived := metadata.get("derived"))
            else []
        ),
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
        *(
            [
                (
                    "max detections",
                    f"{metadata['max_detection']} (largest element: "
                    f"{metadata['largest_element_objects']} objects)",
                )
            ]
            if metadata["max_detection"] is not None  # classify mode: nothing is detected
            else []
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


def results_members(layout: RunLayout, splits: Iterable[str]) -> tuple[list[Path], list[Path]]:
    """What `results.tar.zst` holds: folders (without weights) and files, at the archive root."""
    folders = [layout.training, *(layout.evaluation(split) for split in splits)]
    files = [layout.metrics, layout.evaluation_md, layout.summary, layout.training_metadata]
    return folders, files


def build_results_archive(layout: RunLayout, splits: Iterable[str], destination: Path) -> Path:
    """`results.tar.zst`: this run's training and evaluation folders (minus weights) and its
    metrics, evaluation table and extraction summary."""
    folders, files = results_members(layout, splits)
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
