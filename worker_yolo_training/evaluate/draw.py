"""Pictures of the page-level evaluation: an element image with its annotations in one colour, the
predictions kept at the threshold in another, each with its class name and confidence, under a
legend band (colours, classes with their counts on this element, the element's F1)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from worker_yolo_training.core import ElementTruth, Prediction, printable
from worker_yolo_training.evaluate.score import worst_elements

# Okabe-Ito blue and orange: told apart with the common colour-vision deficiencies
TRUTH_COLOUR = (0, 114, 178)
PREDICTION_COLOUR = (230, 159, 0)
PICTURES = 12
WORST = 8
MIN_SIDE = 800  # longest side of a picture, at least


def picture_choice(
    elements: Sequence[dict], count: int = PICTURES, worst: int = WORST
) -> list[str]:
    """The elements to draw: the `worst` lowest by F1 (most errors first on a tie), then others
    spread evenly over the rest from worse to better, `count` in all."""
    ranked = worst_elements(elements, len(elements))
    chosen, rest = ranked[:worst], ranked[worst:]
    others = min(count - len(chosen), len(rest))
    if others > 0:
        step = len(rest) / others
        chosen += [rest[int(index * step)] for index in range(others)]
    return [element["element"] for element in chosen]


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont:
    # DejaVu Sans (matplotlib's, as train.prepare_environment uses) covers non-ASCII names
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except (ImportError, OSError):
        return ImageFont.load_default(size)


def _annotations_legend(
    truth: ElementTruth, class_names: Sequence[str]
) -> list[tuple[str, tuple[int, int, int]]]:
    expected = Counter(name for name, _ in truth.objects)
    lines = [(truth.element_id, (0, 0, 0)), ("annotation", TRUTH_COLOUR)]
    return lines + [
        (f"{name}: {expected[name]} annotated", (0, 0, 0)) for name in class_names if expected[name]
    ]


def _legend(
    truth: ElementTruth, kept: Sequence[tuple[Prediction, bool]], class_names: Sequence[str]
) -> list[tuple[str, tuple[int, int, int]]]:
    expected = Counter(name for name, _ in truth.objects)
    found = Counter(p.class_name for p, _ in kept)
    matched = Counter(p.class_name for p, is_match in kept if is_match)
    total = len(truth.objects) + len(kept)
    f1 = 2 * sum(matched.values()) / total if total else 1.0
    lines = [
        (f"{printable(truth.element_id)}  F1 {f1:.2f}", (0, 0, 0)),
        ("annotation", TRUTH_COLOUR),
        ("prediction: class, confidence (✗: matches no annotation)", PREDICTION_COLOUR),
    ]
    lines += [
        (
            f"{name}: {expected[name]} annotated, {found[name]} predicted, {matched[name]} matched",
            (0, 0, 0),
        )
        for name in class_names
        if expected[name] or found[name]
    ]
    # A class given to the whole element (classify mode) has no outline to label
    lines += [
        (f"predicted: {prediction_label(p, is_match)}", PREDICTION_COLOUR)
        for p, is_match in kept
        if not p.polygon
    ]
    return lines


def prediction_label(prediction: Prediction, is_match: bool) -> str:
    """What a prediction is labelled with in a picture: its class and confidence, and ✗ when it
    matches no annotation (`text_line 0.22 ✗`)."""
    return f"{prediction.class_name} {prediction.confidence:.2f}" + ("" if is_match else " ✗")


def draw_element(
    truth: ElementTruth,
    kept: Sequence[tuple[Prediction, bool]],
    class_names: Sequence[str],
    target: Path,
) -> Path:
    """Draw one element (predictions with whether each is matched) into a JPEG at `target`."""
    return _save(element_picture(truth, kept, class_names), target)


def draw_comparison(
    truth: ElementTruth,
    panels: Sequence[tuple[str, Sequence[tuple[Prediction, bool]]]],
    class_names: Sequence[str],
    target: Path,
) -> Path:
    """One element side by side: its annotations alone, then each (title, predictions) panel
    (the baseline's, the new model's), into a JPEG at `target`."""
    pictures = [("annotations", element_picture(truth, None, class_names))]
    pictures += [(title, element_picture(truth, kept, class_names)) for title, kept in panels]
    size = max(12, round(max(pictures[0][1].size) / 40))
    font, band = _font(size), round(size * 1.6)
    width = sum(picture.width for _, picture in pictures) + size * (len(pictures) - 1)
    height = band + max(picture.height for _, picture in pictures)
    sheet = Image.new("RGB", (width, height), "white")
    draw, left = ImageDraw.Draw(sheet), 0
    for title, picture in pictures:
        draw.text((left + size // 2, size // 4), title, fill=(0, 0, 0), font=font)
        sheet.paste(picture, (left, band))
        left += picture.width + size
    return _save(sheet, target)


def _save(picture: Image.Image, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    picture.save(target, quality=90)
    return target


def element_picture(
    truth: ElementTruth,
    kept: Sequence[tuple[Prediction, bool]] | None,
    class_names: Sequence[str],
) -> Image.Image:
    """One element with its annotations and the predictions kept (None: annotations only),
    under the legend band."""
    with Image.open(truth.image) as source:
        image = source.convert("RGB")
    # Thumbnails can be small: enlarge them so that labels stay readable
    zoom = max(1.0, MIN_SIDE / max(image.size))
    image = image.resize((round(image.width * zoom), round(image.height * zoom)))
    scale_x, scale_y = image.width / truth.width, image.height / truth.height
    size = max(12, round(max(image.size) / 60))
    font, line = _font(size), round(size * 1.3)
    legend = (
        _annotations_legend(truth, class_names)
        if kept is None
        else _legend(truth, kept, class_names)
    )
    kept = kept or ()
    band = line * len(legend) + size // 2
    text_width = max(font.getlength(text) for text, _ in legend) + size
    picture = Image.new("RGB", (max(image.width, round(text_width)), image.height + band), "white")
    picture.paste(image, (0, band))
    draw = ImageDraw.Draw(picture)
    for index, (text, colour) in enumerate(legend):
        draw.text((size // 2, size // 4 + index * line), text, fill=colour, font=font)
    width = max(2, round(max(image.size) / 400))

    def points(polygon) -> list[tuple[float, float]]:
        return [(x * scale_x, y * scale_y + band) for x, y in polygon]

    for _, polygon in truth.objects:
        if len(polygon) >= 2:
            draw.line([*points(polygon), points(polygon)[0]], fill=TRUTH_COLOUR, width=width)
    for prediction, is_match in kept:
        if len(prediction.polygon) < 2:
            continue
        outline = points(prediction.polygon)
        draw.line([*outline, outline[0]], fill=PREDICTION_COLOUR, width=width)
        x, y = min(outline, key=lambda point: (point[1], point[0]))
        text = prediction_label(prediction, is_match)
        left, top, right, bottom = draw.textbbox((x, y), text, font=font, anchor="lb")
        draw.rectangle((left, top, right, bottom), fill=PREDICTION_COLOUR)
        draw.text((x, y), text, fill="black", font=font, anchor="lb")
    return picture
