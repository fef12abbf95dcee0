"""From the export and the images to a YOLO dataset on disk: each dataset element's sample (its
crop request and labels), the writer (images, labels, `summary.json`, the annotations the
page-level evaluation reads), the dataset's shape and the Ultralytics settings derived from it."""

from worker_yolo_training.extract.build import SampleBuilder, WorkerStopped, usable_cpus
from worker_yolo_training.extract.dataset import (
    DatasetFormat,
    ExtractedDataset,
    SplitReport,
    load_dataset,
    open_dataset,
    summary_table,
)
from worker_yolo_training.extract.derived import (
    Derivation,
    Setting,
    derivation_from_summary,
    derive,
    sizes_table,
)
from worker_yolo_training.extract.sample import PackedSample, Sample, element_crop
from worker_yolo_training.extract.shape import (
    DatasetShape,
    ElementShape,
    Histogram,
    measure_elements,
)
from worker_yolo_training.extract.truth import TruthWriter
from worker_yolo_training.extract.writer import DatasetWriter, SetSource

__all__ = [
    "DatasetFormat",
    "DatasetShape",
    "DatasetWriter",
    "Derivation",
    "ElementShape",
    "ExtractedDataset",
    "Histogram",
    "PackedSample",
    "Sample",
    "SampleBuilder",
    "SetSource",
    "Setting",
    "SplitReport",
    "TruthWriter",
    "WorkerStopped",
    "derivation_from_summary",
    "derive",
    "element_crop",
    "load_dataset",
    "measure_elements",
    "open_dataset",
    "sizes_table",
    "summary_table",
    "usable_cpus",
]
