"""Geometry as pure functions: export polygons in, YOLO label coordinates out.

Frames: export polygons are in full-image pixels. A dataset element becomes an image that is the
crop of its bounding box, mirrored then rotated clockwise like Arkindex shows it (base-worker's
`Element.open_image`, which uses Pillow's `rotate(-angle, expand=True)`). Labels are expressed in
that oriented crop, normalised to [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

import numpy as np
import shapely
from shapely import affinity, make_valid
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from worker_yolo_training.core.mode import Mode


class Skip(StrEnum):
    """Why a dataset element or an object produced nothing. Every skip is counted."""

    NoImage = "element without image"
    NoPolygon = "element without polygon"
    BadImageSize = "element image without a valid width and height"
    ElementMalformed = "element polygon malformed (not a list of [x, y] finite numbers)"
    EmptyCrop = "element crop outside its image"
    TooSmall = "element crop under 10 px (Ultralytics ignores such images)"
    ImageFailed = "image download failed"
    SameSplit = "element already in this split (from another set)"
    OtherType = "type not requested"
    WorkerRunFiltered = "worker run not selected"
    OtherImage = "object on another image"
    OutsideCrop = "object outside the crop"
    Degenerate = "degenerate geometry (no area)"
    Malformed = "malformed polygon (not a list of [x, y] numbers)"
    # classify mode: an element without one class to learn
    Unclassified = "element without a classification of class_names (from the selected sources)"
    Ambiguous = "element with tied classifications of different classes"


@dataclass(frozen=True)
class Box:
    """An axis-aligned pixel rectangle, integer as IIIF regions are."""

    x: int
    y: int
    width: int
    height: int


def crop_box(polygon: list, image_width: int, image_height: int) -> Box | None:
    """The integer bounding box of a polygon, clamped to its image; None when nothing is left.

    Fractional bounds grow outwards so that the crop holds the whole element.
    """
    xs = [point[0] for point in polygon]
    ys = [point[1] for point in polygon]
    left = max(0, math.floor(min(xs)))
    top = max(0, math.floor(min(ys)))
    right = min(image_width, math.ceil(max(xs)))
    bottom = min(image_height, math.ceil(max(ys)))
    if right <= left or bottom <= top:
        return None
    return Box(left, top, right - left, bottom - top)


@dataclass(frozen=True)
class Frame:
    """The oriented crop of a dataset element: crop, then mirror, then rotate clockwise."""

    crop: Box
    rotation_angle: int = 0
    mirrored: bool = False

    @cached_property
    def size(self) -> tuple[int, int]:
        """Width and height of the oriented image, computed exactly as Pillow's expand does."""
        if self.rotation_angle % 180 == 0:
            return self.crop.width, self.crop.height
        if self.rotation_angle % 90 == 0:
            return self.crop.height, self.crop.width
        corners = affinity.rotate(
            box(0, 0, self.crop.width, self.crop.height), self.rotation_angle, origin="center"
        )
        minx, miny, maxx, maxy = corners.bounds
        return math.ceil(maxx) - math.floor(minx), math.ceil(maxy) - math.floor(miny)

    @cached_property
    def matrix(self) -> tuple[float, float, float, float, float, float]:
        """The affine map from full-image pixels to this frame: `a b d e xoff yoff`, as shapely's
        `affine_transform` takes it. Exact for multiples of 90°."""
        quarter = {0: (1, 0), 90: (0, 1), 180: (-1, 0), 270: (0, -1)}
        angle = self.rotation_angle % 360
        cos, sin = quarter.get(angle) or (
            math.cos(math.radians(angle)),
            math.sin(math.radians(angle)),
        )
        flip = -1 if self.mirrored else 1
        # Around the crop's centre: mirror x, rotate clockwise (y points down), then re-centre
        a, b, d, e = cos * flip, -sin, sin * flip, cos
        cx, cy = self.crop.x + self.crop.width / 2, self.crop.y + self.crop.height / 2
        width, height = self.size
        return a, b, d, e, width / 2 - a * cx - b * cy, height / 2 - d * cx - e * cy

    def orient_points(self, points: list) -> list[tuple[float, float]]:
        """Full-image points in this frame's pixel coordinates."""
        a, b, d, e, xoff, yoff = self.matrix
        return [(a * x + b * y + xoff, d * x + e * y + yoff) for x, y in points]

    def orient(self, geometry: BaseGeometry) -> BaseGeometry:
        """A full-image geometry in this frame's pixel coordinates."""
        return affinity.affine_transform(geometry, self.matrix)


