"""What Teklia's inference workers (PyPI `teklia-yolo-worker` 1.4.3) read from a model version's
configuration: the contract `publish.py` writes to, and the keys `config.py` must recognise when
Arkindex merges a model version's configuration into this worker's own."""

from __future__ import annotations

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
