"""The modes, above every stage: what differs between segment, bbox, obb and classify, one module
each (`detection.py`, `classification.py`), registered in one table (`registry.py`)."""

from worker_yolo_training.modes.base import ModeSpec, Trained
from worker_yolo_training.modes.classification import choose_class
from worker_yolo_training.modes.registry import MODES, spec_for

__all__ = [
    "MODES",
    "ModeSpec",
    "Trained",
    "choose_class",
    "spec_for",
]
