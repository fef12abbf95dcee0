"""What one dataset element becomes before its image is fetched: its oriented crop, the request
for it, and its labels (what they are is the mode's), with everything left out and why."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from worker_yolo_training.core import Frame, Label, Mode, Skip, crop_box, truth_objects
from worker_yolo_training.export import Page, page_defect
from worker_yolo_training.extract.shape import ElementShape, measure_elements
from worker_yolo_training.images import CropRequest, fetch_size

logger = logging.getLogger(__name__)

# Ultralytics drops smaller images from training and evaluation
MIN_IMAGE_SIDE = 10


@dataclass
class Sample:
    """One dataset element, ready to be fetched and written.

    `label` is what the mode writes for it: the label file's text in detection modes.
    `objects` counts what it holds per class name; `skipped` what was left out, per reason.
    `labelled` holds each object's class name and label (what derived settings measure), `truth`
    each object's class name and whole polygon in the element's oriented pixels (what the
    page-level evaluation matches predictions with).
    """

    page: Page
    frame: Frame
    request: CropRequest
    label: str = ""
    objects: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    labelled: list[tuple[str, Label]] = field(default_factory=list)
    truth: list[tuple[str, list[Sequence[float]]]] = field(default_factory=list)  # (x, y) points

    @property
    def several_parts(self) -> int:
        """Objects whose geometry had several parts (joined into one label)."""
        return sum(label.parts > 1 for _, label in self.labelled)


@dataclass(frozen=True)
class PackedSample:
    """A sample as the writer takes it: measured (`shape`), its truth objects as JSON
    (`core.truth_objects`; None when they were not wanted), no Python object per object, so that
    it comes back cheaply from the process that built it."""

    element_id: str
    frame: Frame
    request: CropRequest
    label: str
    objects: Counter
    skipped: Counter
    several_parts: int
    shape: ElementShape
    truth: str | None


def pack_samples(mode: Mode, samples: list[Sample], truth: bool = True) -> list[PackedSample]:
    """Samples packed, their objects measured together (`measure_elements`); their truth
    objects as JSON only when wanted (`truth`)."""
    shapes = measure_elements(
        mode,
        [(sample.labelled, (sample.request.width, sample.request.height)) for sample in samples],
    )
    return [
        PackedSample(
            sample.page.id,
            sample.frame,
            sample.request,
            sample.label,
            sample.objects,
            sample.skipped,
            sample.several_parts,
            shape,
            truth_objects(sample.truth) if truth else None,
        )
        for sample, shape in zip(samples, shapes, strict=True)
    ]


def element_crop(page: Page, image_size: int) -> tuple[Frame, CropRequest] | Skip:
    """The oriented crop of a dataset element and the request that fetches it with its longest
    side at most `image_size`; or why the element cannot be a sample (logged when the reason
    alone does not say what is wrong)."""
    defect = page_defect(page)
    if defect is not None:
        reason, warning = defect
        if warning:
            logger.warning(warning)
        return reason
    crop = crop_box(page.polygon, page.image.width, page.image.height)
    if crop is None:
        return Skip.EmptyCrop
    frame = Frame(crop, page.rotation_angle, page.mirrored)
    width, height = fetch_size(frame, image_size)
    if min(width, height) < MIN_IMAGE_SIDE:
        return Skip.TooSmall
    return frame, CropRequest(page.image, crop, width, height)