def polygon_parts(geometry: BaseGeometry) -> list[Polygon]:
    """The parts of a geometry that have an area, largest first."""
    if isinstance(geometry, Polygon):
        parts = [geometry]
    elif hasattr(geometry, "geoms"):
        parts = [part for sub in geometry.geoms for part in polygon_parts(sub)]
    else:
        parts = []
    return sorted((part for part in parts if part.area > 0), key=lambda p: p.area, reverse=True)


@dataclass(frozen=True, slots=True)
class Label:
    """One object of one image: normalised coordinates, and how many parts its geometry had (a
    self-intersecting polygon repaired, or a shape the crop edge cuts: several, all in the label).
    Slots: one per object, made faster."""

    coordinates: tuple[float, ...]
    parts: int = 1


def object_label(points: list, frame: Frame, mode: Mode) -> Label | Skip:
    """One object's label; see `object_labels`."""
    return object_labels([points], frame, mode)[0]


def object_labels(polygons: list[list], frame: Frame, mode: Mode) -> list[Label | Skip]:
    """Clip objects to their frame and turn them into YOLO coordinates for the mode.

    An object whose geometry has several parts (a self-intersecting polygon, or one the crop edge
    cuts in two) stays one whole object, in every mode: `bbox` is the box of all parts, `obb` their
    minimum rotated rectangle, `segment` one polygon joining the parts as Ultralytics joins the
    parts of a COCO object, so that the mask it rasterises covers every part.
    """
    return oriented_labels(polygons, frame, mode)[0]


def oriented_labels(
    polygons: list[list], frame: Frame, mode: Mode
) -> tuple[list[Label | Skip], list[list | None]]:
    """Each object's label (see `object_labels`), and its points in the frame (`orient_points`;
    None when they are not a list of [x, y] numbers)."""
    return pages_labels([(polygons, frame)], mode)[0]


def pages_labels(
    pages: list[tuple[list[list], Frame]], mode: Mode
) -> list[tuple[list[Label | Skip], list[list | None]]]:
    """`oriented_labels` of the objects of several pages, each in its frame.

    The objects of all the pages whose objects are well formed go through numpy and shapely
    together: per-call overhead dominates small polygons, and pages of a few dozen objects. The
    common object, a valid polygon inside its crop, gets its label there with the same
    arithmetic as `_label`; any other goes through `_label`. A page with an object that is not a
    list of [x, y] finite numbers goes one object at a time.
    """
    results: list = [None] * len(pages)
    together = []  # (page index, its points in its frame)
    for index, (polygons, frame) in enumerate(pages):
        points = _page_points(polygons, frame)
        if points is not None:
            together.append((index, points))
        elif not polygons:
            results[index] = [], []
        else:
            results[index] = _one_by_one(polygons, frame, mode)
    if together:
        chosen = [pages[index] for index, _ in together]
        labelled = _pages_labels(
            np.concatenate([points for _, points in together]),
            [[len(polygon) for polygon in polygons] for polygons, _ in chosen],
            [frame for _, frame in chosen],
            mode,
        )
        for (index, _), result in zip(together, labelled, strict=True):
            results[index] = result
    return results


