"""What a model predicts: the values of the `mode` option. What each mode means, from the export to
the published model, is its module under `modes/`."""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    Segment = "segment"
    BBox = "bbox"
    OBB = "obb"
    Classify = "classify"
