"""What the model version says: the training's facts (`training.json`), the Markdown description
shown on the model version's page, and what is published (`ModelVersion`, also written to
`model_version.json` in local mode). Its configuration is the inference worker's
(`core.inference`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from worker_yolo_training.core import Mode, escape, markdown_table
from worker_yolo_training.evaluate import COMPARISON_HEADING
from worker_yolo_training.extract import SplitReport, summary_table


@dataclass(frozen=True)
class ModelVersion:
    """What is published: the inference worker's configuration and the model page's text."""

    configuration: dict
    description: str

    def payload(self) -> dict[str, Any]:
        """What would be published, as written to `model_version.json` in local mode."""
        return {"configuration": dict(self.configuration), "description": self.description}


def training_metadata(
    *,
    mode: Mode,
    task: str,
    class_names: Sequence[str],
    image_size: int,
    model_size: str,
    ultralytics_version: str,
    dataset_splits: Mapping[str, SplitReport],
    confidence_threshold: float,
    confidence_threshold_source: str,
    largest_element_objects: int,
    max_detection: int | None,
    base_model: str | None = None,
    settings: Mapping[str, Any] | None = None,
    derived: Sequence[str] = (),
) -> dict[str, Any]:
    """`training.json` for the results archive, and the facts the description shows.

    :param dataset_splits: what each split holds and skipped (`SplitReport.counts`).
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
        "dataset": {split: report.counts(class_names) for split, report in dataset_splits.items()},
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
    heading: str,
    comparison: str = "",
) -> str:
    """Markdown shown on the model version's page: a summary line, the inference worker's view
    (under `heading`, the mode's), the comparison with the baseline (when there is one), the
    worst elements (when there are),
    Ultralytics' metrics, then the training details (from `training_metadata`). The tables are
    given as Markdown."""
    names = ", ".join(f"`{name}`" for name in metadata["class_names"])
    sections = [
        f"YOLO{metadata['ultralytics_model_size']} trained in {metadata['mode']} mode on {names} "
        f"({metadata['image_size']} px, Ultralytics {metadata['ultralytics_version']}).",
        f"## {heading}\n\n{page_table.strip()}",
        *([f"## {COMPARISON_HEADING}\n\n{comparison.strip()}"] if comparison.strip() else []),
        *([f"## Worst elements\n\n{worst_elements.strip()}"] if worst_elements.strip() else []),
        f"## Ultralytics metrics\n\n{map_table.strip()}",
        "## Training\n\n" + _settings_table(metadata),
        *(
            ["### Settings read from the dataset\n\n" + "\n".join(f"- {d}" for d in derived)]
            if (derived := metadata.get("derived"))
            else []
        ),
        "### Dataset\n\n" + summary_table(metadata["dataset"]),
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
    return markdown_table(["setting", "value"], [[key, escape(value)] for key, value in rows])
