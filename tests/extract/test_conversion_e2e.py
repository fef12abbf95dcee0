"""The console script on a generated export mixing every conversion case, checked against the spec.

Expectations are computed here, independently of `worker_yolo_training.core.geometry`: the crop and the
orientation by hand from the rules (crop = floor/ceil of the element's bounds clamped to its image;
mirror x → W − x, then rotate clockwise: 90: (H − y, x), 180: (W − x, H − y), 270: (y, W − x)),
clipping with shapely in the unoriented crop and only then orienting the points by hand; oriented
boxes by rotating calipers, any of several tied minimum rectangles being accepted. An object cut
into several parts is one label covering them all: the box of all parts, the minimum rectangle of
all parts, or (segment) one ring whose points are exactly the parts' vertices and whose filled
area is exactly the parts' area (how the ring joins them is Ultralytics' business). Images are RGB
gradients (red follows x, green follows y, blue identifies the image) so that the orientation of
every written image is checked as well as its size.

The three runs share the session's image cache (conftest's XDG_CACHE_HOME): the first one writes
the crops, the next two reuse them.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from shapely import make_valid
from shapely.geometry import MultiPolygon, Polygon, box

from tests.exports import ExportBuilder, new_id, rectangle, seed_ids
from tests.helpers import run_local

CLASS_NAMES = ("text_line", "illustration")
MODES = ("segment", "bbox", "obb")
SETS = ("train", "dev", "test", "extra")
SPLIT_OF_SET = {"train": "train", "dev": "val", "test": "test"}
SPLITS = ("train", "val", "test")
# the set of the n-th generated page
SET_CYCLE = ("train",) * 6 + ("dev", "dev", "test", "extra")
# Tolerance on normalised coordinates: 6 decimals written (5e-7) plus float noise
TOLERANCE = 2e-6
# Tolerance on a colour channel of the gradient images (JPEG written twice)
COLOUR_TOLERANCE = 14

# The reasons as summary.json spells them
NO_IMAGE = "element without image"
OTHER_IMAGE = "object on another image"
OUTSIDE = "object outside the crop"
DEGENERATE = "degenerate geometry (no area)"
OTHER_TYPE = "type not requested"
RUN_FILTERED = "worker run not selected"

UNSAFE_IDS = ("../../../../evil", "..")
SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]+\.(txt|jpg)$")
VALUE = re.compile(r"^(0\.\d{6}|1\.000000)$")


# ---------------------------------------------------------------- the scenario


@dataclass
class ImageSpec:
    id: str
    width: int
    height: int
    blue: int


@dataclass
class Obj:
    id: str
    type: str
    image_id: str | None
    polygon: list | None
    run: str | None


@dataclass
class PageSpec:
    id: str
    image: ImageSpec | None
    polygon: list | None
    angle: int = 0
    mirrored: bool = False
    sets: list[str] = field(default_factory=list)
    # every descendant once, whatever the number of paths to it
    objects: dict[str, Obj] = field(default_factory=dict)

    def crop(self) -> tuple[int, int, int, int]:
        """x0, y0, width, height of the crop, by the spec's rule."""
        xs = [point[0] for point in self.polygon]
        ys = [point[1] for point in self.polygon]
        x0 = max(0, math.floor(min(xs)))
        y0 = max(0, math.floor(min(ys)))
        x1 = min(self.image.width, math.ceil(max(xs)))
        y1 = min(self.image.height, math.ceil(max(ys)))
        return x0, y0, x1 - x0, y1 - y0

    def oriented_size(self) -> tuple[int, int]:
        _, _, width, height = self.crop()
        return (height, width) if self.angle in (90, 270) else (width, height)


@dataclass
class Scenario:
    database: Path
    images: Path
    run_a: str
    run_b: str
    pages: list[PageSpec]

    def memberships(self, split: str) -> list[PageSpec]:
        return [
            page
            for page in self.pages
            for set_name in page.sets
            if SPLIT_OF_SET.get(set_name) == split
        ]


def orient_point(x: float, y: float, width: int, height: int, angle: int, mirrored: bool):
    """A point of the crop (width × height) in the mirrored then clockwise-rotated image."""
    if mirrored:
        x = width - x
    if angle == 90:
        return height - y, x
    if angle == 180:
        return width - x, height - y
    if angle == 270:
        return y, width - x
    assert angle == 0
    return x, y


