"""What every stage shares, depending on no stage: the modes' names, geometry (export polygons to
YOLO labels, and the one `Skip` enum of reasons), file helpers, the output layout (every file name
once), the truth and prediction values of the page-level evaluation, the contract with the
inference workers, Markdown tables."""

from worker_yolo_training.core.files import (
    DISK_FULL,
    NAME_MAX_BYTES,
    DiskFullError,
    disk_space,
    link_or_copy,
    not_a_file,
    partial_path,
    printable,
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
    SPLITS,
    STAGING_PREFIX,
    DatasetFiles,
    RunLayout,
    checkpoint,
    clear_previous_run,
)
from worker_yolo_training.core.lock import OutputFolderError, output_lock
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
    "NAME_MAX_BYTES",
    "SEGMENTER_IOU",
    "SEGMENTER_KEYS",
    "SEGMENTER_MODES",
    "SPLITS",
    "STAGING_PREFIX",
    "Box",
    "DatasetFiles",
    "DiskFullError",
    "ElementTruth",
    "Frame",
    "Label",
    "Mode",
    "OutputFolderError",
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
    "not_a_file",
    "object_label",
    "object_labels",
    "oriented_labels",
    "output_lock",
    "partial_path",
    "printable",
    "read_truths",
    "safe_name",
    "segmenter_configuration",
    "truth_line",
    "write_text",
]
