"""Getting each dataset element's oriented crop to disk.

An `ImageSource` returns the crop of an image region at a given size: `IIIFSource` asks the image's
IIIF server, `FolderSource` reads full images from a folder. `write_crop` then mirrors, rotates,
optionally enhances contrast and writes the JPEG once.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import urllib3
from PIL import Image, ImageOps, UnidentifiedImageError
from tenacity import (
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from worker_yolo_training.export import ImageInfo
from worker_yolo_training.geometry import Box, Frame

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp")
JPEG_QUALITY = 90
DEFAULT_TIMEOUT = (10, 60)  # connect, read: seconds
DEFAULT_RETRIES = 5
USER_AGENT = "worker-yolo-training"


class ImageError(Exception):
    """An image that cannot be obtained for good; the message says why."""


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
        """Where the crop comes from (a URL, a file): the cache key, and for error reports."""


# ---------------------------------------------------------------- IIIF


def iiif_url(request: CropRequest) -> str:
    """The IIIF Image API URL of a crop, in the syntax of the server's version (2 or 3)."""
    image, crop = request.image, request.crop
    full_region = crop == Box(0, 0, image.width, image.height)
    region = "full" if full_region else f"{crop.x},{crop.y},{crop.width},{crop.height}"
    if (request.width, request.height) == (crop.width, crop.height):
        size = "max" if image.iiif_version == 3 else "full"
    else:
        size = f"{request.width},{request.height}"
    return f"{image.url.rstrip('/')}/{region}/{size}/0/default.jpg"


class HTTPStatusError(Exception):
    def __init__(self, status: int):
        super().__init__(f"HTTP {status}")
        self.status = status


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, HTTPStatusError):
        return error.status >= 500
    # Timeouts, refused or reset connections, truncated responses
    return isinstance(error, urllib3.exceptions.HTTPError)


class IIIFSource:
    """Crops from IIIF servers over keep-alive connections (urllib3: a fraction of requests' CPU
    per request), with retries on timeouts, connection errors and 5xx, never on 4xx."""

    def __init__(
        self,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = 1.0,
        connections: int = 32,
    ):
        self.http = urllib3.PoolManager(
            num_pools=16,
            maxsize=connections,
            timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
            # Follow redirects (http → https, moved servers); tenacity does the retrying
            retries=urllib3.Retry(total=None, connect=0, read=0, other=0, status=0, redirect=5),
            headers={"User-Agent": USER_AGENT},
        )
        self._get = retry(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(retries),
            wait=wait_exponential(multiplier=backoff, max=30),
            reraise=True,
        )(self._get_once)

    def _get_once(self, url: str) -> bytes:
        response = self.http.request("GET", url)
        if response.status >= 300:
            raise HTTPStatusError(response.status)
        return response.data

    def describe(self, request: CropRequest) -> str:
        return iiif_url(request)

    def fetch(self, request: CropRequest) -> bytes:
        url = iiif_url(request)
        try:
            return self._get(url)
        except HTTPStatusError as error:
            raise ImageError(str(error)) from error
        except urllib3.exceptions.HTTPError as error:
            raise ImageError(f"{type(error).__name__}: {error}") from error


def decode(content: bytes) -> Image.Image:
    """Decode image bytes fully (a truncated JPEG fails here, not later in training)."""
    try:
        image = Image.open(io.BytesIO(content))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise ImageError(f"not a valid image ({error})") from error
    return image


# ---------------------------------------------------------------- local folder


class FolderSource:
    """Full images read from a folder holding one file per image id (`<image id>.jpg`, ...)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        # Local archival scans are trusted and may exceed Pillow's decompression-bomb limit
        Image.MAX_IMAGE_PIXELS = None

    def path(self, image_id: str) -> Path:
        for extension in IMAGE_EXTENSIONS:
            candidate = self.folder / f"{image_id}{extension}"
            if candidate.is_file():
                return candidate
        raise ImageError(f"no file for image {image_id} in {self.folder}")

    def describe(self, request: CropRequest) -> str:
        crop = request.crop
        return (
            f"{self.folder.resolve()}/{request.image.id}"
            f"#{crop.x},{crop.y},{crop.width},{crop.height}@{request.width},{request.height}"
        )

    def fetch(self, request: CropRequest) -> Image.Image:
        path = self.path(request.image.id)
        try:
            with Image.open(path) as full:
                box = self._scaled_box(request, full.size, path)
                region = full.crop(box)
                if (request.width, request.height) != region.size:
                    region = region.resize(
                        (request.width, request.height), Image.Resampling.LANCZOS
                    )
                region.load()
                return region
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
            raise ImageError(f"not a valid image ({error}) at {path}") from error

    @staticmethod
    def _scaled_box(request: CropRequest, size: tuple[int, int], path: Path) -> tuple:
        """The crop in the file's pixels: a file may be a resized copy of the export's image."""
        image, crop = request.image, request.crop
        scale_x, scale_y = size[0] / image.width, size[1] / image.height
        if abs(scale_x - scale_y) > 0.01 * max(scale_x, scale_y):
            raise ImageError(
                f"{path} is {size[0]}×{size[1]} px but the export says image {image.id} is "
                f"{image.width}×{image.height}: not the same picture"
            )
        return (
            round(crop.x * scale_x),
            round(crop.y * scale_y),
            round((crop.x + crop.width) * scale_x),
            round((crop.y + crop.height) * scale_y),
        )


# ---------------------------------------------------------------- writing


def orient(image: Image.Image, frame: Frame) -> Image.Image:
    """Mirror then rotate clockwise, exactly as base-worker's `open_image` does."""
    if frame.mirrored:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if frame.rotation_angle:
        image = image.rotate(-frame.rotation_angle, expand=True)
    return image


