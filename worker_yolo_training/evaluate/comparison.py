"""The new model beside a baseline (the version it replaces): the same page-level evaluation of
both on the same val and test elements, per split and class (`metrics.json`'s `baseline` and
`delta`, one Markdown table per split), the elements that got most worse and most better with
their pictures, and whether the new model is worse where the publication guard looks (test, else
val).

Pure functions over two `ElementEvaluation`s, but for the pictures; nothing here runs a model."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from worker_yolo_training.core import ElementTruth, RunLayout, escape, markdown_table, safe_name
from worker_yolo_training.evaluate.classification import RATES
from worker_yolo_training.evaluate.draw import draw_comparison
from worker_yolo_training.evaluate.evaluation import (
    COMPARED_SPLITS,
    Comparison,
    ElementEvaluation,
    Kept,
)

logger = logging.getLogger(__name__)

# Elements shown per split and direction (most worse, most better)
CHANGED = 5
ARROWS = {1: "↑", -1: "↓", 0: "="}


@dataclass(frozen=True)
class ClassSets:
    """The classes both models predict (compared), and those only one of them does."""

    compared: tuple[str, ...]
    only_new: tuple[str, ...]
    only_baseline: tuple[str, ...]


def class_sets(new: Sequence[str], baseline: Sequence[str]) -> ClassSets:
    """Classes by name, as the inference worker creates element types (or classes) by name."""
    return ClassSets(
        tuple(name for name in new if name in baseline),
        tuple(name for name in new if name not in baseline),
        tuple(name for name in baseline if name not in new),
    )


def _difference(new: float | None, old: float | None) -> float | None:
    return None if new is None or old is None else round(new - old, 5)


def _rates(row: Mapping[str, Any]) -> dict[str, float | None]:
    return {rate: None if row.get("absent") else row[rate] for rate in RATES}


def split_delta(
    new: ElementEvaluation, baseline: ElementEvaluation, split: str, classes: ClassSets
) -> dict:
    """New minus baseline: overall precision, recall, F1, and per compared class."""
    rows = {}
    for name in classes.compared:
        now = _rates(new.pages[split]["classes"][name])
        before = _rates(baseline.pages[split]["classes"][name])
        rows[name] = {rate: _difference(now[rate], before[rate]) for rate in RATES}
    overall = {
        rate: _difference(new.overall[split][rate], baseline.overall[split][rate]) for rate in RATES
    }
    return {"all": overall, "classes": rows}


def _cell(old: float | None, new: float | None) -> str:
    if old is None or new is None:
        return "absent"
    old, new = round(old, 3), round(new, 3)
    return f"{old:.3f} → {new:.3f} {ARROWS[(new > old) - (new < old)]}"


def split_table(
    new: ElementEvaluation, baseline: ElementEvaluation, split: str, classes: ClassSets
) -> str:
    """One split: per compared class and overall, baseline → new precision, recall and F1."""
    rows = [
        [escape(name), *(_cell(old[rate], now[rate]) for rate in RATES)]
        for name in classes.compared
        for old, now in [
            (
                _rates(baseline.pages[split]["classes"][name]),
                _rates(new.pages[split]["classes"][name]),
            )
        ]
    ]
    old, now = baseline.overall[split], new.overall[split]
    rows.append(["all", *(_cell(old[rate], now[rate]) for rate in RATES)])
    return markdown_table(["Class", "Precision", "Recall", "F1"], rows)


def element_f1(truth: ElementTruth, kept: Kept) -> float:
    """An element's F1 at the threshold, as the page-level figures count it (1 with nothing to
    find and nothing found)."""
    total = len(truth.objects) + len(kept)
    return round(2 * sum(is_match for _, is_match in kept) / total, 5) if total else 1.0


@dataclass(frozen=True)
class Change:
    element: str
    baseline_f1: float
    new_f1: float


def changes(
    new: ElementEvaluation,
    baseline: ElementEvaluation,
    split: str,
    truths: Sequence[ElementTruth],
    count: int = CHANGED,
) -> tuple[list[Change], list[Change]]:
    """The `count` elements whose F1 fell most, and the `count` whose F1 rose most."""
    found = [
        Change(
            truth.element_id,
            element_f1(truth, baseline.kept[split].get(truth.element_id, ())),
            element_f1(truth, new.kept[split].get(truth.element_id, ())),
        )
        for truth in truths
    ]
    ordered = sorted(found, key=lambda change: change.new_f1 - change.baseline_f1)
    worse = [change for change in ordered if change.new_f1 < change.baseline_f1][:count]
    better = [change for change in reversed(ordered) if change.new_f1 > change.baseline_f1]
    return worse, better[:count]


def _guard(new: ElementEvaluation, baseline: ElementEvaluation, splits: Sequence[str]):
    for split in ("test", "val"):
        if split in splits and new.overall[split]["f1"] is not None:
            old = baseline.overall[split]["f1"]
            return split, new.overall[split]["f1"], old if old is not None else 0.0
    return None


def compare(
    new: ElementEvaluation,
    baseline: ElementEvaluation,
    model: Mapping[str, Any],
    class_names: Sequence[str],
    truths: Mapping[str, Sequence[ElementTruth]],
    layout: RunLayout,
) -> Comparison:
    """Compare on every split both evaluated; draws the changed elements into each split's
    `pages` folder of `layout`."""
    classes = class_sets(class_names, model["class_names"])
    splits = [s for s in COMPARED_SPLITS if s in new.pages and s in baseline.pages]
    delta = {split: split_delta(new, baseline, split, classes) for split in splits}
    sections = [_introduction(model, baseline, classes)]
    for split in splits:
        worse, better = changes(new, baseline, split, truths[split])
        sections.append(f"**{split}**\n\n" + split_table(new, baseline, split, classes))
        names = list(dict.fromkeys([*class_names, *model["class_names"]]))
        sections.append(
            _draw_changes(new, baseline, split, truths[split], (worse, better), names, layout)
        )
    payload = {**model, "compared_classes": list(classes.compared)}
    payload |= {"only_new": list(classes.only_new), "only_baseline": list(classes.only_baseline)}
    markdown = "\n\n".join(filter(None, sections))
    return Comparison(payload, baseline, delta, markdown, _guard(new, baseline, splits))


def _introduction(model: Mapping[str, Any], baseline: ElementEvaluation, classes: ClassSets):
    sentence = (
        f"Compared with {model['name']}, evaluated on the same elements as the inference worker "
        f"runs it (its published confidence threshold {baseline.confidence_threshold:g}): "
        "baseline → new model (↑ higher, ↓ lower, = same)."
    )
    apart = [
        f"{', '.join(f'`{name}`' for name in names)} ({where})"
        for names, where in (
            (classes.only_new, "only in the new model"),
            (classes.only_baseline, "only in the baseline"),
        )
        if names
    ]
    if apart:
        sentence += (
            f" Classes not compared: {'; '.join(apart)}. The `all` rows count the annotations "
            "of every class of this run; the baseline's predictions of other classes are left out."
        )
    return sentence


def _draw_changes(new, baseline, split, truths, found, class_names, layout) -> str:
    """Each changed element drawn (annotations, baseline, new model) in the split's `pages`
    folder; their table."""
    by_id = {truth.element_id: truth for truth in truths}
    rows = []
    for direction, elements in zip(("worse", "better"), found, strict=True):
        for rank, change in enumerate(elements, start=1):
            target = layout.pages(split) / f"{direction}_{rank:02d}_{safe_name(change.element)}.jpg"
            panels = [
                ("baseline", baseline.kept[split].get(change.element, ())),
                ("new model", new.kept[split].get(change.element, ())),
            ]
            draw_comparison(by_id[change.element], panels, class_names, target)
            cells = [f"`{change.element}`", f"{change.baseline_f1:.3f}", f"{change.new_f1:.3f}"]
            rows.append([direction, *cells, f"`{target.relative_to(layout.root)}`"])
    if not rows:
        return f"No element of {split} changed F1."
    header = ["Change", "Element", "Baseline F1", "New F1", "Picture"]
    return f"Elements of {split} whose F1 changed most:\n\n" + markdown_table(header, rows)
