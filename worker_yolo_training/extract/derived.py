"""Training settings read from the dataset: what the extracted objects tell about Ultralytics'
photograph-made defaults, as records that say the value, the evidence and how to override it.

`DatasetShape` (shape.py) is fed each written element's labels during extraction;
`derive` turns it into Ultralytics arguments for training and evaluation, `advanced.training_kwargs`
always winning over a derived value, and warns about objects too thin to be learned.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker_yolo_training.config import IMAGE_SIZE_STRIDE
from worker_yolo_training.core import Mode, markdown_table, printable
from worker_yolo_training.extract.shape import (
    DEFAULT_MASK_RATIO,
    IMAGE_PX_LIMIT,
    INSIDE_SHARE,
    MASK_PX_LIMIT,
    PERCENTILES,
    DatasetShape,
)

logger = logging.getLogger(__name__)

# Ultralytics' default `max_det` (cfg/default.yaml): at most this many predictions per image
DEFAULT_MAX_DET = 300
MAX_DET_STEP = 100
# Warn when this share of a class is under a limit; suggest what brings this share above it
THIN_SHARE = 0.10
TARGET_SHARE = 0.90

MAX_SUGGESTED_IMAGE_SIZE = 2048


@dataclass(frozen=True)
class Setting:
    """One derived Ultralytics argument: the value used, why, and how to set another one."""

    name: str
    value: Any
    evidence: str
    # the value read from the data, when `advanced.training_kwargs` replaced it
    derived: Any = None
    overridden: bool = False

    @property
    def override(self) -> str:
        return f"`advanced.training_kwargs` {self.name}: {_yaml(self.value)}"

    def as_dict(self) -> dict:
        record = {"name": self.name, "value": self.value, "evidence": self.evidence}
        if self.overridden:
            record["derived"] = self.derived
        return {**record, "override": self.override}

    def __str__(self) -> str:
        source = f" (derived {_yaml(self.derived)}: overridden)" if self.overridden else ""
        return (
            f"{self.name}: {_yaml(self.value)}{source}. {self.evidence} Override: {self.override}"
        )


def _yaml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def max_det_setting(shape: DatasetShape) -> Setting:
    """Ultralytics keeps at most `max_det` predictions per image: raise it to the largest number
    of objects on one element, rounded up to the next hundred, when that is above its default.
    None in classify mode: no object is predicted."""
    if shape.mode is Mode.Classify:
        return None
    count, element = max(shape.densest.values(), default=(0, None))
    if count <= DEFAULT_MAX_DET:
        evidence = (
            f"At most {count} objects on one element ({printable(element)}): "
            f"Ultralytics' default {DEFAULT_MAX_DET} keeps them all."
        )
        return Setting("max_det", DEFAULT_MAX_DET, evidence)
    value = math.ceil(count / MAX_DET_STEP) * MAX_DET_STEP
    evidence = (
        f"element {printable(element)} holds {count} objects, more than Ultralytics' default "
        f"{DEFAULT_MAX_DET} predictions per image: raised to the next hundred."
    )
    return Setting("max_det", value, evidence)


def overlap_mask_setting(shape: DatasetShape) -> Setting | None:
    """Segment mode: `overlap_mask: true` draws all masks of an image into one, smaller objects
    over larger ones (ultralytics/data/utils.py `polygons2masks_overlap`), and the loss takes as
    an object's mask the pixels left with its index (utils/loss.py
    `v8SegmentationLoss.calculate_segmentation_loss`, `masks[i] == mask_idx + 1`; the same in
    `SegmentationValidator`): a container is learned and evaluated with holes where its contents
    are. Off as soon as an object lies inside another."""
    if shape.mode is not Mode.Segment:
        return None
    if not shape.nested:
        evidence = "No object lies inside another: one mask image per page is exact."
        return Setting("overlap_mask", True, evidence)
    pairs = ", ".join(
        f"{count} of {shape.objects[inner]} {inner} inside {outer}"
        for (inner, outer), count in sorted(shape.nested.items())
    )
    evidence = (
        f"Objects lie inside others ({pairs}; inside: {INSIDE_SHARE:.0%} of the inner area): "
        "with overlapping masks the containers would be learned with holes."
    )
    return Setting("overlap_mask", False, evidence)


def thin_object_warnings(
    shape: DatasetShape, image_size: int, mask_ratio: int, split: str = "train"
) -> list[str]:
    """A warning per class of `split` of which a sizeable share is too thin to be learned at
    `image_size` (under 4 image pixels, or in segment mode 2 mask pixels), with the image_size
    (or mask_ratio) that would bring most of them above the limit. Nothing is changed."""
    warnings = []
    for name, sizes in shape.sizes.get(split, {}).items():
        sizes.flush()
        thickness = sizes.thickness
        pixels = image_size  # pixels per unit of the histogram (a fraction of the longest side)
        limits = [(IMAGE_PX_LIMIT, "image pixels", pixels)]
        if shape.mode is Mode.Segment:
            limits.append(
                (MASK_PX_LIMIT, f"mask pixels (mask_ratio {mask_ratio})", pixels / mask_ratio)
            )
        for limit, unit, scale in limits:
            share = thickness.share_below(limit / scale)
            if share < THIN_SHARE:
                continue
            low = thickness.quantile(1 - TARGET_SHARE)
            p5, p50, p95 = (thickness.quantile(p / 100) * scale for p in PERCENTILES)
            needed = math.ceil(image_size * limit / (low * scale) / IMAGE_SIZE_STRIDE)
            suggested = min(needed * IMAGE_SIZE_STRIDE, MAX_SUGGESTED_IMAGE_SIZE)
            advice = f"`image_size` {suggested} would bring {TARGET_SHARE:.0%} of them above it"
            if needed * IMAGE_SIZE_STRIDE > MAX_SUGGESTED_IMAGE_SIZE:
                advice = (
                    f"even `image_size` {MAX_SUGGESTED_IMAGE_SIZE} would leave more than "
                    f"{1 - TARGET_SHARE:.0%} of them under it"
                )
            ratio = math.floor(low * pixels / MASK_PX_LIMIT)
            if scale != pixels and 1 <= ratio < mask_ratio:
                advice += (
                    f", or `advanced.training_kwargs` mask_ratio: {ratio} (YOLOv8 and YOLO11 "
                    "only: YOLO26 computes its mask loss at a quarter of image_size)"
                )
            warnings.append(
                f"{share:.0%} of the {sizes.thickness.total} {name} objects of the {split} split "
                f"are under {limit:g} {unit} thick at image_size {image_size} (thickness: 5th "
                f"percentile {p5:.1f}, median {p50:.1f}, 95th percentile {p95:.1f}; thickness is "
                f"the short side of the minimum rotated rectangle): {advice}. Nothing is changed."
            )
    return warnings


@dataclass(frozen=True)
class Derivation:
    """Ultralytics arguments for `model.train` and `model.val`, the settings behind them and the
    warnings, ready for the log, `summary.json` and the model version's description."""

    train: dict
    val: dict
    settings: list[Setting]
    warnings: list[str]
    # the object sizes, densest elements and nesting behind them, for summary.json
    figures: dict

    def as_dict(self) -> dict:
        """For summary.json: the settings as records, the warnings and the figures."""
        settings = [setting.as_dict() for setting in self.settings]
        return {"settings": settings, "warnings": self.warnings, **self.figures}

    @property
    def max_detection(self) -> int | None:
        """The evaluation's `max_det` (published as `max_detection`); None in classify mode,
        where nothing is detected."""
        return self.val.get("max_det")

    @property
    def largest_element_objects(self) -> int:
        """The most objects on one element of any split."""
        densest = self.figures["densest_element"].values()
        return max((item["objects"] for item in densest), default=0)


