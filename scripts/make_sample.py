"""Regenerate the bundled sample: `python scripts/make_sample.py`.

Ten synthetic pages (text lines as dark bars, one illustration each) in a dataset with train, dev
and test sets, as a real-schema export plus one JPEG per image.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.exports import ExportBuilder, rectangle, seed_ids  # noqa: E402

SAMPLE = ROOT / "worker_yolo_training" / "sample"
WIDTH, HEIGHT = 480, 640
SETS = ["train"] * 6 + ["dev"] * 2 + ["test"] * 2


def draw_page(rng: random.Random, draw: ImageDraw.ImageDraw, left: int, top: int):
    """Draw one page; returns its text line and illustration boxes (full-image coordinates)."""
    width, height = WIDTH - 2 * left, HEIGHT - 2 * top
    draw.rectangle([left, top, left + width, top + height], fill=(245, 240, 228))
    illustration_top = top + rng.randint(20, height // 2)
    illustration = (left + rng.randint(20, 80), illustration_top, rng.randint(120, 220), 110)
    x, y, w, h = illustration
    color = tuple(rng.randint(40, 160) for _ in range(3))
    draw.ellipse([x, y, x + w, y + h], fill=color, outline=(20, 20, 20), width=3)
    lines, line_y = [], top + 20
    while line_y + 14 < top + height - 10:
        if y - 18 <= line_y <= y + h + 6:
            line_y = y + h + 12
            continue
        line_x = left + 16 + rng.random()
        line_w = rng.randint(width // 2, width - 40) + 0.5
        word_x = line_x
        while word_x < line_x + line_w - 8:
            word_w = min(rng.randint(15, 50), line_x + line_w - word_x)
            draw.rectangle([word_x, line_y + 2, word_x + word_w, line_y + 11], fill=(35, 30, 30))
            word_x += word_w + rng.randint(5, 9)
        lines.append((line_x, line_y + 0.25, line_w, 13))
        line_y += 24
    return lines, illustration


def main() -> None:
    rng = random.Random(7)
    seed_ids(7)
    images_dir = SAMPLE / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    for old in images_dir.glob("*.jpg"):
        old.unlink()
    builder = ExportBuilder(SAMPLE / "export.sqlite", iiif_base="https://iiif.example.org/iiif/2")
    dataset = builder.dataset("Sample pages", ("train", "dev", "test"))
    for index, set_name in enumerate(SETS):
        image = Image.new("RGB", (WIDTH, HEIGHT), (90, 80, 70))
        draw = ImageDraw.Draw(image)
        left, top = rng.randint(10, 30), rng.randint(10, 30)
        lines, illustration = draw_page(rng, draw, left, top)
        record = builder.image(WIDTH, HEIGHT)
        image.save(images_dir / f"{record.id}.jpg", quality=60)
        page = builder.element(
            "page",
            rectangle(left, top, WIDTH - 2 * left, HEIGHT - 2 * top),
            record,
            name=str(index + 1),
        )
        builder.element("illustration", rectangle(*illustration), record, parents=(page,))
        for number, line in enumerate(lines, start=1):
            builder.element(
                "text_line", rectangle(*line), record, parents=(page,), name=str(number)
            )
        builder.add_to_set(dataset, set_name, page)
    builder.close()
    print(f"Sample written to {SAMPLE}")


if __name__ == "__main__":
    main()
