"""Agreement between our classify-mode evaluation and Teklia's YOLO classifier (not in CI).

Runs the real `YOLOClassifier` of `teklia-yolo-worker==1.4.3` (`worker_yolo/classifier.py`) in
its own venv (`/tmp/segvenv`, shared with segmenter_agreement.py, created on first use) on the
elements of each split of a classify run, as Arkindex runs it: a worker run (not `--dev`) whose
API client is a fake (classifier_driver.py) that serves the worker run and its configuration and
records the classifier's own calls (`ListCorpusMLClasses`, `CreateMLClass`,
`CreateClassification`). The configuration is merged as Arkindex merges it: the classifier's
defaults (the `YOLOWorker` keys of tests/data/yolo_segmenter_configuration.json), then the model
version's configuration (`<run>/model_version.json`), then the user's values (`--user KEY=JSON`).

It compares, per element, the class and confidence the classifier finds and creates with our
page-level predictions (`<run>/eval_<split>/pages/predictions.jsonl`), the elements left without
a class under the threshold, the ML class names it creates (the model's `class_names`, never
indices), and the accuracy its creations give against the elements' classes with our
`metrics.json` `pages` figures.

    # A classify run on the sample (its images served over IIIF), then the classifier on it
    .venv/bin/python benchmarks/classifier_agreement.py --run /tmp/clsbench/run --train
    # An existing run whose evaluation read the same IIIF rendering
    .venv/bin/python benchmarks/classifier_agreement.py --run RUN --user confidence_threshold=0.9
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.segmenter_agreement import (  # noqa: E402
    SEGMENTER_TABLE,
    ensure_venv,
    published_configuration,
    split_elements,
)
from benchmarks.segmenter_runs import SAMPLE_IIIF_BASE, worker_over_iiif  # noqa: E402
from tests.iiif_server import IIIFServer  # noqa: E402

SAMPLE = ROOT / "worker_yolo_training" / "sample"
DRIVER = Path(__file__).with_name("classifier_driver.py")
CORPUS = "22222222-2222-4222-8222-222222222222"
AGREEMENT = 0.99


def classifier_defaults() -> dict:
    """The classifier's defaults: the keys of the shared `YOLOWorker.configure` (worker.py)."""
    fields = json.loads(SEGMENTER_TABLE.read_text())["fields"]
    return {
        key: field["default"]
        for key, field in fields.items()
        if field["source"].startswith("worker.py")
    }


def api_answers(published: Mapping, user: Mapping) -> dict:
    """What the fake API serves a classifier run: the worker run (with its model version's
    configuration) and the merged configuration, in RetrieveWorkerRunConfiguration's form."""
    merged = {**classifier_defaults(), **published, **user}
    worker_run = {
        "id": "11111111-1111-4111-8111-111111111111",
        "summary": "YOLO classifier (agreement benchmark)",
        "process": {"id": "33333333-3333-4333-8333-333333333333", "corpus": CORPUS},
        "worker_version": {"worker": {"slug": "yolo-classifier", "name": "YOLO classifier"}},
        "model_version": {
            "id": "44444444-4444-4444-8444-444444444444",
            "model": {"id": "55555555-5555-4555-8555-555555555555", "name": "classify"},
            "configuration": dict(published),
        },
    }
    items = [{"key": k, "value": v, "secret": False} for k, v in merged.items()]
    return {"worker_run": worker_run, "configuration": {"configuration": items}}


def run_classifier(
    python: Path, model_dir: Path, elements: list[dict] | None, answers: dict, scratch: Path
) -> dict:
    """The classifier's driver on these elements (None: `configure()` only); returns its output."""
    api, listed, output = (scratch / name for name in ("api.json", "elements.json", "out.json"))
    api.write_text(json.dumps(answers))
    if elements is not None:
        listed.write_text(json.dumps(elements))
    command = [str(python), str(DRIVER), str(api), str(model_dir)]
    command += [str(listed) if elements is not None else "-", str(output)]
    subprocess.run(command, check=True, cwd=scratch)
    return json.loads(output.read_text())


# ------------------------------------------------------------------------- comparison


def created_classifications(calls: list[dict]) -> dict[str, dict]:
    """Per element, the classification the classifier would create: the ML class by name (from
    its own `CreateMLClass` calls) and the confidence."""
    names, created = {}, {}
    for index, call in enumerate(calls, start=1):
        if call["operation"] == "CreateMLClass":
            names[f"ml-class-{index}"] = call["body"]["name"]
        elif call["operation"] == "CreateClassification":
            body = call["body"]
            created[body["element"]] = {
                "class": names.get(body["ml_class"], body["ml_class"]),
                "confidence": body["confidence"],
            }
    return created


def read_ours(path: Path) -> dict[str, dict]:
    """Our page-level predictions: per element, its class, the predicted class and confidence."""
    return {
        record["element"]: record
        for record in map(json.loads, path.read_text().splitlines())
        if record
    }


