"""The Arkindex SQLite export: checking the file before it is read, reading its datasets, counts
and pages (a set's elements in one streamed statement, what they hold by chunks), and the sets to
train on (set names to splits, the checks that the export can give what the configuration
asks)."""

from worker_yolo_training.export.chunks import ChunkReader, PageChunk, PageRows, SetElements
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
    "ChunkReader",
    "ClassSource",
    "ClassificationInfo",
    "DatasetInfo",
    "Export",
    "ExportError",
    "ExtractionError",
    "ImageInfo",
    "Page",
    "PageChunk",
    "PageRows",
    "SetElements",
    "StatementCounter",
    "check_export_file",
    "check_inputs",
    "open_export",
    "page_defect",
    "page_of",
    "select_sets",
    "split_of",
]
