"""The Arkindex SQLite export: checking the file before it is read, reading its datasets, pages and
counts in a few streamed statements, and the sets to train on (set names to splits, the checks that
the export can give what the configuration asks)."""

from worker_yolo_training.export.file import (
    SUPPORTED_EXPORT_VERSIONS,
    ExportError,
    check_export_file,
)
from worker_yolo_training.export.reader import (
    Child,
    ClassificationInfo,
    DatasetInfo,
    Export,
    ImageInfo,
    Page,
    PageRows,
    StatementCounter,
    open_export,
    page_defect,
    page_of,
)
from worker_yolo_training.export.sets import (
    SPLIT_OF_SET,
    ClassSource,
    ExtractionError,
    check_inputs,
    select_sets,
    split_of,
)

__all__ = [
    "SPLIT_OF_SET",
    "SUPPORTED_EXPORT_VERSIONS",
    "Child",
    "ClassSource",
    "ClassificationInfo",
    "DatasetInfo",
    "Export",
    "ExportError",
    "ExtractionError",
    "ImageInfo",
    "Page",
    "PageRows",
    "StatementCounter",
    "check_export_file",
    "check_inputs",
    "open_export",
    "page_defect",
    "page_of",
    "select_sets",
    "split_of",
]
