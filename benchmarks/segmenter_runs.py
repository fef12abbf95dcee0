"""Worker runs for the agreement benchmark (segmenter_agreement.py), their images served over IIIF.

Both runs read the export's images from a loopback IIIF server (tests/iiif_server.py, IIIF 2) on a
copy of the export whose image URLs point to it: the page-level evaluation then predicts on the
server's rendering, as the segmenter does (not on `--images`, cropped and resized by our code).

- `train_run`: the nano architecture learns the sample's train pages from scratch (60 epochs).
- `run_from_weights`: given weights become the "pretrained weights" of a one-epoch run that
  leaves them almost unchanged (learning rate 1e-9, no momentum, no warm-up, no augmentation):
  the run has all a trained run has (model/model.pt, model_version.json,
  eval_<split>/pages/predictions.jsonl) in about 2 minutes instead of 16.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.helpers import rewrite_image_urls  # noqa: E402
from tests.iiif_server import IIIFServer  # noqa: E402

# The bundled sample's export points its images to this server; the copy points them to ours
SAMPLE_IIIF_BASE = "https://iiif.example.org/iiif/2"
CLASS_NAMES = ["text_line", "illustration"]
NO_AUGMENTATION = {
    **dict.fromkeys(("mosaic", "hsv_h", "hsv_s", "hsv_v", "fliplr"), 0.0),
    **dict.fromkeys(("translate", "scale", "erasing"), 0.0),
}
# The nano architecture from scratch learns the sample's train pages (~18 objects each) in 60
# epochs of 3 steps without augmentation: about 11 CPU-minutes. The agreement of two inference
# pipelines of one model does not need a model that generalises.
TRAIN_CONFIG = {
    "class_names": CLASS_NAMES,
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
            **NO_AUGMENTATION,
        },
    },
}


def keep_weights_config(image_size: int, model_size: str) -> dict:
    """A configuration whose single epoch from the pretrained weights barely moves them."""
    return {
        **TRAIN_CONFIG,
        "ultralytics_model_size": model_size,
        "image_size": image_size,
        "num_epochs": 1,
        "advanced": {
            "pretrained": True,
            "workers": 0,
            "training_kwargs": {
                **{"lr0": 1e-9, "lrf": 1.0, "warmup_epochs": 0, "optimizer": "SGD"},
                **{"momentum": 0.0, "weight_decay": 0.0, "plots": False},
                **NO_AUGMENTATION,
            },
        },
    }


def worker_over_iiif(
    config: dict, run: Path, database: Path, images: Path, old_base: str, weights: Path | None
) -> float:
    """Our worker (local mode) into `run` with `config`, the export's images (URLs `old_base/<id>`)
    served over IIIF 2 from the folder `images`; `weights`, when given, are its pretrained
    weights (resolve_base_model looks for them in `$YOLO_CONFIG_DIR/weights/<name>`). Returns
    the seconds the worker took."""
    if run.exists():
        sys.exit(f"{run} exists: give a new --run folder")
    scratch = run.parent / f"{run.name}-setup"
    (scratch / "yolo" / "weights").mkdir(parents=True, exist_ok=True)
    if weights is not None:
        name = f"yolo{config['ultralytics_model_size']}-seg.pt"
        shutil.copy(weights, scratch / "yolo" / "weights" / name)
    (scratch / "config.json").write_text(json.dumps(config))
    export = scratch / "export.sqlite"
    shutil.copy(database, export)
    worker = str(Path(sys.executable).with_name("worker-yolo-training"))
    command = [worker, "--dev", "--database", str(export), "--config", str(scratch / "config.json")]
    with IIIFServer(images_dir=images, version=2) as iiif:
        rewrite_image_urls(export, old_base, iiif.base_url)
        started = time.perf_counter()
        subprocess.run(
            [*command, "--output", str(run)],
            check=True,
            env={**os.environ, "YOLO_CONFIG_DIR": str(scratch / "yolo")},
        )
        return time.perf_counter() - started


def train_run(run: Path, database: Path, images: Path, old_base: str = SAMPLE_IIIF_BASE) -> float:
    """Train the nano architecture on the sample into `run` (about 16 minutes on 2 cores)."""
    return worker_over_iiif(TRAIN_CONFIG, run, database, images, old_base, None)


def run_from_weights(
    weights: Path,
    run: Path,
    database: Path,
    images: Path,
    image_size: int = 320,
    model_size: str = "v8n",
    old_base: str = SAMPLE_IIIF_BASE,
) -> float:
    """A one-epoch run into `run` that keeps `weights` (a segment model of the sample's classes)."""
    config = keep_weights_config(image_size, model_size)
    return worker_over_iiif(config, run, database, images, old_base, weights)
