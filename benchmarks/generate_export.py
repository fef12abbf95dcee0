"""Generate a real-schema Arkindex SQLite export with synthetic pages and their images.

Each page is its own image (default 1200x1600 JPEG, light background, dark bars for
text lines, one filled shape for the illustration, all positions random per page).
The page polygon covers most of the image with a non-zero offset; each page has
``lines_per_page`` ``text_line`` children and ``illustrations_per_page``
``illustration`` children, with polygons in full-image coordinates stored as
Arkindex exports them: JSON text of a closed ring of integer points, e.g.
``[[100,40],[1100,40],[1100,1560],[100,1560],[100,40]]``.

The pages are the elements of one dataset whose sets are ``train,dev,test`` (80/10/10)
and all children of a ``folder`` element. Image URLs are ``{iiif_base_url}/{image_id}``;
the server URL changes with the port, so :func:`rebase_export` rewrites it in place.

    python benchmarks/generate_export.py /tmp/export.sqlite --pages 1000 \
        --images-dir /tmp/images --iiif-base-url http://127.0.0.1:8000/iiif
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image as PILImage
from PIL import ImageDraw

DEFAULT_EXPORT_VERSION = 11
SETS = ("train", "dev", "test")
PLACEHOLDER_BASE_URL = "http://iiif.invalid/iiif"


@dataclass
class GeneratedExport:
    path: Path
    images_dir: Path
    dataset_id: str
    iiif_base_url: str
    n_pages: int
    pages_by_set: dict[str, list[str]] = field(default_factory=dict)
    image_ids: list[str] = field(default_factory=list)
    seed: int = 0


def polygon_json(points: list[tuple[int, int]]) -> str:
    """Closed ring of integer points, compact JSON (as PostGIS GeoJSON coordinates)."""
    ring = [[int(x), int(y)] for x, y in points]
    if ring[0] != ring[-1]:
        ring.append(ring[0])
    return json.dumps(ring, separators=(",", ":"))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _split_sizes(n: int) -> dict[str, int]:
    dev = max(1, round(n * 0.1)) if n >= 3 else 0
    test = max(1, round(n * 0.1)) if n >= 3 else 0
    return {"train": n - dev - test, "dev": dev, "test": test}


def _page_layout(rng: random.Random, width: int, height: int, n_lines: int, n_ills: int):
    """Page box, line quadrilaterals and illustration polygons, all in image pixels."""
    px0 = rng.randint(20, max(21, width // 15))
    py0 = rng.randint(20, max(21, height // 15))
    px1 = width - rng.randint(20, max(21, width // 15))
    py1 = height - rng.randint(20, max(21, height // 15))
    page = [(px0, py0), (px1, py0), (px1, py1), (px0, py1)]

    margin = 30
    inner_w = px1 - px0 - 2 * margin
    inner_h = py1 - py0 - 2 * margin

    illustrations = []
    ill_band = 0
    for _ in range(n_ills):
        iw = rng.randint(inner_w // 4, inner_w // 2)
        ih = rng.randint(inner_h // 8, inner_h // 4)
        ix = px0 + margin + rng.randint(0, inner_w - iw)
        iy = py0 + margin + ill_band + rng.randint(0, max(1, inner_h // 10))
        ill_band = iy + ih - py0 - margin + 10
        cx, cy = ix + iw / 2, iy + ih / 2
        sides = rng.randint(5, 12)
        phase = rng.random() * 6.283
        pts = []
        for k in range(sides):
            a = phase + 6.283 * k / sides
            r = 0.75 + 0.25 * rng.random()
            pts.append(
                (
                    round(cx + r * iw / 2 * math.cos(a)),
                    round(cy + r * ih / 2 * math.sin(a)),
                )
            )
        illustrations.append(pts)

    lines = []
    top = py0 + margin + ill_band + 10
    avail = py1 - margin - top
    pitch = max(12, avail // max(1, n_lines))
    for i in range(n_lines):
        lh = max(8, int(pitch * rng.uniform(0.45, 0.7)))
        ly = top + i * pitch + rng.randint(0, max(0, pitch - lh - 2))
        lx = px0 + margin + rng.randint(0, inner_w // 10)
        lw = rng.randint(inner_w // 2, inner_w - (lx - px0 - margin))
        slant = rng.randint(-lh // 3, lh // 3)
        lines.append([(lx, ly), (lx + lw, ly + slant), (lx + lw, ly + slant + lh), (lx, ly + lh)])
    return page, lines, illustrations


def draw_page(
    rng: random.Random, width: int, height: int, page, lines, illustrations
) -> PILImage.Image:
    bg = tuple(rng.randint(225, 250) for _ in range(3))
    image = PILImage.new("RGB", (width, height), (rng.randint(150, 200),) * 3)
    draw = ImageDraw.Draw(image)
    draw.polygon(page, fill=bg)
    for line in lines:
        ink = tuple(rng.randint(10, 70) for _ in range(3))
        draw.polygon(line, fill=ink)
    for ill in illustrations:
        fill = (rng.randint(40, 200), rng.randint(40, 200), rng.randint(40, 200))
        draw.polygon(ill, fill=fill, outline=(0, 0, 0))
    return image


def generate(
    path: Path,
    n_pages: int = 1000,
    images_dir: Path | None = None,
    iiif_base_url: str = PLACEHOLDER_BASE_URL,
    *,
    width: int = 1200,
    height: int = 1600,
    lines_per_page: int = 10,
    illustrations_per_page: int = 1,
    seed: int = 0,
    export_version: int = DEFAULT_EXPORT_VERSION,
    server_version: int = 2,
    jpeg_quality: int = 85,
    with_folder: bool = True,
    overwrite: bool = True,
) -> GeneratedExport:
    """Write the export at ``path`` and one image per page in ``images_dir``."""
    from arkindex_export import (
        Dataset,
        DatasetElement,
        Element,
        ElementPath,
        Image,
        ImageServer,
        create_database,
        database,
    )

    path = Path(path)
    images_dir = (
        Path(images_dir) if images_dir else path.with_suffix("").with_name(path.stem + "_images")
    )
    images_dir.mkdir(parents=True, exist_ok=True)
    if path.exists():
        if not overwrite:
            raise FileExistsError(path)
        path.unlink()
    iiif_base_url = iiif_base_url.rstrip("/")

    rng = random.Random(seed)
    create_database(path, export_version)
    now = time.time()
    result = GeneratedExport(
        path=path,
        images_dir=images_dir,
        dataset_id=_uuid(rng),
        iiif_base_url=iiif_base_url,
        n_pages=n_pages,
        seed=seed,
    )

    split_sizes = _split_sizes(n_pages)
    set_of_page = [s for s in SETS for _ in range(split_sizes[s])]
    rng.shuffle(set_of_page)

    images, elements, paths, dataset_elements = [], [], [], []
    folder_id = _uuid(rng)
    if with_folder:
        elements.append(
            {
                "id": folder_id,
                "name": "Synthetic volume",
                "type": "folder",
                "image": None,
                "polygon": None,
                "rotation_angle": 0,
                "mirrored": 0,
                "created": now,
                "updated": now,
            }
        )

    for index in range(n_pages):
        image_id = _uuid(rng)
        page_id = _uuid(rng)
        page, lines, ills = _page_layout(rng, width, height, lines_per_page, illustrations_per_page)
        picture = draw_page(rng, width, height, page, lines, ills)
        picture.save(images_dir / f"{image_id}.jpg", quality=jpeg_quality)

        images.append(
            {
                "id": image_id,
                "server": 1,
                "url": f"{iiif_base_url}/{image_id}",
                "width": width,
                "height": height,
            }
        )
        base = {"image": image_id, "rotation_angle": 0, "mirrored": 0}
        elements.append(
            {
                **base,
                "id": page_id,
                "name": str(index + 1),
                "type": "page",
                "polygon": polygon_json(page),
                "created": now + index,
                "updated": now + index,
            }
        )
        if with_folder:
            paths.append(
                {"id": _uuid(rng), "parent": folder_id, "child": page_id, "ordering": index}
            )
        children = [("illustration", p) for p in ills] + [("text_line", p) for p in lines]
        for ordering, (child_type, polygon) in enumerate(children):
            child_id = _uuid(rng)
            elements.append(
                {
                    **base,
                    "id": child_id,
                    "name": str(ordering + 1),
                    "type": child_type,
                    "polygon": polygon_json(polygon),
                    "created": now + index,
                    "updated": now + index,
                }
            )
            paths.append(
                {"id": _uuid(rng), "parent": page_id, "child": child_id, "ordering": ordering}
            )
        set_name = set_of_page[index]
        dataset_elements.append(
            {
                "id": _uuid(rng),
                "element": page_id,
                "dataset": result.dataset_id,
                "set_name": set_name,
            }
        )
        result.pages_by_set.setdefault(set_name, []).append(page_id)
        result.image_ids.append(image_id)

    with database.atomic():
        ImageServer.create(
            id=1,
            url=iiif_base_url,
            display_name="Loopback IIIF server",
            version=server_version,
        )
        Dataset.create(
            id=result.dataset_id,
            name="Synthetic dataset",
            description="Generated for benchmarks",
            sets=",".join(SETS),
        )
        for model, rows in (
            (Image, images),
            (Element, elements),
            (ElementPath, paths),
            (DatasetElement, dataset_elements),
        ):
            for start in range(0, len(rows), 500):
                model.insert_many(rows[start : start + 500]).execute()
    database.close()
    return result


def rebase_export(path: Path, iiif_base_url: str) -> None:
    """Point every image of the export (and its server) at a new IIIF base URL."""
    iiif_base_url = iiif_base_url.rstrip("/")
    with sqlite3.connect(path) as connection:
        (old,) = connection.execute("SELECT url FROM image_server WHERE id = 1").fetchone()
        if old == iiif_base_url:
            return
        connection.execute("UPDATE image_server SET url = ? WHERE id = 1", (iiif_base_url,))
        connection.execute(
            "UPDATE image SET url = ? || substr(url, ?) WHERE server_id = 1",
            (iiif_base_url, len(old) + 1),
        )
    connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path, help="Where to write the SQLite export")
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--images-dir", type=Path, help="Default: <path stem>_images/")
    parser.add_argument("--iiif-base-url", default=PLACEHOLDER_BASE_URL)
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=1600)
    parser.add_argument("--lines-per-page", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--export-version", type=int, default=DEFAULT_EXPORT_VERSION)
    parser.add_argument("--server-version", type=int, choices=[2, 3], default=2)
    args = parser.parse_args()
    result = generate(
        args.path,
        args.pages,
        args.images_dir,
        args.iiif_base_url,
        width=args.width,
        height=args.height,
        lines_per_page=args.lines_per_page,
        seed=args.seed,
        export_version=args.export_version,
        server_version=args.server_version,
    )
    print(
        json.dumps(
            {
                "path": str(result.path),
                "images_dir": str(result.images_dir),
                "dataset_id": result.dataset_id,
                "pages": {k: len(v) for k, v in result.pages_by_set.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
