"""Everything Ultralytics training needs: an offline-safe environment (before the first
`import ultralytics`), the base model (fine-tuned version, pretrained weights or architecture),
the device, the training arguments, Ultralytics' own validation of each split, and a clear message
when the GPU runs out of memory."""

from worker_yolo_training.train.base_model import (
    WEIGHTS_URL,
    Architecture,
    BaseModelError,
    ClassChanges,
    class_changes,
    finetuned_model,
    resolve_base_model,
)
from worker_yolo_training.train.baseline import (
    Baseline,
    choose_baseline,
    load_baseline,
    local_baseline,
    local_configuration,
    published_baseline,
    usable_baseline,
)
from worker_yolo_training.train.environment import (
    prepare_environment,
    use_weights_dir,
)
from worker_yolo_training.train.memory import (
    OutOfGpuMemory,
    gpu_memory,
    is_out_of_memory,
    out_of_memory_message,
)
from worker_yolo_training.train.training import (
    Device,
    select_device,
    train,
    training_arguments,
    validate,
)

__all__ = [
    "WEIGHTS_URL",
    "Architecture",
    "BaseModelError",
    "Baseline",
    "ClassChanges",
    "Device",
    "OutOfGpuMemory",
    "choose_baseline",
    "class_changes",
    "finetuned_model",
    "gpu_memory",
    "is_out_of_memory",
    "load_baseline",
    "local_baseline",
    "local_configuration",
    "out_of_memory_message",
    "prepare_environment",
    "published_baseline",
    "resolve_base_model",
    "select_device",
    "train",
    "training_arguments",
    "usable_baseline",
    "use_weights_dir",
    "validate",
]
