"""What the extracted dataset looks like to Ultralytics, gathered element by element in bounded
memory: object sizes per split and class, the densest element, objects nested in others.

Sizes are measured in the pixels the network sees: Ultralytics resizes every image so that its
longest side is `imgsz` (`BaseDataset.load_image`, upscaling too; `LetterBox` in validation), so an
object's size is its size as a fraction of its image's longest side, times `image_size`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain

import numpy as np
import shapely

from worker_yolo_training.core import Label, Mode, simple_rings

# Under these an object is too thin to be learned reliably (a mask pixel is `mask_ratio` image
# pixels, Ultralytics' default 4)
IMAGE_PX_LIMIT = 4.0
MASK_PX_LIMIT = 2.0
DEFAULT_MASK_RATIO = 4
# An object is inside another when this share of its area is
INSIDE_SHARE = 0.90
PERCENTILES = (5, 50, 95)
PENDING_VALUES = 16_384


class Histogram:
    """Counts of positive values in log-spaced bins (1/64 octave: ±1.1 %): percentiles and shares
    in bounded memory (11 kB), whatever the number of values."""

    BINS_PER_OCTAVE = 64
    # Sizes as a fraction of an image's longest side: 2^-20 (under a pixel of a 1M px image) to 4
    LOW_OCTAVE, HIGH_OCTAVE = -20, 2

    def __init__(self) -> None:
        self.counts = np.zeros((self.HIGH_OCTAVE - self.LOW_OCTAVE) * self.BINS_PER_OCTAVE, int)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def add(self, values: np.ndarray) -> None:
        """Count values (0 and below fall into the first bin, too large ones into the last)."""
        with np.errstate(divide="ignore"):
            position = (np.log2(np.asarray(values, float)) - self.LOW_OCTAVE) * self.BINS_PER_OCTAVE
        index = np.clip(np.nan_to_num(position, nan=0, neginf=0), 0, len(self.counts) - 1)
        self.counts += np.bincount(index.astype(int), minlength=len(self.counts))

    def _edge(self, position: float) -> float:
        return 2 ** (self.LOW_OCTAVE + position / self.BINS_PER_OCTAVE)

    def quantile(self, share: float) -> float:
        """The value under which `share` of the values lie (interpolated within its bin)."""
        cumulative = np.cumsum(self.counts)
        wanted = share * cumulative[-1]
        index = int(np.searchsorted(cumulative, wanted))
        before = cumulative[index - 1] if index else 0
        within = (wanted - before) / self.counts[index] if self.counts[index] else 0
        return self._edge(index + within)

    def share_below(self, limit: float) -> float:
        """The share of values under `limit` (interpolated within its bin)."""
        total = self.total
        if not total or limit <= 0:
            return 0.0
        position = (math.log2(limit) - self.LOW_OCTAVE) * self.BINS_PER_OCTAVE
        index = min(max(int(position), 0), len(self.counts))
        below = self.counts[:index].sum()
        if index < len(self.counts):
            below += self.counts[index] * min(max(position - index, 0), 1)
        return float(below / total)


@dataclass
class ObjectSizes:
    """One class's sizes in one split, as fractions of the image's longest side: thickness (the
    short side of the minimum rotated rectangle: a slanted thin line is thin even when its box is
    not), and axis-aligned width and height."""

    thickness: Histogram = field(default_factory=Histogram)
    width: Histogram = field(default_factory=Histogram)
    height: Histogram = field(default_factory=Histogram)
    # values not yet in the histograms: binned in batches, numpy's per-call cost dominates pages
    pending: list[np.ndarray] = field(default_factory=list)
    pending_count: int = 0

    def add(self, thickness: np.ndarray, width: np.ndarray, height: np.ndarray) -> None:
        self.pending.append(np.stack([thickness, width, height]))
        self.pending_count += len(thickness)
        if self.pending_count >= PENDING_VALUES:
            self.flush()

    def flush(self) -> None:
        """Bin the pending values."""
        if self.pending:
            thickness, width, height = np.concatenate(self.pending, axis=1)
            self.thickness.add(thickness)
            self.width.add(width)
            self.height.add(height)
            self.pending, self.pending_count = [], 0

    def figures(self, image_size: int, mask_ratio: int | None) -> dict:
        """Percentiles in image pixels at `image_size` (and mask pixels when given a mask ratio),
        with the share under each limit."""
        self.flush()

        def percentiles(histogram: Histogram, scale: float) -> dict:
            return {
                f"p{p}": round(float(histogram.quantile(p / 100) * scale), 2) for p in PERCENTILES
            }

        figures = {
            "objects": self.thickness.total,
            "thickness_px": percentiles(self.thickness, image_size),
            "width_px": percentiles(self.width, image_size),
            "height_px": percentiles(self.height, image_size),
            "share_under_4_px": round(self.thickness.share_below(IMAGE_PX_LIMIT / image_size), 3),
        }
        if mask_ratio:
            scale = image_size / mask_ratio
            figures["thickness_mask_px"] = percentiles(self.thickness, scale)
            figures["share_under_2_mask_px"] = round(
                self.thickness.share_below(MASK_PX_LIMIT / scale), 3
            )
        return figures


def _polygons(points: np.ndarray, lengths: list[int]) -> np.ndarray:
    """Shapely polygons of consecutive rings, repaired when invalid (a joined multi-part segment
    touches itself along its cuts); trivially simple rings are not tested."""
    sizes = np.array(lengths)
    indices = np.repeat(np.arange(len(sizes)), sizes)
    shapes = shapely.polygons(shapely.linearrings(points, indices=indices))
    tested = np.flatnonzero(~simple_rings(points, np.cumsum(sizes) - sizes, sizes))
    invalid = tested[~shapely.is_valid(shapes[tested])]
    shapes[invalid] = shapely.make_valid(shapes[invalid])
    return shapes


def _short_sides(corners: np.ndarray) -> np.ndarray:
    """The short side of rectangles given as (n, 4, 2) corners, in order."""
    sides = np.diff(corners[:, :3], axis=1)
    return np.hypot(sides[..., 0], sides[..., 1]).min(axis=1)


def _measure(labels: list[Label], mode: Mode, scales: np.ndarray):
    """Thickness, width and height of labels, each scaled by its row of `scales` (x, y), and
    their polygons (segment mode only, for the nesting check)."""
    if mode is Mode.BBox:
        boxes = np.array([label.coordinates for label in labels]).reshape(-1, 2, 2)
        width, height = (boxes[:, 1] * scales).T
        return np.minimum(width, height), width, height, None
    lengths = [len(label.coordinates) // 2 for label in labels]
    points = np.fromiter(chain.from_iterable(label.coordinates for label in labels), float)
    points = points.reshape(-1, 2) * np.repeat(scales, lengths, axis=0)
    if mode is Mode.OBB:
        corners = points.reshape(-1, 4, 2)
        thickness = _short_sides(corners)
        width, height = (corners.max(axis=1) - corners.min(axis=1)).T
        return thickness, width, height, None
    shapes = _polygons(points, lengths)
    rectangles = shapely.minimum_rotated_rectangle(shapes)
    # a rectangle has 5 coordinates; what collapses to a line or a point has no thickness
    full = shapely.get_num_coordinates(rectangles) == 5
    thickness = np.zeros(len(shapes))
    if full.any():
        corners = shapely.get_coordinates(rectangles[full]).reshape(-1, 5, 2)[:, :4]
        thickness[full] = _short_sides(corners)
    minx, miny, maxx, maxy = shapely.bounds(shapes).T
    return thickness, maxx - minx, maxy - miny, shapes


def _pairs_within(elements: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) index pairs of objects of the same element (`elements`, numbered) whose boxes
    meet, from one STRtree for all: each element's boxes are moved 2 units right of the previous
    element's, and label coordinates lie in [0, 1]. Moving rounds, but never turns meeting
    boxes apart (rounding is monotonic): pairs found besides are ruled out by their overlap."""
    shift = 2.0 * elements
    boxes = shapely.box(bounds[:, 0] + shift, bounds[:, 1], bounds[:, 2] + shift, bounds[:, 3])
    boxes[np.isnan(bounds).any(axis=1)] = None  # an empty shape has no box
    return shapely.STRtree(boxes).query(boxes)


