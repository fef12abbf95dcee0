"""What leaves the worker: the model version (the inference worker's configuration and the
Markdown description), the training's facts (`training.json`), the model directory and the
`results.tar.zst` archive."""

from worker_yolo_training.publish.archive import (
    build_model_dir,
    build_results_archive,
    results_members,
)
from worker_yolo_training.publish.description import (
    ModelVersion,
    model_description,
    training_metadata,
)

__all__ = [
    "ModelVersion",
    "build_model_dir",
    "build_results_archive",
    "model_description",
    "results_members",
    "training_metadata",
]
