"""From the export and the images to a YOLO dataset on disk: each dataset element's sample (its
crop request and labels), the writer (images, labels, `summary.json`, the annotations the
page-level evaluation reads), the dataset's shape and the Ultralytics settings derived from it."""

from worker_yolo_training.extract.dataset import (
    DatasetFormat,
    ExtractedDataset,
    SplitReport,
    check_trainable,
    load_dataset,
    open_dataset,
    summary_table,
)
from worker_yolo_training.extract.derived import (
    DEFAULT_MAX_DET,
    Derivation,
    Setting,
    derivation_from_summary,
    derive,
    sizes_table,
)
from worker_yolo_training.extract.sample import MIN_IMAGE_SIDE, Sample, element_crop
from worker_yolo_training.extract.shape import DatasetShape, Histogram
from worker_yolo_training.extract.truth import MAX_TRAIN_ELEMENTS, TruthWriter
from worker_yolo_training.extract.writer import DatasetWriter

__all__ = [
    "DEFAULT_MAX_DET",
    "MAX_TRAIN_ELEMENTS",
    "MIN_IMAGE_SIDE",
    "DatasetFormat",
    "DatasetShape",
    "DatasetWriter",
    "Derivation",
    "ExtractedDataset",
    "Histogram",
    "Sample",
    "Setting",
    "SplitReport",
    "TruthWriter",
    "check_trainable",
    "derivation_from_summary",
    "derive",
    "element_crop",
    "load_dataset",
    "open_dataset",
    "sizes_table",
    "summary_table",
]