def _one_by_one(
    polygons: list[list], frame: Frame, mode: Mode
) -> tuple[list[Label | Skip], list[list | None]]:
    oriented = [_oriented(points, frame) for points in polygons]
    shapes = _polygons(oriented)
    valid = shapely.is_valid(shapes)
    areas = shapely.area(shapes)
    labels = [
        _label(*arguments, frame, mode)
        for arguments in zip(oriented, shapes, valid, areas, strict=True)
    ]
    return labels, oriented


def _page_points(polygons: list[list], frame: Frame) -> np.ndarray | None:
    """All points of a page's objects in the frame, one (x, y) row each; None unless each object
    has 3 points or more, each a pair of finite numbers (as `_oriented` reads them)."""
    if not polygons or not all(type(points) is list and len(points) > 2 for points in polygons):
        return None
    try:
        # Only floats, integers and booleans make a numeric array: strings or None do not
        points = np.array([point for polygon in polygons for point in polygon])
    except (ValueError, TypeError):  # points of different lengths
        return None
    if points.dtype.kind not in "fi" or points.ndim != 2 or points.shape[1] != 2:
        return None
    if points.dtype.kind == "i" and np.abs(points).max() >= 2**53:
        return None  # integers that a float cannot hold exactly: Python's arithmetic differs
    a, b, d, e, xoff, yoff = frame.matrix
    x, y = points.astype(float).T
    # `orient_points` term by term, in its order, so that the floats are the same; an overflow
    # gives infinity silently, as in Python, and makes the page go through `_oriented`
    with np.errstate(all="ignore"):
        oriented = np.stack([a * x + b * y + xoff, d * x + e * y + yoff], axis=1)
    return oriented if np.isfinite(oriented).all() else None