def compare(ours: Mapping[str, dict], output: Mapping, threshold: float, names: list) -> dict:
    """Class per element, confidence gaps, the elements left unclassified, the ML class names,
    and what the classifier's creations score against the elements' classes."""
    predictions, calls = output["predictions"], output["calls"]
    created = created_classifications(calls)
    elements = sorted(ours)
    same = [e for e in elements if predictions[e]["class"] == ours[e]["class_name"]]
    gaps = [abs(predictions[e]["confidence"] - ours[e]["confidence"]) for e in elements]
    ours_unclassified = {e for e in elements if ours[e]["confidence"] < threshold}
    theirs_unclassified = set(elements) - set(created)
    ml_classes = [c["body"]["name"] for c in calls if c["operation"] == "CreateMLClass"]
    correct = sum(created[e]["class"] == ours[e]["truth"] for e in created)
    return {
        "elements": len(elements),
        "processed": len(predictions),
        "same_class": len(same),
        "agreement": len(same) / len(elements) if elements else 1.0,
        "different": {e: (ours[e]["class_name"], predictions[e]["class"]) for e in elements if e not in same},
        "confidence_gap": max(gaps, default=0.0),
        "created": len(created),
        "created_as_predicted": sum(created[e] == predictions[e] for e in created),
        "unclassified": sorted(theirs_unclassified),
        "same_unclassified": ours_unclassified == theirs_unclassified,
        "ours_unclassified": sorted(ours_unclassified),
        "ml_classes": ml_classes,
        # Vacuous when nothing is created (every element under the threshold)
        "ml_classes_are_names": set(ml_classes) | {c["class"] for c in created.values()}
        <= set(names),
        "correct": correct,
    }  # fmt: skip


# ------------------------------------------------------------------------- main


def classify_run(run: Path, database: Path, images: Path, old_base: str) -> float:
    """`make demo-classify` (the sample's classify configuration), its images over IIIF."""
    config = yaml.safe_load((SAMPLE / "config-classify.yml").read_text())
    return worker_over_iiif(config, run, database, images, old_base, None)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a classify local-mode output")
    parser.add_argument("--train", action="store_true", help="make the classify run into --run")
    parser.add_argument("--database", type=Path, default=SAMPLE / "export.sqlite")
    parser.add_argument("--images", type=Path, default=SAMPLE / "images", help="served over IIIF")
    parser.add_argument("--old-base", default=SAMPLE_IIIF_BASE, help="the export's IIIF base URL")
    parser.add_argument("--set", nargs="+", default=["val", "test", "train"])
    parser.add_argument("--venv", type=Path, default=Path("/tmp/segvenv"))
    parser.add_argument("--user", nargs="*", default=[], help="user values, KEY=JSON")
    return parser.parse_args()


def compare_split(args, python: Path, split: str, answers: dict, threshold: float) -> dict:
    """The classifier on one split against our predictions; prints and returns the summary."""
    metrics = json.loads((args.run / "metrics.json").read_text())
    names = list(metrics[split]["confusion_matrix"])
    ours = read_ours(args.run / f"eval_{split}" / "pages" / "predictions.jsonl")
    with (
        IIIFServer(images_dir=args.images, version=2) as iiif,
        tempfile.TemporaryDirectory() as tmp,
    ):
        listed = split_elements(args.database, split, iiif.base_url)
        # The elements our evaluation holds: the others have no class among `class_names`
        elements = [element for element in listed if element["id"] in ours]
        started = time.perf_counter()
        output = run_classifier(python, args.run / "model", elements, answers, Path(tmp))
        wall = time.perf_counter() - started
    print(f"{split}: {len(elements)} of the split's {len(listed)} elements have a class")
    summary = {**compare(ours, output, threshold, names), "split": split, "wall": wall}
    figures = metrics["pages"][split]
    summary["ours"] = {key: figures[key] for key in ("elements", "classified", "correct")}
    print(
        f"{split}: {summary['same_class']}/{summary['elements']} same class "
        f"({summary['agreement']:.1%}), largest confidence gap {summary['confidence_gap']:.3f}; "
        f"created {summary['created']} ({summary['created_as_predicted']} as predicted), "
        f"{len(summary['unclassified'])} unclassified (ours {len(summary['ours_unclassified'])}, "
        f"the same elements: {summary['same_unclassified']}); "
        f"ML classes created {summary['ml_classes']}; correct {summary['correct']}; "
        f"metrics.json {summary['ours']} at {figures['confidence_threshold']}; {wall:.1f} s"
    )
    if summary["different"]:
        print(f"  different (ours, classifier): {summary['different']}")
    return summary


def main() -> None:
    args = parse_arguments()
    python = ensure_venv(args.venv)
    if args.train:
        seconds = classify_run(args.run, args.database, args.images, args.old_base)
        print(f"Worker run into {args.run}: {seconds:.0f} s", flush=True)
    published = published_configuration(args.run)
    user = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.user)}
    answers = api_answers(published, user)
    threshold = {**published, **user}["confidence_threshold"]
    print("published configuration:", json.dumps(published), "user values:", json.dumps(user))
    summaries = [compare_split(args, python, split, answers, threshold) for split in args.set]
    print(
        "\n| split | elements | same class | largest confidence gap | created (classifier) | "
        "correct (classifier) | classified, correct (metrics.json) | same unclassified | "
        "ML class names |\n|---|---|---|---|---|---|---|---|---|"
    )
    for s in summaries:
        print(
            f"| {s['split']} | {s['elements']} | {s['same_class']}/{s['elements']} "
            f"({s['agreement']:.1%}) | {s['confidence_gap']:.3f} | {s['created']} | "
            f"{s['correct']} | {s['ours']['classified']}, {s['ours']['correct']} | "
            f"{'yes' if s['same_unclassified'] else 'NO'} ({len(s['unclassified'])}) | "
            f"{'yes' if s['ml_classes_are_names'] else 'NO'} |"
        )
    same = sum(s["same_class"] for s in summaries)
    total = sum(s["elements"] for s in summaries)
    ok = same >= AGREEMENT * total and all(
        s["same_unclassified"] and s["ml_classes_are_names"] for s in summaries
    )
    print(
        f"\nSame class on {same}/{total} elements = {same / total:.2%}: {'PASS' if ok else 'FAIL'}"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