def nested_pairs(
    classes: list[str], shapes: np.ndarray, elements: np.ndarray
) -> list[tuple[int, str, str]]:
    """(element, inner class, outer class) for each object that lies inside an object of a class
    of the same element (`elements` numbers each object's element), once per class of container:
    at least `INSIDE_SHARE` of the inner object's area, the outer one being at least as large.
    Boxes rule out most pairs before any geometry."""
    areas = shapely.area(shapes)
    bounds = shapely.bounds(shapes)
    inner, outer = _pairs_within(elements, bounds)
    # Two boxes' overlap bounds their shapes' overlap: neighbours are ruled out without geometry
    low = np.maximum(bounds[inner, :2], bounds[outer, :2])
    high = np.minimum(bounds[inner, 2:], bounds[outer, 2:])
    boxes_common = np.prod(np.clip(high - low, 0, None), axis=1)
    keep = (inner != outer) & (areas[outer] >= areas[inner]) & (areas[inner] > 0)
    keep &= boxes_common >= INSIDE_SHARE * areas[inner]
    if not keep.any():
        return []  # the common page: no geometry to compare
    inner, outer = inner[keep], outer[keep]
    # Wholly covered (the common case) is cheap to tell; only the others need their intersection
    shapely.prepare(shapes)
    inside = shapely.covers(shapes[outer], shapes[inner])
    partly = ~inside
    common = shapely.area(shapely.intersection(shapes[inner[partly]], shapes[outer[partly]]))
    inside[partly] = common >= INSIDE_SHARE * areas[inner[partly]]
    # each inner object counted once per class of container
    pairs = {(int(i), classes[o]) for i, o in zip(inner[inside], outer[inside], strict=True)}
    return [(int(elements[i]), classes[i], outer_class) for i, outer_class in sorted(pairs)]


