"""Object outlines measured as GEOS measures them, with numpy where it can: most objects are
triangles or convex quadrilaterals, whose minimum-area rectangle lies along one of their edges."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import shapely

from worker_yolo_training.core import simple_rings
from worker_yolo_training.extract.histogram import Histogram

# A thickness measured without GEOS is kept only when GEOS's own rounding, far below this share
# of it, cannot change what is counted (`simple_thickness`); areas measured without GEOS are
# trusted within this share of the sum of their terms' magnitudes
MARGIN = 1e-6
SLACK = 1e-9
# Beyond this ratio of its long side to its short one, a ring is measured by GEOS
MAX_ELONGATION = 1e4


class Outlines:
    """The polygons of measured objects (segment mode): consecutive rings of (x, y) `points`.
    Shapely polygons, repaired when invalid (a joined multi-part segment touches itself along its
    cuts), are made only for the rings that need GEOS: the trivially simple ones (`simple_rings`:
    most objects) are measured with numpy, and need a polygon only when GEOS must decide."""

    def __init__(self, points: np.ndarray, lengths: list[int]):
        self.points = points
        self.sizes = np.array(lengths)
        self.starts = np.cumsum(self.sizes) - self.sizes
        self.simple = simple_rings(points, self.starts, self.sizes)
        self.shapes = np.full(len(self.sizes), None, dtype=object)
        self.made = np.zeros(len(self.sizes), bool)

    def __len__(self) -> int:
        return len(self.sizes)

    def shapes_of(self, indices: np.ndarray) -> np.ndarray:
        """The polygons of the objects at `indices`, made once."""
        missing = indices[~self.made[indices]]
        if missing.size:
            sizes = self.sizes[missing]
            rows = np.repeat(self.starts[missing] - np.cumsum(sizes) + sizes, sizes)
            points = self.points[rows + np.arange(sizes.sum())]
            rings = np.repeat(np.arange(missing.size), sizes)
            shapes = shapely.polygons(shapely.linearrings(points, indices=rings))
            tested = np.flatnonzero(~self.simple[missing])
            invalid = tested[~shapely.is_valid(shapes[tested])]
            shapes[invalid] = shapely.make_valid(shapes[invalid])
            self.shapes[missing] = shapes
            self.made[missing] = True
        return self.shapes[indices]

    @cached_property
    def bounds(self) -> np.ndarray:
        """(minx, miny, maxx, maxy) of each object: a simple ring's are its points' (as GEOS
        computes them), the others' GEOS's."""
        x, y = self.points.T
        bounds = np.stack(
            [
                np.minimum.reduceat(x, self.starts),
                np.minimum.reduceat(y, self.starts),
                np.maximum.reduceat(x, self.starts),
                np.maximum.reduceat(y, self.starts),
            ],
            axis=1,
        )
        other = np.flatnonzero(~self.simple)
        bounds[other] = shapely.bounds(self.shapes_of(other))
        return bounds

    def areas(self) -> tuple[np.ndarray, np.ndarray]:
        """Each object's area and how far GEOS's may be from it: a simple ring's from the
        shoelace formula (far wider than both roundings), the others' GEOS's (0)."""
        areas, slack = np.zeros(len(self)), np.zeros(len(self))
        other = np.flatnonzero(~self.simple)
        areas[other] = shapely.area(self.shapes_of(other))
        simple = np.flatnonzero(self.simple)
        if simple.size:
            rows = self.starts[simple, None] + np.arange(self.sizes[simple].max())
            valid = rows < (self.starts + self.sizes)[simple, None]
            ring = self.points[np.where(valid, rows, self.starts[simple, None])]
            ring = ring - ring[:, :1]  # the first point repeated after the last: a zero term
            after = np.roll(ring, -1, axis=1)
            terms = ring[..., 0] * after[..., 1] - after[..., 0] * ring[..., 1]
            areas[simple] = np.abs(terms.sum(axis=1)) / 2
            slack[simple] = SLACK * np.abs(terms).sum(axis=1)
        return areas, slack


def geos_thickness(shapes: np.ndarray) -> np.ndarray:
    """The short side of each shape's minimum rotated rectangle (GEOS: the minimum-area one);
    0 when it collapses to a line or a point."""
    rectangles = shapely.minimum_rotated_rectangle(shapes)
    # a rectangle has 5 coordinates; what collapses to a line or a point has no thickness
    full = shapely.get_num_coordinates(rectangles) == 5
    thickness = np.zeros(len(shapes))
    if full.any():
        corners = shapely.get_coordinates(rectangles[full]).reshape(-1, 5, 2)[:, :4]
        thickness[full] = short_sides(corners)
    return thickness


def _flush_rectangles(rings: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Short side, area and elongation (long side over short side) of the rectangle flush with
    each edge of convex rings ((m, corners, 2), in order, not closed): (m, corners) each."""
    edges = np.roll(rings, -1, axis=1) - rings
    normals = np.stack([-edges[..., 1], edges[..., 0]], axis=2)
    lengths = np.sqrt((edges * edges).sum(axis=2))
    along = np.ptp(rings @ edges.transpose(0, 2, 1), axis=1) / lengths
    across = np.ptp(rings @ normals.transpose(0, 2, 1), axis=1) / lengths
    short = np.minimum(along, across)
    return short, along * across, np.maximum(along, across) / short


def simple_thickness(outlines: Outlines) -> np.ndarray:
    """The thickness of the trivially simple rings as GEOS measures it, computed with numpy: the
    minimum-area rectangle of a convex polygon is flush with one of its edges. NaN for the
    others, and where rounding could make GEOS count another value: two rectangles of about the
    same area but not the same thickness (GEOS takes one of them), a thickness near a histogram
    bin's edge, a ring more than `MAX_ELONGATION` times longer than thick."""
    points, starts, sizes = outlines.points, outlines.starts, outlines.sizes
    corners = sizes - (points[starts] == points[starts + sizes - 1]).all(axis=1)
    thickness = np.full(len(outlines), np.nan)
    for count in (3, 4):
        chosen = np.flatnonzero(outlines.simple & (corners == count))
        if not chosen.size:
            continue
        short, area, elongation = _flush_rectangles(points[starts[chosen, None] + np.arange(count)])
        best = area.argmin(axis=1)[:, None]
        value, least = np.take_along_axis(short, best, 1), np.take_along_axis(area, best, 1)
        other = (area <= least * (1 + MARGIN)) & (np.abs(short - value) > MARGIN * value)
        sure = ~other.any(axis=1) & (
            np.take_along_axis(elongation, best, 1)[:, 0] <= MAX_ELONGATION
        )
        sure &= ~Histogram.near_edge(value[:, 0], 10 * MARGIN)
        thickness[chosen[sure]] = value[sure, 0]
    return thickness


def short_sides(corners: np.ndarray) -> np.ndarray:
    """The short side of rectangles given as (n, 4, 2) corners, in order."""
    sides = np.diff(corners[:, :3], axis=1)
    return np.hypot(sides[..., 0], sides[..., 1]).min(axis=1)