def _pages_labels(
    points: np.ndarray, lengths: list[list[int]], frames: list[Frame], mode: Mode
) -> list[tuple[list[Label | Skip], list[list]]]:
    """`pages_labels` of pages whose objects' points are all well formed: `points` in their
    frames, page after page; `lengths`, each page's objects' numbers of points. Shapely builds
    and tests only the objects that are not trivially simple (`simple_rings`) or not inside their
    frame, and in obb mode those whose rectangle it computes. Each value is computed as for its
    page alone (each frame's width and height repeated per object and per point)."""
    counts = [len(page) for page in lengths]
    sizes = np.array([length for page in lengths for length in page], dtype=int)
    starts = np.cumsum(sizes) - sizes
    ends = starts + sizes
    page_of = np.repeat(np.arange(len(frames)), counts)
    frame_sizes = np.array([frame.size for frame in frames], dtype=float)[page_of]  # per object
    point_sizes = np.repeat(frame_sizes, sizes, axis=0)
    x, y = points.T
    width, height = point_sizes.T
    in_frame = (x >= 0) & (x <= width) & (y >= 0) & (y <= height)
    inside = np.logical_and.reduceat(in_frame, starts)
    # a trivially simple polygon is valid and of positive area: `inside & valid & area > 0`
    common = inside & simple_rings(points, starts, sizes)
    shaped = np.arange(len(sizes)) if mode is Mode.OBB else np.flatnonzero(~common)
    shapes = np.full(len(sizes), None, dtype=object)
    valid = np.ones(len(sizes), bool)
    areas = np.ones(len(sizes))
    if shaped.size:
        ring_points = np.concatenate([points[starts[i] : ends[i]] for i in shaped.tolist()])
        indices = np.repeat(np.arange(shaped.size), sizes[shaped])
        shapes[shaped] = shapely.polygons(shapely.linearrings(ring_points, indices=indices))
        valid[shaped] = shapely.is_valid(shapes[shaped])
        areas[shaped] = shapely.area(shapes[shaped])
        common[shaped] &= valid[shaped] & (areas[shaped] > 0)
    # `_normalise`: the clamp only turns -0.0 into 0.0 inside the frame (0.0 + -0.0 is 0.0)
    scaled = np.clip(points / point_sizes, 0.0, 1.0) + 0.0
    # numpy to Python once: slicing Python lists per object is cheaper
    spans = list(zip(starts.tolist(), ends.tolist(), strict=True))
    if mode is Mode.Segment:
        # a closing point repeating the first one is not written
        closed = (points[starts] == points[ends - 1]).all(axis=1).tolist()
        flat = scaled.ravel().tolist()
        values = [
            flat[2 * start : 2 * (end - last)]
            for (start, end), last in zip(spans, closed, strict=True)
        ]
    elif mode is Mode.BBox:
        low = np.stack([np.minimum.reduceat(x, starts), np.minimum.reduceat(y, starts)], 1)
        high = np.stack([np.maximum.reduceat(x, starts), np.maximum.reduceat(y, starts)], 1)
        boxes = np.concatenate([(low + high) / 2, high - low], axis=1)
        boxes /= np.tile(frame_sizes, 2)
        values = (np.clip(boxes, 0.0, 1.0) + 0.0).tolist()
    else:
        values = [None] * len(sizes)
        rectangles = shapely.minimum_rotated_rectangle(shapes[common])
        full = shapely.get_num_coordinates(rectangles) == 5
        corners = shapely.get_coordinates(rectangles[full]).reshape(-1, 5, 2)[:, :4]
        drawn = np.flatnonzero(common)[full]
        corners = np.clip(corners / frame_sizes[drawn, None], 0.0, 1.0) + 0.0
        for index, rectangle in zip(drawn, corners.tolist(), strict=True):
            values[index] = [value for corner in rectangle for value in corner]
        common[np.flatnonzero(common)[~full]] = False
    # (x, y) tuples from one flat list: `tolist` of an (n, 2) array makes a list per point
    coordinates = points.ravel().tolist()
    rows = list(zip(coordinates[0::2], coordinates[1::2], strict=True))
    oriented = [rows[start:end] for start, end in spans]
    object_frames = [frames[page] for page in page_of.tolist()]
    labels = [
        Label(tuple(value))
        if is_common
        else _label(object_points, shape, is_valid, area, frame, mode)
        for value, is_common, object_points, shape, is_valid, area, frame in zip(
            values, common.tolist(), oriented, shapes, valid.tolist(), areas.tolist(),
            object_frames, strict=True,
        )
    ]  # fmt: skip
    ends_of_pages = np.cumsum(counts).tolist()
    return [
        (labels[end - count : end], oriented[end - count : end])
        for count, end in zip(counts, ends_of_pages, strict=True)
    ]


# A corner turns clearly when the sine of its angle is above this: far above rounding errors
SIMPLE_SINE = 1e-9
# each corner's next one, in triangles and quadrilaterals
_FOLLOWING = {3: [1, 2, 0], 4: [1, 2, 3, 0]}


