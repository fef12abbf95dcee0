"""Everything Ultralytics training needs: an offline-safe environment (before the first
`import ultralytics`), the base model (fine-tuned version, pretrained weights or architecture),
the device, the training arguments, and Ultralytics' own validation of each split."""

from worker_yolo_training.train.base_model import (
    WEIGHTS_URL,
    Architecture,
    BaseModelError,
    ClassChanges,
    ParentModel,
    class_changes,
    finetuned_model,
    read_parent,
    resolve_base_model,
)
from worker_yolo_training.train.environment import (
    FONT_NAMES,
    default_config_dir,
    prepare_environment,
    use_weights_dir,
    weights_folder,
)
from worker_yolo_training.train.training import (
    Device,
    select_device,
    train,
    training_arguments,
    ultralytics_folder,
    validate,
)

__all__ = [
    "FONT_NAMES",
    "WEIGHTS_URL",
    "Architecture",
    "BaseModelError",
    "ClassChanges",
    "Device",
    "ParentModel",
    "class_changes",
    "default_config_dir",
    "finetuned_model",
    "prepare_environment",
    "read_parent",
    "resolve_base_model",
    "select_device",
    "train",
    "training_arguments",
    "ultralytics_folder",
    "use_weights_dir",
    "validate",
    "weights_folder",
]
