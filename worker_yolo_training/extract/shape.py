"""What the extracted dataset looks like to Ultralytics, gathered element by element in bounded
memory: object sizes per split and class, the densest element, objects nested in others.

Sizes are measured in the pixels the network sees: Ultralytics resizes every image so that its
longest side is `imgsz` (`BaseDataset.load_image`, upscaling too; `LetterBox` in validation), so an
object's size is its size as a fraction of its image's longest side, times `image_size`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import chain

import numpy as np
import shapely

from worker_yolo_training.core import Label, Mode
from worker_yolo_training.extract.histogram import Histogram
from worker_yolo_training.extract.outlines import (
    Outlines,
    geos_thickness,
    short_sides,
    simple_thickness,
)

# Under these an object is too thin to be learned reliably (a mask pixel is `mask_ratio` image
# pixels, Ultralytics' default 4)
IMAGE_PX_LIMIT = 4.0
MASK_PX_LIMIT = 2.0
DEFAULT_MASK_RATIO = 4
# An object is inside another when this share of its area is
INSIDE_SHARE = 0.90
PERCENTILES = (5, 50, 95)
PENDING_VALUES = 16_384


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


def _measure(labels: list[Label], mode: Mode, scales: np.ndarray):
    """Thickness, width and height of labels, each scaled by its row of `scales` (x, y), and
    their outlines (segment mode only, for the nesting check)."""
    if mode is Mode.BBox:
        boxes = np.array([label.coordinates for label in labels]).reshape(-1, 2, 2)
        width, height = (boxes[:, 1] * scales).T
        return np.minimum(width, height), width, height, None
    lengths = [len(label.coordinates) // 2 for label in labels]
    points = np.fromiter(chain.from_iterable(label.coordinates for label in labels), float)
    points = points.reshape(-1, 2) * np.repeat(scales, lengths, axis=0)
    if mode is Mode.OBB:
        corners = points.reshape(-1, 4, 2)
        thickness = short_sides(corners)
        width, height = (corners.max(axis=1) - corners.min(axis=1)).T
        return thickness, width, height, None
    outlines = Outlines(points, lengths)
    thickness = simple_thickness(outlines)
    measured = np.flatnonzero(np.isnan(thickness))
    thickness[measured] = geos_thickness(outlines.shapes_of(measured))
    minx, miny, maxx, maxy = outlines.bounds.T
    return thickness, maxx - minx, maxy - miny, outlines


def _pairs_within(elements: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) index pairs of objects of the same element (`elements`, numbered) whose boxes
    meet, from one STRtree for all: each element's boxes are moved 2 units right of the previous
    element's, and label coordinates lie in [0, 1]. Moving rounds, but never turns meeting
    boxes apart (rounding is monotonic): pairs found besides are ruled out by their overlap."""
    shift = 2.0 * elements
    boxes = shapely.box(bounds[:, 0] + shift, bounds[:, 1], bounds[:, 2] + shift, bounds[:, 3])
    boxes[np.isnan(bounds).any(axis=1)] = None  # an empty shape has no box
    return shapely.STRtree(boxes).query(boxes)


def _candidates(
    inner: np.ndarray,
    outer: np.ndarray,
    smallest: np.ndarray,
    largest: np.ndarray,
    common: np.ndarray,
) -> np.ndarray:
    """Which (inner, outer) pairs may be nested, each object's area being between `smallest`
    and `largest`: the outer object at least as large, and the overlap of their boxes
    (`common`) at least `INSIDE_SHARE` of the inner one's area. Exact when both are its area."""
    keep = (inner != outer) & (largest[outer] >= smallest[inner]) & (largest[inner] > 0)
    return keep & (common >= INSIDE_SHARE * smallest[inner])


def nested_pairs(
    classes: list[str], outlines: Outlines, elements: np.ndarray
) -> list[tuple[int, str, str]]:
    """(element, inner class, outer class) for each object that lies inside an object of a class
    of the same element (`elements` numbers each object's element), once per class of container:
    at least `INSIDE_SHARE` of the inner object's area, the outer one being at least as large.
    Boxes and areas rule out most pairs before any geometry: areas within their slack first,
    then GEOS's for the pairs left."""
    areas, slack = outlines.areas()
    bounds = outlines.bounds
    inner, outer = _pairs_within(elements, bounds)
    # Two boxes' overlap bounds their shapes' overlap: neighbours are ruled out without geometry
    low = np.maximum(bounds[inner, :2], bounds[outer, :2])
    high = np.minimum(bounds[inner, 2:], bounds[outer, 2:])
    boxes_common = np.prod(np.clip(high - low, 0, None), axis=1)
    keep = _candidates(inner, outer, areas - slack, areas + slack, boxes_common)
    if not keep.any():
        return []  # the common page: no geometry to compare
    inner, outer, boxes_common = inner[keep], outer[keep], boxes_common[keep]
    involved = np.union1d(inner, outer)
    shapes = np.full(len(outlines), None, dtype=object)
    shapes[involved] = outlines.shapes_of(involved)
    areas[involved] = shapely.area(shapes[involved])
    keep = _candidates(inner, outer, areas, areas, boxes_common)
    if not keep.any():
        return []
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
    thickness, widths, heights, outlines = _measure(labels, mode, scales)
    numbers = np.repeat(np.arange(len(measured)), counts)
    nested = [Counter() for _ in measured]
    if outlines is not None:
        for number, inner, outer in nested_pairs(classes, outlines, numbers):
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
        # per split and class, the objects' sizes (`sizes`)
        self._sizes: dict[str, dict[str, ObjectSizes]] = {}
        # per split, elements not yet in `_sizes`: sorted by class in batches, numpy's per-call
        # cost dominates elements
        self.pending: dict[str, list[ElementShape]] = {}
        self.pending_count = 0
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
        if shape.nested:
            self.nested.update(shape.nested)
        self.pending.setdefault(split, []).append(shape)
        self.pending_count += len(shape.classes)
        if self.pending_count >= PENDING_VALUES:
            self.flush()

    def flush(self) -> None:
        """Sort the pending elements' sizes by class."""
        for split, shapes in self.pending.items():
            names = list(dict.fromkeys(chain.from_iterable(shape.classes for shape in shapes)))
            numbers = {name: number for number, name in enumerate(names)}
            classes = chain.from_iterable(shape.classes for shape in shapes)
            codes = np.fromiter(map(numbers.__getitem__, classes), np.intp)
            thickness = np.concatenate([shape.thickness for shape in shapes])
            width = np.concatenate([shape.width for shape in shapes])
            height = np.concatenate([shape.height for shape in shapes])
            sizes = self._sizes.setdefault(split, {})
            for number, name in enumerate(names):
                chosen = codes == number
                sizes.setdefault(name, ObjectSizes()).add(
                    thickness[chosen], width[chosen], height[chosen]
                )
        self.pending, self.pending_count = {}, 0

    @property
    def sizes(self) -> dict[str, dict[str, ObjectSizes]]:
        """Per split and class, the objects' sizes."""
        self.flush()
        return self._sizes

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