def _looks_complete(path: Path) -> bool:
    """A cheap integrity check of a cached JPEG: start and end markers (truncation, garbage)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        size = os.fstat(descriptor).st_size
        head, tail = os.pread(descriptor, 2, 0), os.pread(descriptor, 2, max(0, size - 2))
    finally:
        os.close(descriptor)
    return head == b"\xff\xd8" and tail == b"\xff\xd9"


class CropStore:
    """Final training images, oriented and enhanced, one file per distinct request.

    Each crop is fetched once, decoded once and written once; a later run with the same cache
    folder fetches nothing. Without a cache folder, files live in a scratch folder.
    """

    def __init__(self, source: ImageSource, folder: Path, contrast: bool = False):
        self.source = source
        self.folder = Path(folder)
        self.contrast = contrast
        self.partials: set[Path] = set()  # being written: removed if the run is interrupted

    def path(self, request: CropRequest, frame: Frame) -> Path:
        key = "|".join(
            (
                self.source.describe(request),
                f"rotation={frame.rotation_angle}",
                f"mirrored={frame.mirrored}",
                f"contrast={self.contrast}",
            )
        )
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}.jpg"

    def cached(self, request: CropRequest, frame: Frame) -> Path | None:
        """The final image if a previous run left a sound one in the cache."""
        path = self.path(request, frame)
        if _looks_complete(path):
            return path
        if path.exists():
            logger.warning(f"Corrupt cache entry {path}: fetching it again")
        return None

    def get(self, request: CropRequest, frame: Frame) -> tuple[Path, bool]:
        """Path of the final image and whether it came from the cache; raises ImageError."""
        path = self.cached(request, frame)
        if path is not None:
            return path, True
        path = self.path(request, frame)
        fetched = self.source.fetch(request)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.partial")
        self.partials.add(partial)
        try:
            if isinstance(fetched, bytes) and self._usable_as_received(fetched, request, frame):
                # A JPEG exactly as needed is written as received: no re-encoding, no quality loss
                partial.write_bytes(fetched)
            else:
                image = decode(fetched) if isinstance(fetched, bytes) else fetched
                write_image(image, frame, self.contrast, partial)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
            self.partials.discard(partial)
        return path, False

    def remove_partials(self) -> None:
        """Files other threads were writing when the run stopped."""
        for partial in list(self.partials):
            partial.unlink(missing_ok=True)

    def _usable_as_received(self, content: bytes, request: CropRequest, frame: Frame) -> bool:
        if frame.rotation_angle or frame.mirrored or self.contrast:
            return False
        try:
            image = Image.open(io.BytesIO(content))
            if image.format != "JPEG" or image.mode not in ("RGB", "L"):
                return False
            if image.size != (request.width, request.height):
                return False
            # Decoding at 1/8 scale reads the whole stream (truncation and garbage fail here)
            # for a fraction of a full decode
            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
            raise ImageError(f"not a valid image ({error})") from error
        return True


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB; 16-bit and 32-bit grayscale (archival TIFFs) are scaled, not clipped."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        if image.mode == "F" and values.max() <= 1.0:
            peak = 1.0
        image = Image.fromarray(np.clip(values * (255.0 / peak), 0, 255).astype(np.uint8), "L")
    return image.convert("RGB")


def write_image(image: Image.Image, frame: Frame, contrast: bool, path: Path) -> tuple[int, int]:
    """Orient, optionally enhance, and write one training image as JPEG; returns its size."""
    image = orient(to_rgb(image), frame)
    if contrast:
        image = ImageOps.equalize(ImageOps.grayscale(image)).convert("RGB")
    image.save(path, format="JPEG", quality=JPEG_QUALITY)
    return image.size
