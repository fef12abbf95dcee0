"""What the image sources and the store share: the crop request, its size, the `ImageSource`
protocol, and how obtaining an image can fail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from PIL import Image, UnidentifiedImageError

from worker_yolo_training.core import Box, Frame
from worker_yolo_training.export import ImageInfo

# What decoding image bytes or files may raise
DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError)


class ImageError(Exception):
    """An image that cannot be obtained for good; the message says why. Drops only its element."""


class ImageServerUnreachable(Exception):
    """An image server that cannot be connected to at all: the run stops (not an ImageError, so
    that it leaves the fetch threads and ends the extraction)."""


class StorageError(Exception):
    """The image cache cannot be written (disk full, read-only, no permission): the run stops."""


@dataclass(frozen=True)
class CropRequest:
    """The part of an image a dataset element needs, and the size to fetch it at."""

    image: ImageInfo
    crop: Box
    width: int
    height: int


def fetch_size(frame: Frame, image_size: int) -> tuple[int, int]:
    """Size to fetch the crop at so that the oriented image's longest side is at most image_size.

    Images are never upscaled.
    """
    scale = min(1.0, image_size / max(frame.size))
    return (
        max(1, round(frame.crop.width * scale)),
        max(1, round(frame.crop.height * scale)),
    )


class ImageSource(Protocol):
    def fetch(self, request: CropRequest) -> bytes | Image.Image:
        """The requested crop at the requested size: encoded bytes as a server sent them, or a
        decoded image; raise ImageError when it cannot be had."""

    def describe(self, request: CropRequest) -> str:
        """Where the crop comes from (a URL without password, a file): the cache key, and for
        error reports."""
