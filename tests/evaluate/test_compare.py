"""The comparison with a baseline, for every mode: two real (untrained) Ultralytics models
evaluated by the page-level evaluation (the classifier's in classify mode), each model's own
predictions taken as the annotations of some elements so that the new model gets better on some
and worse on others; then the tables, `delta`, the pictures and the publication guard."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.helpers import SAMPLE, element_truth
from worker_yolo_training.core import Mode, RunLayout
from worker_yolo_training.evaluate import (
    COMPARISON_HEADING,
    changes,
    class_sets,
    compare,
    draw_element,
    element_f1,
    evaluate_classifier,
    evaluate_pages,
)
from worker_yolo_training.extract import SplitReport
from worker_yolo_training.publish import model_description, training_metadata

NAMES = ["text_line", "illustration"]
ELEMENTS = 6  # per split: even ones annotated with the new model's output, odd with the baseline's
SIZE = 64
NETWORKS = {
    Mode.Segment: ("SegmentationModel", "yolov8n-seg.yaml", "segment"),
    Mode.BBox: ("DetectionModel", "yolov8n.yaml", "detect"),
    Mode.OBB: ("OBBModel", "yolov8n-obb.yaml", "obb"),
    Mode.Classify: ("ClassificationModel", "yolov8n-cls.yaml", "classify"),
}


def checkpoint(path: Path, mode: Mode, seed: int, names=NAMES) -> Path:
    """An untrained network saved as training saves it (prediction size in its train_args)."""
    from ultralytics.nn import tasks

    kind, definition, task = NETWORKS[mode]
    torch.manual_seed(seed)
    network = getattr(tasks, kind)(definition, nc=len(names), verbose=False)
    network.names = dict(enumerate(names))
    torch.save({"model": network, "train_args": {"imgsz": SIZE, "task": task}}, path)
    return path


def element_images(folder: Path, mode: Mode = Mode.Segment) -> dict[str, list]:
    """Val and test elements: sample pages as 64 px thumbnails (no annotation yet; classify:
    any class)."""
    objects = [(NAMES[0], ())] if mode is Mode.Classify else []
    sources = sorted((SAMPLE / "images").glob("*.jpg"))
    splits = {}
    for offset, split in enumerate(("val", "test")):
        elements = []
        for index in range(ELEMENTS):
            image = folder / f"{split}{index}.jpg"
            with Image.open(sources[offset * ELEMENTS + index]) as full:
                full.thumbnail((SIZE, SIZE))
                full.save(image)
            elements.append(
                element_truth(f"{split}{index}", objects, image=image, width=640, height=900)
            )
        splits[split] = elements
    return splits


def evaluate(mode: Mode, weights: Path, splits, root: Path, names=NAMES, pictures=True, max_det=4):
    layout = RunLayout(root)
    if mode is Mode.Classify:
        return evaluate_classifier(weights, splits, names, layout, fixed_threshold=0.001)
    use_segment = names if mode is Mode.Segment else []
    return evaluate_pages(weights, splits, names, use_segment, oriented=mode is Mode.OBB,
                          layout=layout, max_det=max_det, fixed_threshold=0.001,
                          pictures=pictures)  # fmt: skip


def outputs(root: Path, split: str) -> dict[str, list]:
    """What a model created on each element: its objects (classify: its class)."""
    created = {}
    for text in (RunLayout(root).predictions(split)).read_text().splitlines():
        line = json.loads(text)
        if "predictions" in line:
            created[line["element"]] = [
                (p["class"], tuple(map(tuple, p["polygon"]))) for p in line["predictions"]
            ]
        else:
            created[line["element"]] = [(line["class_name"], ())]
    return created


@pytest.fixture(params=list(NETWORKS), ids=lambda mode: mode.value)
def compared(request, tmp_path):
    """Both models evaluated twice (the classifier at any max_det): first to see what each creates, then on elements annotated
    with the new model's output (even ones) or the baseline's (odd ones)."""
    mode = request.param
    new = checkpoint(tmp_path / "new.pt", mode, seed=7)
    # Untrained classifiers give every image the same class: the baseline names them the other
    # way round (its classes in another order)
    old_names = NAMES[::-1] if mode is Mode.Classify else NAMES
    old = checkpoint(tmp_path / "old.pt", mode, seed=5, names=old_names)
    splits = element_images(tmp_path, mode)
    evaluate(mode, new, splits, tmp_path / "seen-new")
    # Untrained detectors find the same boxes whatever their seed: the baseline keeps fewer, as
    # if published with a lower max_detection
    evaluate(mode, old, splits, tmp_path / "seen-old", max_det=1)
    for split, elements in splits.items():
        by = [outputs(tmp_path / "seen-new", split), outputs(tmp_path / "seen-old", split)]
        splits[split] = [
            replace(e, objects=tuple(by[index % 2][e.element_id]))
            for index, e in enumerate(elements)
        ]
    new_evaluation = evaluate(mode, new, splits, tmp_path)
    old_evaluation = evaluate(mode, old, splits, tmp_path / "baseline", pictures=False, max_det=1)
    model = {"name": "model version 42", "class_names": NAMES, "task": NETWORKS[mode][2]}
    layout = RunLayout(tmp_path)
    comparison = compare(new_evaluation, old_evaluation, model, NAMES, splits, layout)
    return mode, splits, new_evaluation, old_evaluation, comparison, layout


def test_delta_and_metrics_have_the_runs_shape(compared):
    _, _, new, old, comparison, _ = compared
    metrics = comparison.metrics
    assert metrics["baseline"]["pages"] == old.pages and set(old.pages) == {"val", "test"}
    assert metrics["baseline"]["model"]["name"] == "model version 42"
    assert metrics["baseline"]["model"]["compared_classes"] == NAMES
    for split in ("val", "test"):
        assert set(old.pages[split]) == set(new.pages[split])
        for rate in ("precision", "recall", "f1"):
            expected = round(new.overall[split][rate] - old.overall[split][rate], 5)
            assert metrics["delta"][split]["all"][rate] == expected
        assert set(metrics["delta"][split]["classes"]) == set(NAMES)


def test_changed_elements_are_those_each_model_annotated(compared):
    _, splits, new, old, comparison, layout = compared
    drawn = 0
    for split, elements in splits.items():
        worse, better = changes(new, old, split, elements)
        scores = {
            e.element_id: (
                element_f1(e, old.kept[split][e.element_id]),
                element_f1(e, new.kept[split][e.element_id]),
            )
            for e in elements
        }
        # Each model scores 1 on the elements annotated with its own output (scores: old, new)
        assert all(scores[e.element_id][1 - index % 2] == 1.0 for index, e in enumerate(elements))
        assert {c.element for c in better} == {e for e, (o, n) in scores.items() if n > o}
        assert {c.element for c in worse} == {e for e, (o, n) in scores.items() if n < o}
        assert all(int(c.element[-1]) % 2 == 0 for c in better)
        assert all(int(c.element[-1]) % 2 == 1 for c in worse)
        folder = layout.pages(split)
        by_id = {e.element_id: e for e in elements}
        for direction, found in (("worse", worse), ("better", better)):
            for rank, change in enumerate(found, start=1):
                picture = folder / f"{direction}_{rank:02d}_{change.element}.jpg"
                alone = draw_element(by_id[change.element], [], NAMES, layout.root / "a.jpg")
                with Image.open(picture) as opened, Image.open(alone) as panel:
                    # annotations, baseline, new: three panels side by side, under titles
                    assert opened.width >= 3 * panel.width
                    assert opened.height > panel.height
                assert f"`{picture.relative_to(layout.root)}`" in comparison.markdown
                drawn += 1
    assert drawn


def test_tables_render_in_the_description(compared):
    mode, _, new, old, comparison, _ = compared
    markdown = comparison.markdown
    assert "Compared with model version 42" in markdown
    for split in ("val", "test"):
        table = markdown.split(f"**{split}**")[1]
        assert "| Class | Precision | Recall | F1 |" in table
        before, after = old.overall[split]["f1"], new.overall[split]["f1"]
        arrow = "↑" if round(after, 3) > round(before, 3) else "↓" if after < before else "="
        assert f"{before:.3f} → {after:.3f} {arrow} |" in table.split("| all |")[1].splitlines()[0]
        assert all(f"| {name} |" in table for name in NAMES)
    metadata = training_metadata(
        mode=mode, task="task", class_names=NAMES, image_size=SIZE, model_size="v8n",
        ultralytics_version="8", confidence_threshold=0.001, confidence_threshold_source="fixed",
        dataset_splits={"val": SplitReport(elements=ELEMENTS, images=ELEMENTS)},
        largest_element_objects=4, max_detection=None,
    )  # fmt: skip
    description = model_description(metadata, new.table, "", "", "View", comparison=markdown)
    assert description.index("## View") < description.index(f"## {COMPARISON_HEADING}")
    assert markdown.strip() in description


def test_guard_reads_test(compared):
    _, _, new, old, comparison, _ = compared
    split, now, before = comparison.guard
    assert (split, now, before) == ("test", new.overall["test"]["f1"], old.overall["test"]["f1"])
    refusal = comparison.refusal()
    if now < before:
        assert refusal == f"not published: F1 {now:.3f} < {before:.3f} of model version 42 on test"
    else:
        assert refusal is None
    worse_model = replace(comparison, guard=("test", 0.81, 0.84))
    assert worse_model.refusal() == "not published: F1 0.810 < 0.840 of model version 42 on test"
    assert replace(comparison, guard=("val", 0.84, 0.84)).refusal() is None
    close = replace(comparison, guard=("val", 0.82498, 0.82502)).refusal()
    assert close == "not published: F1 0.82498 < 0.82502 of model version 42 on val"


def test_classes_in_one_model_only_are_listed_not_compared(tmp_path):
    sets = class_sets(["text_line", "illustration"], ["text_line", "figure"])
    assert sets.compared == ("text_line",)
    assert (sets.only_new, sets.only_baseline) == (("illustration",), ("figure",))
    splits = element_images(tmp_path)
    other = ["text_line", "figure"]
    new = evaluate(Mode.Segment, checkpoint(tmp_path / "n.pt", Mode.Segment, 1), splits, tmp_path)
    weights = checkpoint(tmp_path / "o.pt", Mode.Segment, 5, names=other)
    old = evaluate(Mode.Segment, weights, splits, tmp_path / "baseline", pictures=False)
    # The baseline's `figure` predictions are left out: this dataset annotates no such class
    for split in ("val", "test"):
        created = outputs(tmp_path / "baseline", split).values()
        assert {name for objects in created for name, _ in objects} <= {"text_line"}
    model = {"name": "old", "class_names": other}
    comparison = compare(new, old, model, NAMES, splits, RunLayout(tmp_path))
    markdown = comparison.markdown
    assert (
        "Classes not compared: `illustration` (only in the new model); `figure` (only in the baseline)"
        in markdown
    )
    assert "| text_line |" in markdown and "| illustration |" not in markdown
    assert set(comparison.delta["val"]["classes"]) == {"text_line"}
    assert comparison.model["only_new"] == ["illustration"]
    assert comparison.model["only_baseline"] == ["figure"]
