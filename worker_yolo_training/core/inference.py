"""The contract with Teklia's inference workers (PyPI `teklia-yolo-worker` 1.4.3): what they read
from a model version's configuration, with their meaning and defaults, and the keys the
configuration must recognise when Arkindex merges a model version's configuration into this
worker's own.

Arkindex merges a published configuration into the inference worker's (its defaults, then these
keys, then the user's values), so it holds only keys that worker reads, each with its meaning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
# The segmenter's own `mode` values (its enum): ours has other values under the same key
SEGMENTER_MODES = ("default", "minimum_rotated_rectangle")
# The workers' `confidence_threshold` default: used when val cannot calibrate one
DEFAULT_THRESHOLD = 0.25
# The segmenter's NMS IoU at prediction (its `iou` default; we publish no other)
SEGMENTER_IOU = 0.7
# The segmenter's `max_detection` default (Ultralytics `max_det` at prediction)
SEGMENTER_MAX_DETECTION = 300
# The classifier rounds the top-1 confidence before comparing it with its threshold
CONFIDENCE_DECIMALS = 3


def segmenter_configuration(
    *,
    use_segment: list[str],
    image_size: int,
    confidence_threshold: float,
    max_detection: int,
) -> dict[str, Any]:
    """The model version's configuration for the YOLO segmenter (`worker_yolo/segmenter.py`):
    only its keys, with its meaning.

    - `thumbnail_size`: the training image size; the segmenter fetches each element to fit in
      that square, as the training images were made;
    - `use_segment`: the class names (raw, as the model names them) in segment mode, so that the
      segmenter outputs mask polygons; `[]` otherwise: boxes, and in obb mode the oriented box
      corners (the segmenter reads `results.obb.xyxyxyxy` when the model has no masks, whatever
      its `mode`, whose default `default` is what obb needs);
    - `confidence_threshold`: the threshold the page-level evaluation used;
    - `max_detection`: the `max_det` derived from the densest element (`extract.derived`).

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


def classifier_configuration(*, image_size: int, confidence_threshold: float) -> dict[str, Any]:
    """The model version's configuration for the YOLO classifier (`worker_yolo/worker.py`
    `YOLOWorker.configure`, `worker_yolo/classifier.py`): only keys it reads, with its meaning.

    - `thumbnail_size`: it downloads each element at most this size on a side, as the training
      images were;
    - `confidence_threshold`: it creates no classification when the top-1 confidence (rounded to
      `CONFIDENCE_DECIMALS`) is under it (`YOLOClassifier.process_element`): the threshold
      calibrated on val (best macro-F1), or `advanced.confidence_threshold`.
    """
    return {"thumbnail_size": image_size, "confidence_threshold": confidence_threshold}


@dataclass(frozen=True)
class InferenceSettings:
    """How the inference worker runs a model version: the keys it reads from the version's
    published configuration, its own defaults for the others."""

    confidence_threshold: float = DEFAULT_THRESHOLD
    max_detection: int = SEGMENTER_MAX_DETECTION
    iou: float = SEGMENTER_IOU
    use_segment: tuple[str, ...] = ()
    #: The segmenter's `mode: minimum_rotated_rectangle`
    min_rectangle: bool = False
    thumbnail_size: int | None = None


def inference_settings(configuration: Mapping[str, Any]) -> InferenceSettings:
    """A published configuration as the segmenter and the classifier read it (Arkindex merges it
    over their defaults); keys they do not read are ignored."""
    thumbnail = configuration.get("thumbnail_size")
    return InferenceSettings(
        confidence_threshold=float(configuration.get("confidence_threshold", DEFAULT_THRESHOLD)),
        max_detection=int(configuration.get("max_detection", SEGMENTER_MAX_DETECTION)),
        iou=float(configuration.get("iou", SEGMENTER_IOU)),
        use_segment=tuple(str(name) for name in configuration.get("use_segment") or ()),
        min_rectangle=configuration.get("mode") == SEGMENTER_MODES[1],
        thumbnail_size=int(thumbnail) if thumbnail else None,
    )