def write_gradient(path: Path, image: ImageSpec) -> None:
    xs = (np.arange(image.width) + 0.5) * 255 / image.width
    ys = (np.arange(image.height) + 0.5) * 255 / image.height
    pixels = np.zeros((image.height, image.width, 3), dtype=np.float64)
    pixels[..., 0] = xs[None, :]
    pixels[..., 1] = ys[:, None]
    pixels[..., 2] = image.blue
    Image.fromarray(np.round(pixels).astype(np.uint8)).save(path, quality=95)


def gradient_colour(image: ImageSpec, x: float, y: float) -> tuple[float, float, float]:
    return (255 * x / image.width, 255 * y / image.height, image.blue)


class Generator:
    """Pages with every kind of object, written to the export and recorded for expectations."""

    def __init__(self, root: Path, pages: int = 60, seed: int = 20240611):
        self.rng = random.Random(seed)
        seed_ids(seed)
        self.root = root
        self.images_dir = root / "images"
        self.images_dir.mkdir()
        self.builder = ExportBuilder(root / "export.sqlite")
        self.dataset = self.builder.dataset(sets=SETS)
        self.run_a = self.builder.worker_run()
        self.run_b = self.builder.worker_run()
        self.models = {}
        self.image_count = 0
        self.pages: list[PageSpec] = []
        self.other_image = self.new_image()
        previous = None
        for index in range(pages):
            previous = self.page(index, previous)
        self.special_pages()
        self.builder.close()

    def new_image(self) -> ImageSpec:
        width, height = self.rng.choice([(300, 200), (240, 320), (320, 240)])
        model = self.builder.image(width, height)
        spec = ImageSpec(model.id, width, height, blue=(self.image_count * 53 + 20) % 256)
        self.image_count += 1
        self.models[spec.id] = model
        write_gradient(self.images_dir / f"{spec.id}.jpg", spec)
        return spec

    def element(self, page_ids, obj_type, polygon, image=None, run=None, parents=None) -> Obj:
        """An element below the pages `page_ids` (its parents are `parents`, default those pages)."""
        image = image if image is not None else self.current.image
        element_id = self.builder.element(
            obj_type,
            polygon,
            self.models[image.id],
            parents=tuple(parents if parents is not None else page_ids),
            worker_run=run,
        )
        obj = Obj(element_id, obj_type, image.id, polygon, run)
        for page in self.pages_by_id(page_ids):
            page.objects[element_id] = obj
        return obj

    def pages_by_id(self, page_ids):
        return [page for page in [*self.pages, self.current] if page.id in page_ids]

    def add_page(self, page: PageSpec, sets: list[str]) -> None:
        self.builder.element(
            "page",
            page.polygon,
            self.models[page.image.id] if page.image else None,
            element_id=page.id,
            rotation_angle=page.angle,
            mirrored=page.mirrored,
        )
        for set_name in sets:
            self.builder.add_to_set(self.dataset, set_name, page.id)
        page.sets = list(sets)

    # ------------------------------------------------------------ shapes (crop-local → image)

    def quad(self, cx, cy, rx, ry):
        """A generic simple quadrilateral around a centre (no symmetry: no rectangle ties)."""
        rng = self.rng
        points = []
        for k in range(4):
            angle = k * math.pi / 2 + rng.uniform(-0.3, 0.3)
            radius = rng.uniform(0.7, 1.0)
            points.append((cx + rx * radius * math.cos(angle), cy + ry * radius * math.sin(angle)))
        return [*points, points[0]]

    def to_image(self, points):
        x0, y0, _, _ = self.crop
        return [[x0 + x, y0 + y] for x, y in points]

    # ------------------------------------------------------------ pages

    def page(self, index: int, previous: PageSpec | None) -> PageSpec:
        rng = self.rng
        shares_image = previous is not None and index % 5 == 1
        image = previous.image if shares_image else self.new_image()
        width = rng.uniform(80, image.width * 0.75)
        height = rng.uniform(80, image.height * 0.75)
        x = rng.uniform(1, image.width - width - 1)
        y = rng.uniform(1, image.height - height - 1)
        if index % 6 == 5:
            # the page goes past the image: its crop is clamped
            if index % 12 == 5:
                x = -rng.uniform(0.5, 8)
            else:
                y = image.height - height + rng.uniform(0.5, 8)
        if index % 3 == 0:
            polygon = rectangle(x, y, width, height)
        else:
            a, b, c, d = (rng.uniform(0, 0.2) for _ in range(4))
            polygon = [
                [x + a * width, y],
                [x + width, y + b * height],
                [x + width - c * width, y + height],
                [x, y + height - d * height],
                [x + a * width, y],
            ]
        page = PageSpec(
            id=new_id(),
            image=image,
            polygon=polygon,
            angle=(0, 90, 180, 270)[index % 4],
            mirrored=(index // 4) % 2 == 1,
        )
        sets = [SET_CYCLE[index % len(SET_CYCLE)]]
        if index == 3:
            sets.append("test")  # leak train/test
        if index == 4:
            sets.append("dev")  # leak train/val
        if index == 5:
            sets.append("extra")  # not a leak: extra is not a training set
        self.add_page(page, sets)
        self.current = page
        self.objects(index, page, previous if shares_image else None)
        self.pages.append(page)
        return page

    def objects(self, index: int, page: PageSpec, same_image_page: PageSpec | None) -> None:
        rng = self.rng
        self.crop = page.crop()
        _, _, cw, ch = self.crop
        pid = [page.id]
        runs = (None, self.run_a, self.run_b)
        # 1. a line inside, from manual / run_a / run_b
        self.element(
            pid,
            "text_line",
            self.to_image(self.quad(0.3 * cw, 0.28 * ch, 0.15 * cw, 0.12 * ch)),
            run=runs[index % 3],
        )
        # 2. an illustration crossing a side of the crop
        side = index % 4
        jitter = rng.uniform(-0.05, 0.05)
        centre = [
            (cw, (0.5 + jitter) * ch),
            (0, (0.5 + jitter) * ch),
            ((0.5 + jitter) * cw, 0),
            ((0.5 + jitter) * cw, ch),
        ][side]
        self.element(
            pid,
            "illustration",
            self.to_image(self.quad(*centre, 0.12 * cw, 0.15 * ch)),
            run=(None, self.run_a)[index % 2],
        )
        # 3. a line wholly outside the crop
        outside_x = cw + 30 if index % 2 else -30
        self.element(
            pid,
            "text_line",
            self.to_image(self.quad(outside_x, 0.5 * ch, 12, 8)),
            run=self.run_a,
        )
        # 4. a self-intersecting (bow tie) polygon inside: a jittered kite lobe and a triangle
        if index % 2 == 0:
            unit = [(0, 0), (1, 1), (1, 0), (0, 1), (-0.3, 0.5)]
            unit = [(u + rng.uniform(-0.04, 0.04), v + rng.uniform(-0.04, 0.04)) for u, v in unit]
            points = [
                ((0.55 + (u + 0.3) / 1.3 * 0.35) * cw, (0.55 + v * 0.35) * ch) for u, v in unit
            ]
            self.element(
                pid,
                CLASS_NAMES[(index // 2) % 2],
                self.to_image([*points, points[0]]),
                run=(None, self.run_a)[(index // 2) % 2],
            )
        # 5. zero-area polygons: a flat ring (exactly collinear), or only two points
        y_flat = rng.uniform(0.1, 0.9) * ch
        flat = [(0.1 * cw, y_flat), (0.3 * cw, y_flat), (0.5 * cw, y_flat), (0.1 * cw, y_flat)]
        if index % 3 == 0:
            flat = flat[:2]
        self.element(pid, "text_line", self.to_image(flat))
        # 6. a type that is not requested
        self.element(pid, "word", self.to_image(self.quad(0.5 * cw, 0.5 * ch, 10, 6)))
        # 7. a region (not requested) with a line grandchild; sometimes the line also hangs from
        # the page itself or from a second region (several parents), sometimes one level deeper
        region = self.element(
            pid, "text_region", self.to_image(rectangle(0.05 * cw, 0.5 * ch, 0.9 * cw, 0.45 * ch))
        )
        parents = [region.id]
        if index % 3 == 1:
            parents.append(page.id)
        if index % 4 == 3:
            second = self.element(
                pid, "text_region", self.to_image(rectangle(0.1 * cw, 0.6 * ch, 0.5 * cw, 0.3 * ch))
            )
            parents.append(second.id)
        self.element(
            pid,
            "text_line",
            self.to_image(self.quad(0.35 * cw, 0.75 * ch, 0.2 * cw, 0.1 * ch)),
            run=self.run_a,
            parents=parents,
        )
        if index % 5 == 2:
            block = self.element(
                pid,
                "text_block",
                self.to_image(rectangle(0.6 * cw, 0.55 * ch, 0.3 * cw, 0.35 * ch)),
                parents=[region.id],
            )
            self.element(
                pid,
                "illustration",
                self.to_image(self.quad(0.75 * cw, 0.72 * ch, 0.1 * cw, 0.1 * ch)),
                parents=[block.id],
            )
        # 8. a line on another image
        self.element(
            pid,
            "text_line",
            self.to_image(self.quad(0.6 * cw, 0.3 * ch, 0.1 * cw, 0.1 * ch)),
            image=self.other_image,
        )
        # 9. a U whose base is above the crop: clipping leaves its two arms (one label covers both)
        if index % 4 == 1:
            s = [rng.uniform(-0.02, 0.02) * cw for _ in range(4)]
            u_shape = [
                (0.6 * cw, -15),
                (0.9 * cw, -15),
                (0.9 * cw + s[0], 0.2 * ch),
                (0.8 * cw + s[1], 0.22 * ch),
                (0.8 * cw, -5),
                (0.68 * cw, -5),
                (0.68 * cw + s[2], 0.25 * ch),
                (0.6 * cw + s[3], 0.18 * ch),
            ]
            self.element(pid, "illustration", self.to_image([*u_shape, u_shape[0]]), run=self.run_a)
        # 10. a rectangle that only touches the crop's right edge (no common area)
        if index % 7 == 0:
            self.element(
                pid,
                "text_line",
                self.to_image(rectangle(cw, 0.3 * ch, 12, 0.2 * ch)),
                run=self.run_a,
            )
        # 11. a line child of this page and of the previous page on the same image
        if same_image_page is not None:
            self.element(
                [same_image_page.id, page.id],
                "text_line",
                self.to_image(self.quad(0.2 * cw, 0.5 * ch, 0.25 * cw, 0.15 * ch)),
            )
        # 12. a concave polygon (a chevron), crossing the bottom edge on odd pages
        cx, cy = 0.5 * cw, (0.95 if index % 2 else 0.6) * ch
        unit = [(-1, -0.5), (0, 0), (1, -0.5), (1, 0.5), (0, 1), (-1, 0.5)]
        chevron = [
            (
                cx + (u + rng.uniform(-0.1, 0.1)) * 0.12 * cw,
                cy + (v + rng.uniform(-0.1, 0.1)) * 0.1 * ch,
            )
            for u, v in unit
        ]
        self.element(pid, "illustration", self.to_image([*chevron, chevron[0]]))

    def special_pages(self) -> None:
        """Unsafe ids (with objects) and an element without image (its objects are not counted)."""
        for element_id, set_name, angle, mirrored in (
            (UNSAFE_IDS[0], "train", 90, True),
            (UNSAFE_IDS[1], "test", 270, False),
        ):
            image = self.new_image()
            page = PageSpec(
                id=element_id,
                image=image,
                polygon=rectangle(20.5, 10.25, 150.5, 120.75),
                angle=angle,
                mirrored=mirrored,
            )
            self.add_page(page, [set_name])
            self.current = page
            self.objects(len(self.pages), page, None)
            self.pages.append(page)
        page = PageSpec(id=new_id(), image=None, polygon=None)
        self.add_page(page, ["train"])
        self.current = page
        line = self.builder.element(
            "text_line", rectangle(10, 10, 50, 20), self.models[self.other_image.id], (page.id,)
        )
        page.objects[line] = Obj(line, "text_line", self.other_image.id, None, None)
        self.pages.append(page)


# ---------------------------------------------------------------- expectations


def areal_parts(geometry) -> list[Polygon]:
    if geometry.is_empty:
        return []
    if isinstance(geometry, Polygon):
        return [geometry] if geometry.area > 0 else []
    if hasattr(geometry, "geoms"):
        return [part for sub in geometry.geoms for part in areal_parts(sub)]
    return []


@dataclass(frozen=True)
class ExpectedLabel:
    class_index: int
    values: tuple[float, ...]
    # other acceptable values: oriented boxes of the same minimum area (ties)
    alternatives: tuple[tuple[float, ...], ...] = ()
    # segment mode, an object of several parts: their rings, normalised (the label joins them)
    parts: tuple[tuple[tuple[float, float], ...], ...] = ()


# Two rectangles whose areas differ by less than this (relative) are both minimum: float noise
AREA_TIE = 1e-9


def minimum_rectangles(part: Polygon) -> list[list[tuple[float, float]]]:
    """The minimum-area rectangles around a polygon, by rotating calipers on its hull.

    One of them has a side on a hull edge; several are returned when they tie (a triangle, or a
    shape whose extreme points form a triangle, has the same area along each of its edges).
    """
    hull = list(part.convex_hull.exterior.coords)
    candidates = []
    for (ax, ay), (bx, by) in itertools.pairwise(hull):
        length = math.hypot(bx - ax, by - ay)
        if length == 0:
            continue
        ux, uy = (bx - ax) / length, (by - ay) / length
        nx, ny = -uy, ux
        along = [x * ux + y * uy for x, y in hull]
        across = [x * nx + y * ny for x, y in hull]
        s0, s1, t0, t1 = min(along), max(along), min(across), max(across)
        corners = [
            (s * ux + t * nx, s * uy + t * ny) for s, t in ((s0, t0), (s1, t0), (s1, t1), (s0, t1))
        ]
        candidates.append(((s1 - s0) * (t1 - t0), corners))
    best = min(area for area, _ in candidates)
    return [corners for area, corners in candidates if area <= best * (1 + AREA_TIE)]


def expected_object(
    page: PageSpec, obj: Obj, mode: str, worker_runs
) -> tuple[ExpectedLabel, int] | Counter:
    """The label of an object of a page with its number of parts, or why it is skipped (a
    Counter)."""
    reasons = []
    if obj.type not in CLASS_NAMES:
        reasons.append(OTHER_TYPE)
    if (obj.run or "manual") not in worker_runs:
        reasons.append(RUN_FILTERED)
    if obj.image_id != page.image.id:
        reasons.append(OTHER_IMAGE)
    if reasons:
        # the scenario never gives an object two reasons: no precedence to assume
        assert len(reasons) == 1, (obj, reasons)
        return Counter(reasons)
    x0, y0, width, height = page.crop()
    local = [(x - x0, y - y0) for x, y in obj.polygon]
    if len(local) < 3 or len({tuple(p) for p in local}) < 3:
        return Counter([DEGENERATE])
    shape = make_valid(Polygon(local))
    if not areal_parts(shape):
        return Counter([DEGENERATE])
    clipped = areal_parts(shape.intersection(box(0, 0, width, height)))
    if not clipped:
        return Counter([OUTSIDE])
    whole = clipped[0] if len(clipped) == 1 else MultiPolygon(clipped)
    out_width, out_height = page.oriented_size()

    def oriented(points):
        result = []
        for x, y in points:
            u, v = orient_point(x, y, width, height, page.angle, page.mirrored)
            result.append((min(1.0, max(0.0, u / out_width)), min(1.0, max(0.0, v / out_height))))
        return result

    rings = [oriented(list(part.exterior.coords)[:-1]) for part in clipped]
    parts = ()
    if mode == "segment":
        values = tuple(value for ring in rings for point in ring for value in point)
        alternatives = ()
        if len(rings) > 1:
            parts = tuple(tuple(ring) for ring in rings)
    elif mode == "bbox":
        points = [point for ring in rings for point in ring]
        us, vs = [p[0] for p in points], [p[1] for p in points]
        alternatives = ()
        values = (
            (min(us) + max(us)) / 2,
            (min(vs) + max(vs)) / 2,
            max(us) - min(us),
            max(vs) - min(vs),
        )
    else:
        values, *alternatives = (
            tuple(value for point in oriented(corners) for value in point)
            for corners in minimum_rectangles(whole)
        )
    label = ExpectedLabel(CLASS_NAMES.index(obj.type), values, tuple(alternatives), parts)
    return label, len(clipped)


def expected_page(page: PageSpec, mode: str, worker_runs):
    """Labels, objects per class, skip reasons and objects of several parts of one page."""
    labels, objects, skipped, several = [], Counter(), Counter(), 0
    for obj in page.objects.values():
        outcome = expected_object(page, obj, mode, worker_runs)
        if isinstance(outcome, Counter):
            skipped.update(outcome)
            continue
        label, parts = outcome
        labels.append(label)
        objects[obj.type] += 1
        several += parts > 1
    return labels, objects, skipped, several


# ---------------------------------------------------------------- running the console script


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> Scenario:
    root = tmp_path_factory.mktemp("conversion")
    generator = Generator(root)
    return Scenario(
        database=generator.builder.path,
        images=generator.images_dir,
        run_a=generator.run_a,
        run_b=generator.run_b,
        pages=generator.pages,
    )


@dataclass
class Extraction:
    mode: str
    output: Path
    process: subprocess.CompletedProcess
    new_files: set[Path]
    root: Path


def all_files(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if not path.is_dir()}


@pytest.fixture(scope="module", params=MODES)
def extraction(request, scenario) -> Extraction:
    mode = request.param
    root = scenario.database.parent
    config = root / f"config_{mode}.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "class_names": list(CLASS_NAMES),
                "mode": mode,
                "image_size": 1024,
                "advanced": {"worker_runs": [scenario.run_a, "manual"]},
            }
        )
    )
    # the unsafe ids climb four levels from labels/<split>/: into root itself
    output = root / f"out_{mode}"
    before = all_files(root)
    process = run_local(scenario.database, config, output, "--images", scenario.images)
    return Extraction(mode, output, process, all_files(root) - before, root)


def worker_runs(scenario: Scenario) -> tuple[str, ...]:
    return (scenario.run_a, "manual")


def element_files(folder: Path, pages: list[PageSpec], suffix: str) -> dict[str, Path]:
    """The file of each page of a split folder: by id, and the one left for an unsafe id."""
    files = {path.name: path for path in folder.iterdir()}
    found, unsafe = {}, []
    for page in pages:
        name = f"{page.id}{suffix}"
        if page.id in UNSAFE_IDS:
            unsafe.append(page.id)
        elif name in files:
            found[page.id] = files.pop(name)
    # one unsafe id per split in the scenario: the remaining file is its
    assert len(unsafe) <= 1
    if unsafe:
        assert len(files) == 1, f"{folder}: files left for {unsafe}: {sorted(files)}"
        found[unsafe[0]] = files.popitem()[1]
    assert not files, f"{folder}: unexpected files {sorted(files)}"
    return found


# ---------------------------------------------------------------- the checks


def parse_line(line: str) -> ExpectedLabel:
    fields = line.split()
    for value in fields[1:]:
        assert VALUE.match(value), f"{value!r} is not in [0, 1] with 6 decimals: {line!r}"
    return ExpectedLabel(int(fields[0]), tuple(float(value) for value in fields[1:]))


def same_label(mode: str, expected: ExpectedLabel, actual: ExpectedLabel) -> bool:
    if expected.class_index != actual.class_index:
        return False
    if expected.parts:
        return joins(expected.parts, actual.values)
    return any(
        same_values(mode, values, actual.values)
        for values in (expected.values, *expected.alternatives)
    )


def joins(parts: tuple, values: tuple[float, ...]) -> bool:
    """One ring whose points are the parts' vertices (no other) and that fills the parts exactly:
    the parts joined by zero-width cuts."""
    ring = list(zip(values[0::2], values[1::2], strict=True))
    vertices = [point for part in parts for point in part]
    if not (covered(vertices, ring) and covered(ring, vertices)):
        return False
    filled = make_valid(Polygon(ring))
    union = MultiPolygon([Polygon(part) for part in parts])
    # 6 decimals move each vertex by 5e-7 at most: the areas differ by about perimeter × 5e-7
    return filled.symmetric_difference(union).area <= 1e-5


def covered(points, others) -> bool:
    return all(
        any(abs(x - u) <= TOLERANCE and abs(y - v) <= TOLERANCE for u, v in others)
        for x, y in points
    )


def same_values(mode: str, expected: tuple[float, ...], actual: tuple[float, ...]) -> bool:
    if len(expected) != len(actual):
        return False
    if mode == "bbox":
        return all(abs(a - b) <= TOLERANCE for a, b in zip(expected, actual, strict=True))
    # polygons and oriented boxes: the same points, in any order
    expected_points = list(zip(expected[0::2], expected[1::2], strict=True))
    actual_points = list(zip(actual[0::2], actual[1::2], strict=True))
    return covered(expected_points, actual_points) and covered(actual_points, expected_points)


def label_differences(mode: str, expected: list, actual: list) -> tuple[list, list]:
    missing, extra = [], list(actual)
    for label in expected:
        match = next((other for other in extra if same_label(mode, label, other)), None)
        if match is None:
            missing.append(label)
        else:
            extra.remove(match)
    return missing, extra


def test_every_label_file_matches_the_spec(extraction, scenario):
    dataset = extraction.output / "dataset"
    runs = worker_runs(scenario)
    problems = []
    checked = several = 0
    for split in SPLITS:
        pages = [page for page in scenario.memberships(split) if page.image is not None]
        files = element_files(dataset / "labels" / split, pages, ".txt")
        assert set(files) == {page.id for page in pages}
        for page in pages:
            expected, _, _, _ = expected_page(page, extraction.mode, runs)
            text = files[page.id].read_text()
            assert text == "" or text.endswith("\n")
            actual = [parse_line(line) for line in text.splitlines()]
            missing, extra = label_differences(extraction.mode, expected, actual)
            if missing or extra:
                problems.append(
                    f"{split}/{page.id} (angle {page.angle}, mirrored {page.mirrored}, "
                    f"crop {page.crop()}): missing {missing}, unexpected {extra}"
                )
            checked += len(expected)
            several += sum(bool(label.parts) for label in expected)
    assert not problems, "\n".join(problems)
    assert checked > 200
    # the scenario does exercise objects of several parts (bow ties, U shapes cut by the crop)
    assert extraction.mode != "segment" or several >= 10


def test_images_have_the_oriented_crop_size_and_orientation(extraction, scenario):
    dataset = extraction.output / "dataset"
    problems = []
    for split in SPLITS:
        pages = [page for page in scenario.memberships(split) if page.image is not None]
        files = element_files(dataset / "images" / split, pages, ".jpg")
        for page in pages:
            x0, y0, width, height = page.crop()
            with Image.open(files[page.id]) as written:
                assert written.format == "JPEG"
                image = written.convert("RGB")
            if image.size != page.oriented_size():
                problems.append(f"{page.id}: size {image.size}, expected {page.oriented_size()}")
                continue
            for fx, fy in ((0.2, 0.3), (0.8, 0.25), (0.3, 0.75), (0.7, 0.8)):
                u, v = orient_point(
                    fx * width, fy * height, width, height, page.angle, page.mirrored
                )
                pixel = image.getpixel((int(u), int(v)))
                colour = gradient_colour(page.image, x0 + fx * width, y0 + fy * height)
                if any(abs(a - b) > COLOUR_TOLERANCE for a, b in zip(pixel, colour, strict=True)):
                    problems.append(
                        f"{page.id} (angle {page.angle}, mirrored {page.mirrored}): pixel "
                        f"{pixel} at crop point ({fx}, {fy}), expected about {colour}"
                    )
    assert not problems, "\n".join(problems)


def test_summary_counts_every_skip_reason_and_the_leaks(extraction, scenario):
    summary = json.loads((extraction.output / "dataset" / "summary.json").read_text())
    runs = worker_runs(scenario)
    seen_reasons = set()
    for split in SPLITS:
        memberships = scenario.memberships(split)
        objects, skipped, images = Counter(), Counter(), 0
        for page in memberships:
            if page.image is None:
                skipped[NO_IMAGE] += 1
                continue
            images += 1
            _, page_objects, page_skipped, _ = expected_page(page, extraction.mode, runs)
            objects.update(page_objects)
            skipped.update(page_skipped)
        report = summary["splits"][split]
        assert report["elements"] == len(memberships), split
        assert report["images"] == images, split
        assert report["objects"] == {name: objects[name] for name in CLASS_NAMES}, split
        assert report["skipped"] == dict(skipped), split
        assert report["failed_images"] == []
        seen_reasons |= set(skipped)
    assert [summary["splits"][split]["sets"] for split in SPLITS] == [["train"], ["dev"], ["test"]]
    # the scenario does exercise every reason
    assert seen_reasons == {
        NO_IMAGE,
        OTHER_IMAGE,
        OUTSIDE,
        DEGENERATE,
        OTHER_TYPE,
        RUN_FILTERED,
    }
    leaks = {
        page.id: sorted({SPLIT_OF_SET[name] for name in page.sets if name in SPLIT_OF_SET})
        for page in scenario.pages
    }
    expected_leaks = {page: splits for page, splits in leaks.items() if len(splits) > 1}
    assert len(expected_leaks) == 2
    assert summary["leaks"] == expected_leaks
    assert "'extra'" in extraction.process.stderr


def test_summary_counts_the_objects_of_several_parts(extraction, scenario):
    summary = json.loads((extraction.output / "dataset" / "summary.json").read_text())
    runs = worker_runs(scenario)
    for split in SPLITS:
        expected = sum(
            expected_page(page, extraction.mode, runs)[3]
            for page in scenario.memberships(split)
            if page.image is not None
        )
        assert summary["splits"][split]["objects_with_several_parts"] == expected, split


def test_nothing_is_written_outside_the_dataset_folder(extraction, scenario):
    dataset = extraction.output / "dataset"
    outside = [path for path in extraction.new_files if not path.is_relative_to(dataset)]
    # Beside the dataset: only what --resume checks, and the lock of the run using the folder
    assert sorted(outside) == [
        extraction.output / ".worker-yolo-training.lock",
        extraction.output / "run.json",
    ]
    datasets = [extraction.root / f"out_{mode}" / "dataset" for mode in MODES]
    for path in all_files(extraction.root.parent):
        if "evil" in path.name:
            assert any(path.is_relative_to(folder) for folder in datasets), path
    for path in extraction.new_files:
        if path in outside:
            continue
        relative = path.relative_to(dataset)
        if len(relative.parts) == 1:
            assert relative.name in ("data.yaml", "summary.json")
        elif relative.parts[0] == "truth":
            # What the page-level evaluation compares predictions with, one file per split
            assert relative.name in {f"{split}.jsonl" for split in SPLITS}, relative
        else:
            assert len(relative.parts) == 3, relative
            folder, split, name = relative.parts
            assert folder in ("images", "labels") and split in SPLITS, relative
            assert SAFE_NAME.match(name), relative
    data = yaml.safe_load((dataset / "data.yaml").read_text())
    assert data["names"] == dict(enumerate(CLASS_NAMES))
    truth_files = len(list((dataset / "truth").glob("*.jsonl")))
    assert truth_files == sum(bool(list((dataset / "images" / s).glob("*"))) for s in SPLITS)
    expected_files = (
        len(outside)
        + 2  # data.yaml, summary.json
        + truth_files
        + 2
        * sum(page.image is not None for split in SPLITS for page in scenario.memberships(split))
    )
    assert len(extraction.new_files) == expected_files


def test_an_element_in_dev_and_val_is_extracted_without_error(tmp_path):
    """dev and val both become the val split: an element in both is written once, the second set
    counted as a skip (it once hard-linked its image onto itself and crashed)."""
    images = tmp_path / "images"
    images.mkdir()
    builder = ExportBuilder(tmp_path / "export.sqlite")
    dataset = builder.dataset(sets=("train", "dev", "val"))
    pages = {}
    for set_name in ("train", "dev"):
        image = builder.image(300, 200)
        write_gradient(images / f"{image.id}.jpg", ImageSpec(image.id, 300, 200, 0))
        page = builder.element("page", rectangle(10, 20, 100, 50), image)
        builder.element("text_line", rectangle(30, 30, 40, 20), image, parents=(page,))
        builder.add_to_set(dataset, set_name, page)
        pages[set_name] = page
    builder.add_to_set(dataset, "val", pages["dev"])
    builder.close()
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({"class_names": ["text_line"], "mode": "bbox"}))
    output = tmp_path / "out"
    run_local(builder.path, config, output, "--images", images)
    val = output / "dataset"
    # the line is x 20..60, y 10..30 of a 100×50 crop
    label = (val / "labels" / "val" / f"{pages['dev']}.txt").read_text()
    assert label == "0 0.400000 0.400000 0.400000 0.400000\n"
    with Image.open(val / "images" / "val" / f"{pages['dev']}.jpg") as image:
        assert image.size == (100, 50)
    report = json.loads((val / "summary.json").read_text())["splits"]["val"]
    assert report["images"] == 1
    assert report["skipped"] == {"element already in this split (from another set)": 1}
