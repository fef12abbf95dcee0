"""Agreement between our page-level predictions and Teklia's YOLO segmenter (not in CI).

Runs the real `YOLOSegmenter` of `teklia-yolo-worker==1.4.3` in its own venv (`/tmp/segvenv`,
created on first use: it pins ultralytics 8.4.174 and arkindex-base-worker 0.6.1rc1) on the
elements of one set of an export, read-only: no Arkindex API (the client is a stub that fails if
used; the elements it would create are recorded), images from a loopback IIIF server
(tests/iiif_server.py). Its configuration is merged as Arkindex merges it: the segmenter's
defaults (tests/data/yolo_segmenter_configuration.json), then the model version's configuration
(`<run>/model_version.json`), then the user's values (`--user KEY=VALUE`).

Then, when `<run>/eval_<split>/pages/predictions.jsonl` exists (our page-level evaluation), it
compares the two after applying the published `confidence_threshold` to ours: objects per element
and class, and for each segmenter element the best polygon IoU with one of ours of the same class;
it prints the share of segmenter elements with a counterpart at IoU >= 0.9.

    .venv/bin/python benchmarks/segmenter_agreement.py --run OUT --database EXPORT.sqlite \
        --images IMAGES_DIR [--set test]
    # No run yet: train one on the bundled sample first (a few minutes on 2 cores)
    .venv/bin/python benchmarks/segmenter_agreement.py --train --run /tmp/segbench/run
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

from tests.iiif_server import IIIFServer  # noqa: E402
from worker_yolo_training.sets import split_of  # noqa: E402

PACKAGE = "teklia-yolo-worker==1.4.3"
SEGMENTER_TABLE = ROOT / "tests" / "data" / "yolo_segmenter_configuration.json"
SAMPLE = ROOT / "worker_yolo_training" / "sample"
AGREEMENT_IOU = 0.9
# The nano architecture from scratch learns the sample's train pages (~18 objects each) in 60
# epochs of 3 steps without augmentation: about 11 CPU-minutes. The agreement of two inference
# pipelines of one model does not need a model that generalises.
TRAIN_CONFIG = {
    "class_names": ["text_line", "illustration"],
    "mode": "segment",
    "ultralytics_model_size": "v8n",
    "image_size": 320,
    "batch_size": 2,
    "num_epochs": 60,
    "advanced": {
        "pretrained": False,
        "patience": 1000,
        "workers": 0,
        "training_kwargs": {
            **{"nbs": 2, "plots": False, "val": False, "warmup_epochs": 0},
            **{"optimizer": "AdamW", "lr0": 0.003},
            # No augmentation: the model memorises the pages quickly
            **dict.fromkeys(("mosaic", "hsv_h", "hsv_s", "hsv_v", "fliplr"), 0.0),
            **dict.fromkeys(("translate", "scale", "erasing"), 0.0),
        },
    },
}

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


def train_sample(run: Path) -> float:
    """Train on the bundled sample with our worker (local mode) into `run`; returns seconds."""
    config = run.parent / f"{run.name}-config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(TRAIN_CONFIG))
    started = time.perf_counter()
    subprocess.run(
        [
            str(Path(sys.executable).with_name("worker-yolo-training")),
            *("--dev", "--database", str(SAMPLE / "export.sqlite")),
            *("--config", str(config), "--images", str(SAMPLE / "images")),
            *("--output", str(run)),
        ],
        check=True,
    )
    return time.perf_counter() - started


def published_configuration(run: Path) -> dict:
    """The model version's configuration, as the worker wrote it in `<run>/model_version.json`."""
    written = run / "model_version.json"
    if not written.is_file():
        sys.exit(f"{written} is missing: run the worker (local mode) into {run} first, or --train")
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


