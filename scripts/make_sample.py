"""Regenerate the bundled sample: `python scripts/make_sample.py [OUTPUT_DIR]`.

Synthetic scanned pages that the nano architecture learns from scratch in the demo's minute or two:
text lines drawn as rows of dark words, illustrations as framed pictures, always in the same style
on the same paper, at varied positions and counts. Each page also has a visual class for the
classify mode — `text` (many lines), `illustrated` (one or two pictures, a few lines) or `blank`
(at most two short lines) — in the export's `classification` table, with a few pages that exercise
the rules of choice (see `CLASSIFICATION_CASES`). Written as a real-schema export plus one JPEG per
image, into `worker_yolo_training/sample` by default; seeded, so the output is the same byte for
byte on every run.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.exports import ExportBuilder, rectangle, seed_ids  # noqa: E402

SAMPLE = ROOT / "worker_yolo_training" / "sample"
WIDTH, HEIGHT = 300, 400
SCAN_BACKGROUND, PAPER, INK, FRAME = (90, 80, 70), (245, 240, 228), (30, 28, 28), (25, 25, 25)
LINE_HEIGHT, LINE_GAP = 18, 14
PAGE_CLASSES = ("text", "illustrated", "blank")
# Pages per set and class: every class in every set, so that both modes learn and are evaluated
SETS = {
    "train": {"text": 9, "illustrated": 10, "blank": 5},
    "dev": {"text": 2, "illustrated": 2, "blank": 1},
    "test": {"text": 2, "illustrated": 2, "blank": 1},
}
# Pages whose classifications exercise the classify mode's rules, by (set, page index in its set).
# Other pages get one manual classification, their visual class. "wrong" is another class, listed
# first so that taking the first classification (the reference's rule) gives the wrong answer.
CLASSIFICATION_CASES = {
    # unclassified: no classification at all
    ("train", 0): (),
    # a manual classification wins over a more confident automatic one that disagrees
    ("train", 1): (("wrong", 0.97, "classifier-a"), ("right", 1.0, None)),
    # two automatic classes with the same confidence: ambiguous
    ("train", 2): (("wrong", 0.5, "classifier-a"), ("right", 0.5, "classifier-b")),
    # two automatic classes of different confidence: the more confident one wins
    ("dev", 0): (("wrong", 0.35, "classifier-a"), ("right", 0.85, "classifier-b")),
    # a class that is not in class_names is ignored, whatever its confidence
    ("test", 0): (("damaged", 0.99, "classifier-a"), ("right", 0.9, "classifier-b")),
}

Box = tuple[float, float, float, float]


def draw_line(rng: random.Random, draw: ImageDraw.ImageDraw, x: float, y: float, width: float):
    """A text line of dark words filling the box (x, y, width, LINE_HEIGHT); returns that box."""
    word_x = x
    while word_x < x + width - 6:
        word_width = min(rng.randint(12, 40), x + width - word_x)
        draw.rectangle([word_x, y, word_x + word_width, y + LINE_HEIGHT], fill=INK)
        word_x += word_width + rng.randint(5, 8)
    return (x, y, word_x - rng.randint(5, 8) - x + 1, LINE_HEIGHT + 1)


def draw_lines(
    rng: random.Random, draw: ImageDraw.ImageDraw, x: float, y: float, width: float, count: int
) -> list[Box]:
    """`count` left-aligned lines of varied length from (x, y) down."""
    lines = []
    for number in range(count):
        length = width if number < count - 1 else width * rng.uniform(0.3, 0.8)
        length *= rng.uniform(0.85, 1.0)
        lines.append(draw_line(rng, draw, x + rng.random(), y + rng.random(), length))
        y += LINE_HEIGHT + LINE_GAP
    return lines


def draw_illustration(rng: random.Random, draw: ImageDraw.ImageDraw, box: Box) -> Box:
    """A framed picture (sky, hill, sun) filling the box; returns the box."""
    x, y, width, height = box
    right, bottom = x + width, y + height
    sky = rng.choice([(120, 170, 210), (200, 140, 110), (150, 190, 150), (170, 150, 200)])
    draw.rectangle([x, y, right, bottom], fill=sky, outline=FRAME, width=4)
    hill = rng.choice([(60, 110, 60), (110, 80, 50), (70, 70, 120)])
    peak = x + rng.uniform(0.3, 0.7) * width
    draw.polygon(
        [(x + 4, bottom - 4), (peak, y + height * 0.35), (right - 4, bottom - 4)], fill=hill
    )
    radius = min(width, height) * 0.12
    sun_x, sun_y = x + rng.uniform(0.2, 0.8) * width, y + height * 0.25
    draw.ellipse(
        [sun_x - radius, sun_y - radius, sun_x + radius, sun_y + radius], fill=(240, 210, 60)
    )
    return box


def text_page(rng: random.Random, draw: ImageDraw.ImageDraw, page: Box):
    """Many lines: one full-width column, or two narrower columns."""
    x, y, width, height = page
    rows = int((height - 40) // (LINE_HEIGHT + LINE_GAP))
    top = y + rng.randint(18, 30)
    if rng.random() < 0.3:
        column = (width - 50) / 2
        lines = draw_lines(rng, draw, x + 18, top, column, rng.randint(rows - 3, rows))
        lines += draw_lines(rng, draw, x + 32 + column, top, column, rng.randint(rows - 3, rows))
        return lines, []
    return draw_lines(rng, draw, x + 18, top, width - 36, rng.randint(rows - 4, rows)), []


def illustrated_page(rng: random.Random, draw: ImageDraw.ImageDraw, page: Box):
    """One or two rows of one or two pictures at varied places, a few lines around them."""
    x, y, width, height = page
    lines, illustrations, cursor = [], [], y + rng.randint(14, 24)
    rows = rng.choice([1, 2, 2])
    for row in range(rows):
        if rng.random() < 0.6:
            count = rng.randint(1, 2)
            lines += draw_lines(rng, draw, x + 18, cursor, width - 36, count)
            cursor += count * (LINE_HEIGHT + LINE_GAP)
        room = y + height - cursor - 24 - (rows - 1 - row) * 80
        row_height = rng.uniform(60, min(170 if rows == 1 else 110, room))
        pictures = rng.choice([1, 1, 2])
        slot = (width - 36 - (pictures - 1) * 14) / pictures
        for number in range(pictures):
            picture_width = rng.uniform(0.55, 1.0) * slot
            left = x + 18 + number * (slot + 14) + rng.random() * (slot - picture_width)
            picture_height = row_height * rng.uniform(0.8, 1.0)
            illustrations.append(
                draw_illustration(rng, draw, (left, cursor, picture_width, picture_height))
            )
        cursor += row_height + LINE_GAP + 2
    count = min(rng.randint(0, 3), int((y + height - 20 - cursor) // (LINE_HEIGHT + LINE_GAP)))
    lines += draw_lines(rng, draw, x + 18, cursor, width - 36, count)
    return lines, illustrations


def blank_page(rng: random.Random, draw: ImageDraw.ImageDraw, page: Box):
    """Mostly empty: maybe a short heading near the top, maybe a page number at the bottom."""
    x, y, width, height = page
    lines = []
    if rng.random() < 0.6:
        length = rng.uniform(0.25, 0.5) * width
        lines.append(
            draw_line(rng, draw, x + (width - length) / 2, y + rng.randint(20, 60), length)
        )
    if rng.random() < 0.5:
        lines.append(draw_line(rng, draw, x + width / 2 - 10, y + height - 40, 20))
    return lines, []


LAYOUTS: dict[str, Callable] = {
    "text": text_page,
    "illustrated": illustrated_page,
    "blank": blank_page,
}


def classifications(case: tuple, page_class: str) -> list[tuple[str, float, str | None]]:
    """(class name, confidence, worker run name or None for manual) of one page, in order."""
    if case is None:
        return [(page_class, 1.0, None)]
    wrong = PAGE_CLASSES[(PAGE_CLASSES.index(page_class) + 1) % len(PAGE_CLASSES)]
    names = {"right": page_class, "wrong": wrong}
    return [(names.get(name, name), confidence, run) for name, confidence, run in case]


def write_sample(output: Path) -> None:
    """Write export.sqlite and images/ into `output` (replacing any previous sample there)."""
    rng = random.Random(7)
    seed_ids(7)
    images_dir = output / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    for old in images_dir.glob("*.jpg"):
        old.unlink()
    builder = ExportBuilder(output / "export.sqlite", iiif_base="https://iiif.example.org/iiif/2")
    dataset = builder.dataset("Sample pages", tuple(SETS))
    runs = {name: builder.worker_run() for name in ("classifier-a", "classifier-b")}
    number = 0
    for set_name, classes in SETS.items():
        page_classes = [name for name, count in classes.items() for _ in range(count)]
        rng.shuffle(page_classes)
        for index, page_class in enumerate(page_classes):
            number += 1
            image = Image.new("RGB", (WIDTH, HEIGHT), SCAN_BACKGROUND)
            draw = ImageDraw.Draw(image)
            left, top = rng.randint(6, 24), rng.randint(6, 24)
            page_box = (
                left,
                top,
                WIDTH - left - rng.randint(6, 24),
                HEIGHT - top - rng.randint(6, 24),
            )
            draw.rectangle([left, top, left + page_box[2], top + page_box[3]], fill=PAPER)
            lines, illustrations = LAYOUTS[page_class](rng, draw, page_box)
            record = builder.image(WIDTH, HEIGHT)
            image.save(images_dir / f"{record.id}.jpg", quality=75)
            page = builder.element("page", rectangle(*page_box), record, name=str(number))
            for box in illustrations:
                builder.element("illustration", rectangle(*box), record, parents=(page,))
            for line_number, box in enumerate(lines, start=1):
                builder.element(
                    "text_line", rectangle(*box), record, parents=(page,), name=str(line_number)
                )
            builder.add_to_set(dataset, set_name, page)
            for class_name, confidence, run in classifications(
                CLASSIFICATION_CASES.get((set_name, index)), page_class
            ):
                builder.classification(page, class_name, confidence, runs.get(run))
    builder.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", type=Path, default=SAMPLE, help="default: %(default)s")
    output = parser.parse_args().output
    write_sample(output)
    print(f"Sample written to {output}")


if __name__ == "__main__":
    main()