def derive(shape: DatasetShape, image_size: int, training_kwargs: Mapping) -> Derivation:
    """The derived settings, `advanced.training_kwargs` winning over each: `train` holds the
    training arguments (the user's training_kwargs included), `val` those evaluation takes."""
    mask_ratio = int(training_kwargs.get("mask_ratio", DEFAULT_MASK_RATIO))
    settings = []
    for setting in (max_det_setting(shape), overlap_mask_setting(shape)):
        if setting is None:
            continue
        if setting.name in training_kwargs:
            setting = Setting(
                setting.name,
                training_kwargs[setting.name],
                setting.evidence,
                derived=setting.value,
                overridden=True,
            )
        settings.append(setting)
    derived = {setting.name: setting.value for setting in settings}
    return Derivation(
        train={**derived, **training_kwargs},
        val=derived,
        settings=settings,
        warnings=thin_object_warnings(shape, image_size, mask_ratio),
        figures=shape.figures(image_size, mask_ratio),
    )


def sizes_table(figures: dict) -> str:
    """The object sizes of `Derivation.figures` as a Markdown table for the extraction summary:
    one row per split and class, thickness percentiles and the shares under the limits."""
    segment = any(
        "thickness_mask_px" in sizes
        for split in figures["sizes"].values()
        for sizes in split.values()
    )
    header = ["split", "class", "objects", "thickness px (5/50/95 %)", "under 4 px"]
    header += ["thickness mask px (5/50/95 %)", "under 2 mask px"] if segment else []
    rows = []
    for split, classes in figures["sizes"].items():
        for name, sizes in classes.items():
            row = [split, name, sizes["objects"], _percentiles(sizes["thickness_px"])]
            row.append(f"{sizes['share_under_4_px']:.1%}")
            if segment:
                row.append(_percentiles(sizes["thickness_mask_px"]))
                row.append(f"{sizes['share_under_2_mask_px']:.1%}")
            rows.append(row)
    return markdown_table(header, rows)


def _percentiles(values: dict) -> str:
    return " / ".join(f"{value:.1f}" for value in values.values())


def log_derivation(derivation: Derivation) -> None:
    """Each derived setting with its evidence and override, then each warning."""
    for setting in derivation.settings:
        logger.info(f"Derived setting {setting}")
    for warning in derivation.warnings:
        logger.warning(warning)


def derivation_from_summary(record: Mapping, training_kwargs: Mapping) -> Derivation:
    """The derivation a previous run wrote in summary.json (`--resume`)."""
    settings = [
        Setting(
            item["name"], item["value"], item["evidence"], item.get("derived"), "derived" in item
        )
        for item in record["settings"]
    ]
    derived = {setting.name: setting.value for setting in settings}
    figures = {key: value for key, value in record.items() if key not in ("settings", "warnings")}
    return Derivation(
        train={**derived, **training_kwargs},
        val=derived,
        settings=settings,
        warnings=list(record["warnings"]),
        figures=figures,
    )
