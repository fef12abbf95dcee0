"""The modes, one line each: adding a mode is one module in `modes/` and one line here."""

from __future__ import annotations

from worker_yolo_training.core import Mode
from worker_yolo_training.modes.base import ModeSpec
from worker_yolo_training.modes.classification import CLASSIFICATION
from worker_yolo_training.modes.detection import DETECTIONS

MODES: dict[Mode, ModeSpec] = {
    Mode.Segment: DETECTIONS[Mode.Segment],
    Mode.BBox: DETECTIONS[Mode.BBox],
    Mode.OBB: DETECTIONS[Mode.OBB],
    Mode.Classify: CLASSIFICATION,
}


def spec_for(mode: Mode) -> ModeSpec:
    """What a mode means (the top of the package looks it up once per run)."""
    return MODES[mode]
