"""The crop store: each dataset element's oriented crop, fetched once from its `ImageSource`
(`iiif.IIIFSource` asks the image's IIIF server, `folder.FolderSource` reads full images from a
folder), brought to the requested size, mirrored, rotated, optionally enhanced in contrast and
written as JPEG once, into a cache whose entries are verified before reuse.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from worker_yolo_training.core import DISK_FULL, Frame
from worker_yolo_training.images.request import (
    DECODE_ERRORS,
    CropRequest,
    ImageError,
    ImageSource,
    StorageError,
)

logger = logging.getLogger(__name__)

JPEG_QUALITY = 90
# An answer of another size than asked is accepted when its aspect ratio is the same up to this
# (or 1 px): servers round each side on their own, and some size from a scale factor
ASPECT_TOLERANCE = 0.01
# Most pixels decoded for a crop, as a multiple of the requested pixels: a JPEG is decoded at
# 1/2, 1/4 or 1/8 scale first (Pillow's draft), so only answers > 32× too large per side, or
# other formats > 4× per side, are refused rather than decoded
MAX_DECODE_FACTOR = 16
# A cache entry's sidecar is shorter than this (`checksum`: a size, then a CRC-32)
SIDECAR_BYTES = 64


def decode(content: bytes) -> Image.Image:
    """Decode image bytes fully (a truncated JPEG fails here, not later in training)."""
    image = open_image(content)
    try:
        image.load()
    except DECODE_ERRORS as error:
        raise ImageError(f"not a valid image ({error})") from error
    return image


def open_image(content: bytes) -> Image.Image:
    """Read the header only (Pillow refuses decompression bombs here)."""
    try:
        return Image.open(io.BytesIO(content))
    except DECODE_ERRORS as error:
        raise ImageError(f"not a valid image ({error})") from error


def same_shape(received: tuple[int, int], requested: tuple[int, int]) -> bool:
    """Whether an image of size `received` is the requested one at another scale."""
    (width, height), (want_width, want_height) = received, requested
    if min(width, height) < 1:
        return False
    return abs(height * want_width / width - want_height) <= max(
        1.0, ASPECT_TOLERANCE * want_height
    ) and abs(width * want_height / height - want_width) <= max(1.0, ASPECT_TOLERANCE * want_width)


def load_at_size(image: Image.Image, width: int, height: int) -> Image.Image:
    """Decode an opened image at width×height, refusing another aspect ratio, and decoding a
    larger answer at a reduced scale so that its size cannot take gigabytes."""
    if not same_shape(image.size, (width, height)):
        raise ImageError(
            f"the server sent {image.width}×{image.height} px for a {width}×{height} crop: "
            "another aspect ratio, its labels would not match"
        )
    try:
        if image.size != (width, height):
            image.draft(None, (width, height))  # JPEG: decoded at 1/2, 1/4 or 1/8 scale
            if image.width * image.height > MAX_DECODE_FACTOR * width * height:
                raise ImageError(
                    f"the server sent {image.width}×{image.height} px for a {width}×{height} "
                    "crop: too large to decode"
                )
        image.load()
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
    except DECODE_ERRORS as error:
        raise ImageError(f"not a valid image ({error})") from error
    return image


def orient(image: Image.Image, frame: Frame) -> Image.Image:
    """Mirror then rotate clockwise, exactly as base-worker's `open_image` does."""
    if frame.mirrored:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if frame.rotation_angle:
        image = image.rotate(-frame.rotation_angle, expand=True)
    return image


