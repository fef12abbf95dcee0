"""Getting each dataset element's crop to disk: the crop request, its sources (`IIIFSource` over
HTTP with timeouts, caps and fail-fast; `FolderSource` from a local folder), the verified crop
cache (`CropStore`) and bounded-concurrency fetching."""

from worker_yolo_training.images.fetching import Fetched, fetch_all
from worker_yolo_training.images.folder import (
    FolderSource,
    open_scan,
)
from worker_yolo_training.images.iiif import IIIFSource, body_limit, iiif_url, redact
from worker_yolo_training.images.request import (
    CropRequest,
    ImageError,
    ImageServerUnreachable,
    ImageSource,
    StorageError,
    fetch_size,
)
from worker_yolo_training.images.store import (
    CropStore,
    decode,
    encode,
    orient,
    same_shape,
    write_image,
)

__all__ = [
    "CropRequest",
    "CropStore",
    "Fetched",
    "FolderSource",
    "IIIFSource",
    "ImageError",
    "ImageServerUnreachable",
    "ImageSource",
    "StorageError",
    "body_limit",
    "decode",
    "encode",
    "fetch_all",
    "fetch_size",
    "iiif_url",
    "open_scan",
    "orient",
    "redact",
    "same_shape",
    "write_image",
]
