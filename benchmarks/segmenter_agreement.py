"""Agreement between our page-level predictions and Teklia's YOLO segmenter (not in CI).

Runs the real `YOLOSegmenter` of `teklia-yolo-worker==1.4.3` in its own venv (`/tmp/segvenv`,
created on first use: it pins ultralytics 8.4.174 and arkindex-base-worker 0.6.1rc1) on the
elements of one set of an export, read-only: no Arkindex API (the client is a stub that fails if
used; the elements it would create are recorded), images from a loopback IIIF server
(tests/iiif_server.py). Its configuration is merged as Arkindex merges it: the segmenter's
defaults (tests/data/yolo_segmenter_configuration.json), then the model version's configuration
(`<run>/model_version.json`), then the user's values (`--user KEY=VALUE`).

Then it compares the two on each split, after applying the published `confidence_threshold` to
our page-level predictions (`<run>/eval_<split>/pages/predictions.jsonl`): objects per element
and class, and for each segmenter object the best polygon IoU with one of ours of the same class;
it prints the share of segmenter objects with a counterpart at IoU >= 0.9.

The run must have read its images from the same IIIF server rendering (segmenter_runs.py): from
given weights, a one-epoch run that keeps them (`--from-weights`, about 2 minutes on 2 cores), or
a training from scratch on the sample (`--train`, about 16 minutes).

    .venv/bin/python benchmarks/segmenter_agreement.py --run /tmp/segbench/new-run \
        --from-weights MODEL.pt [--set test val]
    .venv/bin/python benchmarks/segmenter_agreement.py --run EXISTING_RUN --database EXPORT.sqlite \
        --images IMAGES_DIR
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shapely import make_valid  # noqa: E402
from shapely.geometry import Polygon  # noqa: E402

from benchmarks.segmenter_runs import SAMPLE_IIIF_BASE, run_from_weights, train_run  # noqa: E402
from tests.iiif_server import IIIFServer  # noqa: E402
from worker_yolo_training.export import split_of  # noqa: E402

PACKAGE = "teklia-yolo-worker==1.4.3"
SEGMENTER_TABLE = ROOT / "tests" / "data" / "yolo_segmenter_configuration.json"
SAMPLE = ROOT / "worker_yolo_training" / "sample"
AGREEMENT_IOU = 0.9

DRIVER = Path(__file__).with_name("segmenter_driver.py")


# ------------------------------------------------------------------------- set-up


def ensure_venv(venv: Path) -> Path:
    """The segmenter's venv, created when missing; returns its Python."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import worker_yolo.segmenter"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"Creating {venv} with {PACKAGE} (torch included: several minutes)...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", PACKAGE], check=True)
    return python


def published_configuration(run: Path) -> dict:
    """The model version's configuration, as the worker wrote it in `<run>/model_version.json`."""
    written = run / "model_version.json"
    if not written.is_file():
        sys.exit(
            f"{written} is missing: run the worker (local mode) into {run} first, or use --from-weights"
        )
    return json.loads(written.read_text())["configuration"]


def merged_configuration(published: Mapping, user: Mapping) -> dict:
    """What RetrieveWorkerRunConfiguration serves a segmenter run: its defaults, then the model
    version's configuration, then the user's values."""
    fields = json.loads(SEGMENTER_TABLE.read_text())["fields"]
    return {**{key: field["default"] for key, field in fields.items()}, **published, **user}


def split_elements(database: Path, split: str, iiif_base: str) -> list[dict]:
    """The elements of one split, as the API serialises them for a worker (zone, image, server),
    their images on the loopback IIIF server."""
    db = sqlite3.connect(database)
    rows = db.execute(
        """
        SELECT DISTINCT element.id, element.name, element.type, element.polygon,
               element.rotation_angle, element.mirrored, dataset_element.set_name,
               image.id, image.width, image.height
        FROM dataset_element
        JOIN element ON element.id = dataset_element.element_id
        JOIN image ON image.id = element.image_id
        ORDER BY element.id
        """
    ).fetchall()
    db.close()
    elements = {}
    for id, name, type, polygon, angle, mirrored, set_name, image, width, height in rows:
        if split_of(set_name) != split:
            continue
        points = json.loads(polygon)
        xs, ys = [x for x, _ in points], [y for _, y in points]
        x, y = int(min(xs)), int(min(ys))
        w, h = int(max(xs)) - x, int(max(ys)) - y
        url = f"{iiif_base}/{image}"
        elements[id] = {
            "id": id,
            "name": name,
            "type": type,
            "rotation_angle": angle,
            "mirrored": bool(mirrored),
            "zone": {
                "polygon": points,
                "url": f"{url}/{x},{y},{w},{h}/full/0/default.jpg",
                "image": {
                    "id": image,
                    "url": url,
                    "width": width,
                    "height": height,
                    "server": {
                        "url": iiif_base,
                        "version": 2,
                        "max_width": None,
                        "max_height": None,
                    },
                },
            },
        }
    return list(elements.values())