def _read(path: Path, size: int) -> bytes:
    """At most `size` bytes from the start of a file, read at once."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        return os.read(descriptor, size)
    finally:
        os.close(descriptor)


def checksum(content: bytes) -> str:
    """What a cache entry's sidecar holds: its size and CRC-32.

    CRC-32 detects damage (disk errors, a file edited or cut) at half SHA-256's cost on warm runs,
    where every entry is checked; it is no defence against someone who can write the cache, but
    neither would a hash stored beside the entry be.
    """
    return f"{len(content)} crc32:{zlib.crc32(content):08x}\n"


class CropStore:
    """Final training images, oriented and enhanced, one file per distinct request.

    Each crop is fetched once, decoded once and written once; a later run with the same cache
    folder fetches nothing. Beside each entry `<key>.jpg`, `<key>.sum` holds its size and CRC-32,
    checked before the entry is reused. Without a cache (`kept` false: a scratch folder, new and
    removed by each run), entries are only written: nothing is looked up nor checksummed.
    """

    def __init__(
        self, source: ImageSource, folder: Path, contrast: bool = False, kept: bool = True
    ):
        self.source = source
        self.folder = Path(folder)
        self.contrast = contrast
        self.kept = kept
        self.partials: set[Path] = set()  # being written: removed if the run is interrupted
        self.folders: set[Path] = set()  # cache sub-folders made by this run (one mkdir each)

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
        return Path(f"{self.folder}/{digest[:2]}/{digest}.jpg")  # one path made, not three

    def cached(self, request: CropRequest, frame: Frame) -> Path | None:
        """The final image if a previous run left a sound one in the cache.

        Every entry of a warm run is checked: its sidecar and the bytes it announces (one more,
        to tell a longer file) are read with a system call each, with no Python file object
        (an entry's check took 69 µs with `Path.read_text` and `read_bytes`, 52 µs so)."""
        if not self.kept:
            return None  # a scratch folder starts empty: an element's image is fetched once
        path = self.path(request, frame)
        try:
            expected = _read(path.with_suffix(".sum"), SIDECAR_BYTES)
        except OSError:
            return None  # not cached (or by a version without checksums): fetched
        size = expected.partition(b" ")[0]
        try:
            content = _read(path, int(size) + 1) if size.isdigit() else b""
        except OSError:
            content = b""
        if checksum(content).encode() == expected:
            return path
        logger.warning(f"Damaged cache entry {path} (size or checksum differs): fetching it again")
        # Removed, so that it is reported once (the fetch checks the cache again)
        path.with_suffix(".sum").unlink(missing_ok=True)
        return None

    def get(self, request: CropRequest, frame: Frame) -> tuple[Path, bool]:
        """Path of the final image and whether it came from the cache; raises ImageError, or
        StorageError when the cache cannot be written."""
        path = self.cached(request, frame)
        if path is not None:
            return path, True
        fetched = self.source.fetch(request)
        if isinstance(fetched, bytes):
            image = open_image(fetched)
            if self._usable_as_received(image, request, frame):
                # A JPEG exactly as needed is kept as received: no re-encoding, no quality loss
                content = fetched
            else:
                content = encode(
                    load_at_size(image, request.width, request.height), frame, self.contrast
                )
        else:
            content = encode(fetched, frame, self.contrast)
        path = self.path(request, frame)
        self._write(path, content)
        return path, False

    def _write(self, path: Path, content: bytes) -> None:
        """Write an entry and its checksum atomically (write, then rename): no partial file."""
        partial = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.partial")
        partial_sum = partial.with_suffix(".partial-sum")
        self.partials.update((partial, partial_sum))
        try:
            if path.parent not in self.folders:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.folders.add(path.parent)
            partial.write_bytes(content)
            if self.kept:
                partial_sum.write_text(checksum(content))
                # The checksum first: a stop between the renames leaves a mismatch, fetched again
                partial_sum.replace(path.with_suffix(".sum"))
            partial.replace(path)
        except BaseException as error:
            for leftover in (partial, partial_sum):
                leftover.unlink(missing_ok=True)
            self.partials.difference_update((partial, partial_sum))
            if not isinstance(error, OSError):
                raise
            reason = "the disk is full" if error.errno in DISK_FULL else error.strerror or error
            raise StorageError(
                f"Cannot write the image cache in {self.folder}: {reason}. Free some space there, "
                "or choose another folder with --cache-dir."
            ) from error
        # both renamed: nothing left to remove
        self.partials.difference_update((partial, partial_sum))

    def remove_partials(self) -> None:
        """Files other threads were writing when the run stopped."""
        for partial in list(self.partials):
            partial.unlink(missing_ok=True)

    def _usable_as_received(self, image: Image.Image, request: CropRequest, frame: Frame) -> bool:
        if frame.rotation_angle or frame.mirrored or self.contrast:
            return False
        if image.format != "JPEG" or image.mode not in ("RGB", "L"):
            return False
        if image.size != (request.width, request.height):
            return False
        try:
            # Decoding at 1/8 scale reads the whole stream (truncation and garbage fail here)
            # for a fraction of a full decode
            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
        except DECODE_ERRORS as error:
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
    # `convert` copies an image already in RGB (a crop's 1.2 MB): not needed, nothing changes it
    return image if image.mode == "RGB" else image.convert("RGB")


def encode(image: Image.Image, frame: Frame, contrast: bool) -> bytes:
    """Orient, optionally enhance, and encode one training image as JPEG."""
    image = orient(to_rgb(image), frame)
    if contrast:
        image = ImageOps.equalize(ImageOps.grayscale(image)).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def write_image(image: Image.Image, frame: Frame, contrast: bool, path: Path) -> None:
    """Orient, optionally enhance, and write one training image as JPEG."""
    path.write_bytes(encode(image, frame, contrast))