@dataclass(frozen=True)
class ElementShape:
    """One element's objects as `DatasetShape` counts them: their class names, their sizes as
    fractions of the image's longest side, and the objects inside others ((inner class, outer
    class) → objects). Arrays, not objects: cheap to send from a worker process."""

    classes: tuple[str, ...]
    thickness: np.ndarray
    width: np.ndarray
    height: np.ndarray
    nested: Counter

    @classmethod
    def empty(cls) -> ElementShape:
        return cls((), *np.zeros((3, 0)), Counter())


def measure_elements(
    mode: Mode, elements: list[tuple[list[tuple[str, Label]], tuple[int, int]]]
) -> list[ElementShape]:
    """Each element's shape, from its labelled objects (class name, label) and its image's width
    and height (only their ratio matters). All objects are measured together: shapely and numpy
    cost per call more than per object on pages of a few dozen objects."""
    measured = [index for index, (objects, _) in enumerate(elements) if objects]
    shapes = [ElementShape.empty() for _ in elements]
    if not measured:
        return shapes
    counts = [len(elements[index][0]) for index in measured]
    classes = [name for index in measured for name, _ in elements[index][0]]
    labels = [label for index in measured for _, label in elements[index][0]]
    sizes = np.array([elements[index][1] for index in measured], float)
    scales = np.repeat(sizes / sizes.max(axis=1, keepdims=True), counts, axis=0)
    thickness, widths, heights, polygons = _measure(labels, mode, scales)
    numbers = np.repeat(np.arange(len(measured)), counts)
    nested = [Counter() for _ in measured]
    if polygons is not None:
        for number, inner, outer in nested_pairs(classes, polygons, numbers):
            nested[number][inner, outer] += 1
    ends = np.cumsum(counts)
    for number, (index, start, end) in enumerate(zip(measured, ends - counts, ends, strict=True)):
        shapes[index] = ElementShape(
            tuple(classes[start:end]),
            thickness[start:end],
            widths[start:end],
            heights[start:end],
            nested[number],
        )
    return shapes


class DatasetShape:
    """What derived settings need to know of the extracted dataset, gathered element by element
    (each measured beforehand, `measure_elements`) in bounded memory."""

    def __init__(self, mode: Mode, class_names: list[str]):
        self.mode = mode
        self.class_names = list(class_names)
        #: per split and class, the objects' sizes
        self.sizes: dict[str, dict[str, ObjectSizes]] = {}
        # per split: the largest number of objects on one element, and that element
        self.densest: dict[str, tuple[int, str | None]] = {}
        #: (inner class, outer class) → objects of the first inside one of the second
        self.nested: Counter = Counter()
        self.objects: Counter = Counter()

    def add_element(
        self,
        split: str,
        element_id: str,
        objects: list[tuple[str, Label]],
        image_size: tuple[int, int],
    ) -> None:
        """One written element: its labelled objects (class name, label) and its image's width
        and height (`measure_elements` measures it alone)."""
        (shape,) = measure_elements(self.mode, [(objects, image_size)])
        self.add_shape(split, element_id, shape)

    def add_shape(self, split: str, element_id: str, shape: ElementShape) -> None:
        """One written element, measured."""
        if len(shape.classes) > self.densest.get(split, (0, None))[0]:
            self.densest[split] = (len(shape.classes), element_id)
        if not shape.classes:
            return
        self.objects.update(shape.classes)
        self.nested.update(shape.nested)
        names = np.array(shape.classes)
        sizes = self.sizes.setdefault(split, {})
        for name in dict.fromkeys(shape.classes):
            chosen = names == name
            sizes.setdefault(name, ObjectSizes()).add(
                shape.thickness[chosen], shape.width[chosen], shape.height[chosen]
            )

    def figures(self, image_size: int, mask_ratio: int = DEFAULT_MASK_RATIO) -> dict:
        """Per split and class, the size figures for `summary.json`; the densest element of each
        split; the nested classes."""
        ratio = mask_ratio if self.mode is Mode.Segment else None
        return {
            "sizes": {
                split: {
                    name: sizes[name].figures(image_size, ratio)
                    for name in self.class_names
                    if name in sizes
                }
                for split, sizes in self.sizes.items()
            },
            "densest_element": {
                split: {"objects": count, "element": element}
                for split, (count, element) in self.densest.items()
            },
            "nested": [
                {"inner": inner, "outer": outer, "objects": count}
                for (inner, outer), count in sorted(self.nested.items())
            ],
        }