def run_segmenter(
    python: Path, model_dir: Path, elements: list[dict], configuration: dict, scratch: Path
) -> dict:
    """The segmenter on these elements; returns its records per element and its time."""
    paths = {name: scratch / f"{name}.json" for name in ("configuration", "elements", "output")}
    paths["configuration"].write_text(
        # The form RetrieveWorkerRunConfiguration answers, which base-worker also reads in --dev
        json.dumps(
            {
                "configuration": [
                    {"key": k, "value": v, "secret": False} for k, v in configuration.items()
                ]
            }
        )
    )
    paths["elements"].write_text(json.dumps(elements))
    subprocess.run(
        [
            *(str(python), str(DRIVER)),
            *(str(paths["configuration"]), str(model_dir)),
            *(str(paths["elements"]), str(paths["output"])),
        ],
        check=True,
        cwd=scratch,
    )
    return json.loads(paths["output"].read_text())


# ------------------------------------------------------------------------- comparison


def read_predictions(path: Path, threshold: float) -> dict[str, list[dict]]:
    """Our page-level predictions (one JSON line per element), those the segmenter would keep:
    confidence >= threshold (it drops `confidence < threshold`)."""
    predictions = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            predictions[record["element"]] = [
                p for p in record["predictions"] if p["confidence"] >= threshold
            ]
    return predictions


def _geometry(points: Iterable) -> Polygon:
    return make_valid(Polygon(points))


def polygon_iou(a: Iterable, b: Iterable) -> float:
    """IoU of two polygons (repaired when invalid)."""
    first, second = _geometry(a), _geometry(b)
    union = first.union(second).area
    return first.intersection(second).area / union if union else 0.0


def compare(segmenter: Mapping[str, list[dict]], ours: Mapping[str, list[dict]]) -> dict:
    """Compare, per element, the segmenter's objects (`{"type", "polygon", "confidence"}`) with
    ours (`{"class", "polygon", "confidence"}`), both in the element's oriented frame.

    Returns counts per element and class (`{element: {class: [segmenter, ours]}}`), for each
    segmenter object its best IoU with one of ours of the same class, and the share of segmenter
    objects whose best IoU is at least 0.9; `ours_alone`: the confidences of ours without a
    segmenter counterpart at that IoU; `identical`: segmenter objects for which one of ours has
    the same class and the very same points, and `confidence_gap` the largest confidence
    difference between such twins (the segmenter's are rounded to 2 decimals)."""
    counts, best, ours_alone, gaps = {}, [], [], []
    for element in sorted(set(segmenter) | set(ours)):
        theirs, mine = segmenter.get(element, []), ours.get(element, [])
        per_class = defaultdict(lambda: [0, 0])
        for child in theirs:
            per_class[child["type"]][0] += 1
        for prediction in mine:
            per_class[prediction["class"]][1] += 1
        counts[element] = dict(sorted(per_class.items()))
        for child in theirs:
            candidates = [p["polygon"] for p in mine if p["class"] == child["type"]]
            best.append(max((polygon_iou(child["polygon"], c) for c in candidates), default=0.0))
            twins = [
                p for p in mine if (p["class"], p["polygon"]) == (child["type"], child["polygon"])
            ]
            gaps += [abs(twins[0]["confidence"] - child["confidence"])] if twins else []
        for prediction in mine:
            theirs_same = [c["polygon"] for c in theirs if c["type"] == prediction["class"]]
            if not any(polygon_iou(prediction["polygon"], c) >= AGREEMENT_IOU for c in theirs_same):
                ours_alone.append(round(prediction["confidence"], 3))
    agreeing = sum(iou >= AGREEMENT_IOU for iou in best)
    same_counts = sum(
        segmenter_count == our_count
        for per_class in counts.values()
        for segmenter_count, our_count in per_class.values()
    )
    pairs = sum(len(per_class) for per_class in counts.values())
    return {
        "counts": counts,
        "best_iou": best,
        "segmenter_objects": len(best),
        "our_objects": sum(len(v) for v in ours.values()),
        "agreeing": agreeing,
        "agreement": agreeing / len(best) if best else 1.0,
        "same_count_pairs": same_counts,
        "element_class_pairs": pairs,
        "ours_alone": sorted(ours_alone),
        "identical": len(gaps),
        "confidence_gap": max(gaps, default=0.0),
    }


# ------------------------------------------------------------------------- main