def simple_rings(points: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Which rings of consecutive (x, y) rows are trivially simple: a triangle or a convex
    quadrilateral (a closing point repeating the first one aside) whose corners all turn the
    same way, clearly. Such a polygon is valid and has an area: no GEOS call needed to tell."""
    closed = (points[starts] == points[starts + lengths - 1]).all(axis=1)
    corners = lengths - closed
    simple = np.zeros(len(starts), bool)
    for count, following in _FOLLOWING.items():
        chosen = np.flatnonzero(corners == count)
        if not chosen.size:
            continue
        ring = points[starts[chosen, None] + np.arange(count)]
        edges = ring[:, following] - ring
        after = edges[:, following]
        with np.errstate(all="ignore"):  # huge coordinates overflow: not simple, then
            cross = edges[..., 0] * after[..., 1] - edges[..., 1] * after[..., 0]
            norms = (edges * edges).sum(axis=2)
            clear = cross * cross > SIMPLE_SINE**2 * norms * norms[:, following]
        same_way = (cross > 0).all(axis=1) | (cross < 0).all(axis=1)
        simple[chosen] = clear.all(axis=1) & same_way
    return simple


def _oriented(points: list, frame: Frame) -> list[tuple[float, float]] | None:
    """Points in the frame; [] when too few for an area; None when not a list of numbers."""
    if not isinstance(points, list):
        return None
    if len(points) < 3:
        return []
    try:
        oriented = frame.orient_points(points)
    except (TypeError, ValueError):
        return None
    return oriented if all(map(math.isfinite, (v for xy in oriented for v in xy))) else None


def _polygons(rings: list[list | None]) -> np.ndarray:
    shapes = np.full(len(rings), Polygon(), dtype=object)
    filled = [index for index, ring in enumerate(rings) if ring]
    if filled:
        coordinates = np.array([xy for index in filled for xy in rings[index]], dtype=float)
        ring_index = np.repeat(np.arange(len(filled)), [len(rings[index]) for index in filled])
        shapes[filled] = shapely.polygons(shapely.linearrings(coordinates, indices=ring_index))
    return shapes


def _label(
    oriented: list | None, shape: Polygon, valid: bool, area: float, frame: Frame, mode: Mode
) -> Label | Skip:
    if oriented is None:
        return Skip.Malformed
    width, height = frame.size
    if valid and _inside(oriented, width, height):
        # The common case, a valid polygon inside the crop: nothing to repair nor clip
        if area <= 0:
            return Skip.Degenerate
        if mode is Mode.Segment:
            closed = oriented[0] == oriented[-1]
            return Label(_normalise(oriented[:-1] if closed else oriented, width, height))
        clipped = [shape]
    else:
        shape = make_valid(shape)
        if not polygon_parts(shape):
            return Skip.Degenerate
        clipped = polygon_parts(shape.intersection(box(0, 0, width, height)))
        if not clipped:
            return Skip.OutsideCrop
    whole = clipped[0] if len(clipped) == 1 else MultiPolygon(clipped)
    if mode is Mode.Segment:
        points = _joined(clipped)
    elif mode is Mode.BBox:
        minx, miny, maxx, maxy = whole.bounds
        points = [((minx + maxx) / 2, (miny + maxy) / 2), (maxx - minx, maxy - miny)]
    else:
        points = list(whole.minimum_rotated_rectangle.exterior.coords)[:-1]
    return Label(_normalise(points, width, height), parts=len(clipped))


def _joined(parts: list[Polygon]) -> list[tuple[float, float]]:
    """One ring through every part: Ultralytics' own joining of the parts of a COCO object (each
    part entered and left at its point closest to the next one, by a zero-width cut), so that
    `cv2.fillPoly` fills every part. The outer rings only: holes are not kept in any mode."""
    rings = [list(part.exterior.coords)[:-1] for part in parts]
    if len(rings) == 1:
        return rings[0]
    # Imported only when an object has several parts: importing Ultralytics takes over a second
    from ultralytics.data.converter import merge_multi_segment

    return [tuple(point) for piece in merge_multi_segment(rings) for point in piece.tolist()]


def _inside(points: list[tuple[float, float]], width: int, height: int) -> bool:
    return all(0 <= x <= width and 0 <= y <= height for x, y in points)


def _normalise(points: list[tuple[float, float]], width: int, height: int) -> tuple[float, ...]:
    # Clamping only absorbs float noise and the corners of a rotated rectangle around a shape
    # that touches the border; clipped shapes are inside the frame already.
    return tuple(min(1.0, max(0.0, value)) for x, y in points for value in (x / width, y / height))


def label_line(class_index: int, label: Label) -> str:
    """A YOLO label line: class index then coordinates with 6 decimals (sub-pixel up to 10^6 px)."""
    # One %-format for the line: the same text as `f"{value:.6f}"` per value, at a fraction of
    # the cost (this runs for every object)
    return str(class_index) + " %.6f" * len(label.coordinates) % label.coordinates
