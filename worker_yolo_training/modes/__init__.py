"""The modes, above every stage: what differs between segment, bbox, obb and classify, one module
each (`detection.py`, `classification.py`), registered in one table (`registry.py`)."""

from worker_yolo_training.modes.base import ModeSpec, Trained
from worker_yolo_training.modes.classification import (
    NAMES_FILE,
    check_split_classes,
    choose_class,
    split_classes,
)
from worker_yolo_training.modes.detection import DATA_FILE
from worker_yolo_training.modes.registry import MODES, spec_for

__all__ = [
    "DATA_FILE",
    "MODES",
    "NAMES_FILE",
    "ModeSpec",
    "Trained",
    "check_split_classes",
    "choose_class",
    "spec_for",
    "split_classes",
]