def report_segmenter(records: Mapping[str, dict]) -> None:
    for element, record in records.items():
        types = Counter(child["type"] for child in record["children"])
        confidences = [child["confidence"] for child in record["children"]]
        low = min(confidences, default=0)
        print(
            f"  {element}: thumbnail {record['thumbnail'][0]}x{record['thumbnail'][1]}, "
            f"{dict(types)}, created {len(record['created'])}, lowest confidence {low}"
        )


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a local-mode output folder")
    parser.add_argument("--database", type=Path, default=SAMPLE / "export.sqlite")
    parser.add_argument("--images", type=Path, default=SAMPLE / "images", help="served over IIIF")
    parser.add_argument("--old-base", default=SAMPLE_IIIF_BASE, help="the export's IIIF base URL")
    parser.add_argument("--set", nargs="+", default=["test", "val"], help="splits to compare")
    making = parser.add_mutually_exclusive_group()
    making.add_argument("--train", action="store_true", help="train on the sample into --run")
    making.add_argument(
        "--from-weights", type=Path, help="a one-epoch run into --run that keeps these weights"
    )
    parser.add_argument("--venv", type=Path, default=Path("/tmp/segvenv"))
    parser.add_argument("--user", nargs="*", default=[], help="user values, KEY=JSON")
    return parser.parse_args()


def compare_split(args, python: Path, split: str, published: dict, configuration: dict) -> dict:
    """The segmenter on one split, compared with our predictions.jsonl; prints and returns."""
    with (
        IIIFServer(images_dir=args.images, version=2) as iiif,
        tempfile.TemporaryDirectory() as tmp,
    ):
        elements = split_elements(args.database, split, iiif.base_url)
        started = time.perf_counter()
        result = run_segmenter(python, args.run / "model", elements, configuration, Path(tmp))
        wall = time.perf_counter() - started
    records = result["elements"]
    print(
        f"Segmenter on {len(elements)} {split} elements: {wall:.1f} s in all "
        f"({result['seconds']:.1f} s processing), {len(records)} elements processed"
    )
    report_segmenter(records)
    ours_path = args.run / f"eval_{split}" / "pages" / "predictions.jsonl"
    if not ours_path.is_file():
        sys.exit(f"No {ours_path}: the run has no page-level evaluation of {split}")
    ours = read_predictions(ours_path, published["confidence_threshold"])
    theirs = {element: record["children"] for element, record in records.items()}
    summary = {**compare(theirs, ours), "split": split, "elements": len(elements), "wall": wall}
    print(
        f"Objects: segmenter {summary['segmenter_objects']}, ours {summary['our_objects']} "
        f"(confidence >= {published['confidence_threshold']}); same count for "
        f"{summary['same_count_pairs']}/{summary['element_class_pairs']} element-class pairs"
    )
    print(
        f"Segmenter objects with a counterpart at IoU >= {AGREEMENT_IOU}: "
        f"{summary['agreeing']}/{summary['segmenter_objects']} = {summary['agreement']:.2%}; "
        f"identical (class and points): {summary['identical']}, largest confidence gap "
        f"between twins {summary['confidence_gap']:.4f}"
    )
    below = sorted(round(iou, 3) for iou in summary["best_iou"] if iou < AGREEMENT_IOU)
    print(f"Segmenter objects under IoU {AGREEMENT_IOU}, their best IoU: {below}")
    print(f"Ours without a segmenter counterpart, by confidence: {summary['ours_alone']}")
    return summary


def main() -> None:
    args = parse_arguments()
    python = ensure_venv(args.venv)
    making = (train_run, ()) if args.train else (run_from_weights, (args.from_weights,))
    if args.train or args.from_weights:
        function, first = making
        seconds = function(*first, args.run, args.database, args.images, old_base=args.old_base)
        print(f"Worker run into {args.run}: {seconds:.0f} s", flush=True)
    published = published_configuration(args.run)
    user = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.user)}
    configuration = merged_configuration(published, user)
    print("published configuration:", json.dumps(published))
    summaries = [compare_split(args, python, split, published, configuration) for split in args.set]
    print(
        "\n| split | elements | segmenter objects | ours | same count | at IoU >= 0.9 | "
        "identical | confidence gap | segmenter wall s |\n|---|---|---|---|---|---|---|---|---|"
    )
    for s in summaries:
        print(
            f"| {s['split']} | {s['elements']} | {s['segmenter_objects']} | {s['our_objects']} | "
            f"{s['same_count_pairs']}/{s['element_class_pairs']} | "
            f"{s['agreeing']}/{s['segmenter_objects']} ({s['agreement']:.1%}) | "
            f"{s['identical']} | {s['confidence_gap']:.4f} | {s['wall']:.1f} |"
        )


if __name__ == "__main__":
    main()