def stand_in_predictions(
    run: Path, split: str, elements: list[dict], published: Mapping, path: Path
) -> tuple[Path, int]:
    """A stand-in for the page-level evaluation's predictions.jsonl, until it exists: our model
    (this venv's Ultralytics) on our dataset's images of the split, `conf=0`, `iou=0.7`,
    `max_det=max_detection`; mask polygons for `use_segment` classes, else box corners; then what
    the segmenter does to points (segmenter.py lines 124-142): scaled to the element's pixels
    (its bounding box), rounded, clamped to the element, invalid polygons dropped.
    Returns the file and the number of invalid polygons dropped at or above the threshold."""
    from ultralytics import YOLO

    model = YOLO(str(run / "model" / "model.pt"))
    dropped = 0
    with path.open("w") as output:
        for element in elements:
            xs, ys = zip(*element["zone"]["polygon"], strict=True)
            width, height = int(max(xs) - min(xs)), int(max(ys) - min(ys))
            image = run / "dataset" / "images" / split / f"{element['id']}.jpg"
            result = model.predict(
                str(image), conf=0, iou=0.7, max_det=published["max_detection"], verbose=False
            )[0]
            boxes = result.boxes if result.boxes is not None else result.obb
            sx, sy = width / result.orig_shape[1], height / result.orig_shape[0]
            predictions = []
            for index in range(len(boxes)):
                name = result.names[int(boxes.cls[index])]
                if result.masks is not None and name in published["use_segment"]:
                    points = result.masks.xy[index].tolist()
                elif hasattr(boxes, "xyxyxyxy"):
                    points = boxes.xyxyxyxy[index].tolist()
                else:
                    x1, y1, x2, y2 = boxes.xyxy[index].tolist()
                    points = [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]
                polygon = [
                    [min(max(round(x * sx), 0), width), min(max(round(y * sy), 0), height)]
                    for x, y in points
                ]
                confidence = float(boxes.conf[index])
                if not Polygon(polygon).is_valid:
                    dropped += confidence >= published["confidence_threshold"]
                    continue
                predictions.append({"class": name, "confidence": confidence, "polygon": polygon})
            record = {"element": element["id"], "width": width, "height": height}
            output.write(json.dumps({**record, "predictions": predictions}) + "\n")
    return path, dropped


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
    segmenter counterpart at that IoU."""
    counts, best, ours_alone = {}, [], []
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a local-mode output folder")
    parser.add_argument("--database", type=Path, default=SAMPLE / "export.sqlite")
    parser.add_argument("--images", type=Path, default=SAMPLE / "images")
    parser.add_argument("--set", default="test", help="split: train, val or test")
    parser.add_argument("--train", action="store_true", help="train on the sample into --run")
    parser.add_argument("--venv", type=Path, default=Path("/tmp/segvenv"))
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.25,
        help="used when the run has no model_version.json",
    )
    parser.add_argument("--user", nargs="*", default=[], help="user values, KEY=JSON")
    parser.add_argument(
        "--stand-in",
        action="store_true",
        help="without eval_<split>/pages/predictions.jsonl, predict with our model on our dataset",
    )
    args = parser.parse_args()

    python = ensure_venv(args.venv)
    if args.train and not (args.run / "model" / "model.pt").is_file():
        print(f"Trained on the sample in {train_sample(args.run):.0f} s", flush=True)
    published = published_configuration(args.run)
    user = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.user)}
    configuration = merged_configuration(published, user)
    print("published configuration:", json.dumps(published))

    with (
        IIIFServer(images_dir=args.images, version=2) as iiif,
        tempfile.TemporaryDirectory() as tmp,
    ):
        elements = split_elements(args.database, args.set, iiif.base_url)
        started = time.perf_counter()
        result = run_segmenter(python, args.run / "model", elements, configuration, Path(tmp))
        wall = time.perf_counter() - started
    records = result["elements"]
    print(
        f"Segmenter on {len(elements)} {args.set} elements: {wall:.1f} s in all "
        f"({result['seconds']:.1f} s processing), {len(records)} elements processed"
    )
    report_segmenter(records)

    ours_path = args.run / f"eval_{args.set}" / "pages" / "predictions.jsonl"
    if not ours_path.is_file() and args.stand_in:
        ours_path = args.run / f"stand-in-predictions-{args.set}.jsonl"
        _, dropped = stand_in_predictions(args.run, args.set, elements, published, ours_path)
        print(f"Compared with a stand-in for our page-level predictions: {ours_path}")
        print(
            f"  ({dropped} invalid polygons at or above the threshold dropped, as the segmenter does)"
        )
    if not ours_path.is_file():
        print(f"No {ours_path}: nothing to compare with (run the page-level evaluation first)")
        return
    ours = read_predictions(ours_path, published["confidence_threshold"])
    theirs = {element: record["children"] for element, record in records.items()}
    summary = compare(theirs, ours)
    print(
        f"Objects: segmenter {summary['segmenter_objects']}, ours {summary['our_objects']} "
        f"(confidence >= {published['confidence_threshold']}); same count for "
        f"{summary['same_count_pairs']}/{summary['element_class_pairs']} element-class pairs"
    )
    print(
        f"Segmenter objects with a counterpart at IoU >= {AGREEMENT_IOU}: "
        f"{summary['agreeing']}/{summary['segmenter_objects']} = {summary['agreement']:.2%}"
    )
    below = sorted(round(iou, 3) for iou in summary["best_iou"] if iou < AGREEMENT_IOU)
    print(f"Segmenter objects under IoU {AGREEMENT_IOU}, their best IoU: {below}")
    print(f"Ours without a segmenter counterpart, by confidence: {summary['ours_alone']}")


if __name__ == "__main__":
    main()
