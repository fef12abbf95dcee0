"""What every stage shares, depending on no stage: the modes' names, geometry (export polygons to
YOLO labels, and the one `Skip` enum of reasons), file helpers, the output layout (every file name
once), the truth and prediction values of the page-level evaluation, the contract with the
inference workers, Markdown tables."""

from worker_yolo_training.core.files import (
    DISK_FULL,
    DiskFullError,
    Linker,
    disk_space,
    link_or_copy,
    safe_name,
    write_text,
)
from worker_yolo_training.core.geometry import (
    Box,
    Frame,
    Label,
    Skip,
    crop_box,
    label_line,
    object_label,
    object_labels,
    oriented_labels,
    simple_rings,
)
from worker_yolo_training.core.inference import (
    CONFIDENCE_DECIMALS,
    DEFAULT_THRESHOLD,
    SEGMENTER_IOU,
    SEGMENTER_KEYS,
    SEGMENTER_MODES,
    classifier_configuration,
    segmenter_configuration,
)
from worker_yolo_training.core.layout import (
    CHECKPOINTS,
    MODEL_FILE,
    DatasetFiles,
    RunLayout,
    checkpoint,
    clear_previous_run,
)
from worker_yolo_training.core.mode import Mode
from worker_yolo_training.core.tables import escape, markdown_table
from worker_yolo_training.core.truth import (
    ElementTruth,
    Points,
    Prediction,
    read_truths,
    truth_line,
)

__all__ = [
    "CHECKPOINTS",
    "CONFIDENCE_DECIMALS",
    "DEFAULT_THRESHOLD",
    "DISK_FULL",
    "MODEL_FILE",
    "SEGMENTER_IOU",
    "SEGMENTER_KEYS",
    "SEGMENTER_MODES",
    "Box",
    "DatasetFiles",
    "DiskFullError",
    "ElementTruth",
    "Frame",
    "Label",
    "Linker",
    "Mode",
    "Points",
    "Prediction",
    "RunLayout",
    "Skip",
    "checkpoint",
    "classifier_configuration",
    "clear_previous_run",
    "crop_box",
    "disk_space",
    "escape",
    "label_line",
    "link_or_copy",
    "markdown_table",
    "object_label",
    "object_labels",
    "oriented_labels",
    "read_truths",
    "safe_name",
    "segmenter_configuration",
    "simple_rings",
    "truth_line",
    "write_text",
]
