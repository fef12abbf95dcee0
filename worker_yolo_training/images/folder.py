"""Full images read from a local folder (`--images`), cropped and resized here.

Local archival scans are the user's own files and may exceed Pillow's decompression-bomb limit
(`Image.MAX_IMAGE_PIXELS`, 89 Mpx; twice that is refused). That limit is process-wide: lifting it
would take the guard away from every other image the process opens (IIIF answers included). So
the limit is left as it is, and a local file is opened with this module's own, explicit check
(`open_scan`: `FOLDER_MAX_PIXELS`), then cropped in bands that each stay under Pillow's limit
(`crop`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from worker_yolo_training.core import NAME_MAX_BYTES, printable
from worker_yolo_training.images.request import DECODE_ERRORS, CropRequest, ImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp")
# The largest local scan read (8 bits RGB: 6 GiB decoded); larger ones are reported as failed
FOLDER_MAX_PIXELS = 1 << 31
# How a crop of a scan at full resolution is brought to its size: Pillow's antialiased bicubic
# (its `thumbnail`'s default). A JPEG scan decoded at reduced scale is interpolated bilinearly
# (`resample`): it is then reduced by less than 2 per side, which this bound checks
RESAMPLING = Image.Resampling.BICUBIC
BILINEAR_MAX_REDUCTION = 2.0


def open_scan(path: Path, max_pixels: int = FOLDER_MAX_PIXELS) -> Image.Image:
    """Open a local image file, refusing one of more than `max_pixels` pixels, whatever
    Pillow's process-wide limit: the file is identified by Pillow's registered formats, as
    `Image.open` does, without its decompression-bomb check."""
    Image.init()
    with path.open("rb") as file:
        prefix = file.read(16)
    for name in Image.ID:
        factory, accept = Image.OPEN[name]
        accepted = accept(prefix) if accept is not None else True
        if isinstance(accepted, str) or not accepted:
            continue
        try:
            image = factory(str(path))
        except (SyntaxError, IndexError, TypeError):
            continue  # not this format after all (what `Image.open` does too)
        if image.width * image.height > max_pixels:
            image.close()
            raise ImageError(
                f"{path} is {image.width}×{image.height} px: more than {max_pixels} pixels"
            )
        return image
    raise UnidentifiedImageError(f"cannot identify image file {str(path)!r}")


def crop(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """`image.crop(box)`, made of bands that each stay under Pillow's decompression-bomb limit
    when the whole crop would not (the pixels are the same)."""
    left, top, right, bottom = box
    width, height = right - left, bottom - top
    limit = Image.MAX_IMAGE_PIXELS
    if limit is None or width * height <= limit:
        return image.crop(box)
    image.load()
    region = Image.new(image.mode, (width, height))
    region.info = image.info.copy()
    if image.palette is not None:
        region.palette = image.palette.copy()
    rows = max(1, limit // max(1, width))
    for y in range(top, bottom, rows):
        region.paste(image.crop((left, y, right, min(bottom, y + rows))), (0, y - top))
    return region


def drafted_region(
    image: Image.Image, box: tuple[int, int, int, int], size: tuple[int, int]
) -> Image.Image | None:
    """The region `box` of an opened JPEG at `size`, decoded at 1/2, 1/4 or 1/8 scale (Pillow's
    `draft`: libjpeg scales while decoding) when the region is still at least `size` at that
    scale, then interpolated from the region alone (`resample`); None when the file cannot be
    decoded smaller (another format, or a region not twice as large as `size`)."""
    left, top, right, bottom = box
    width, height = size
    if image.format != "JPEG" or (right - left, bottom - top) == size:
        return None
    # the whole image at the region's reduction: draft picks the scale that keeps it as large
    wanted = (
        max(1, image.width * width // (right - left)),
        max(1, image.height * height // (bottom - top)),
    )
    full_width = image.width
    drafted = image.draft(None, wanted)
    if drafted is None or image.width == full_width:
        return None
    factor = drafted[1][2] / full_width  # 1/2, 1/4 or 1/8
    scaled = (left * factor, top * factor, right * factor, bottom * factor)
    return resample(image, scaled, size)


def resample(image: Image.Image, box: tuple[float, ...], size: tuple[int, int]) -> Image.Image:
    """The region `box` of a scan decoded at reduced scale (edges in its pixels, fractional
    ones included) at `size`.

    Reduced by at most `BILINEAR_MAX_REDUCTION` per side (8-bit gray or RGB): OpenCV's bilinear
    interpolation (`warpAffine`, the exact map from the output pixels to the region), what
    Ultralytics resizes its own images with; 0.7 ms a 480×640 crop, where Pillow's antialiased
    bicubic took 6.8 ms, most of a folder run's time. Reduced by more, or another mode:
    Pillow's antialiased bicubic, so that a strong reduction does not alias."""
    left, top, right, bottom = box
    scale_x, scale_y = (right - left) / size[0], (bottom - top) / size[1]
    if image.mode not in ("L", "RGB") or max(scale_x, scale_y) > BILINEAR_MAX_REDUCTION:
        return image.resize(size, RESAMPLING, box=box)
    import cv2  # imported where used: 16 ms, and only folder runs resample here

    # the pixels bilinear interpolation reads (the map stays within the region, ±1 px); when
    # they are most of the image (a page), the whole image: one copy instead of two
    x0, y0 = max(0, math.floor(left) - 1), max(0, math.floor(top) - 1)
    x1, y1 = min(image.width, math.ceil(right) + 1), min(image.height, math.ceil(bottom) + 1)
    if 2 * (x1 - x0) * (y1 - y0) > image.width * image.height:
        x0 = y0 = 0
        pixels = np.asarray(image)
    else:
        pixels = np.asarray(image.crop((x0, y0, x1, y1)))
    # output pixel centre x + ½ is at left + (x + ½) × scale in the region, the pixel index that
    # minus ½, minus where the pixels start; edges repeat as Pillow clamps
    matrix = np.array(
        [
            [scale_x, 0, left - x0 + (scale_x - 1) / 2],
            [0, scale_y, top - y0 + (scale_y - 1) / 2],
        ]
    )
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    resampled = cv2.warpAffine(pixels, matrix, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    return Image.fromarray(resampled, image.mode)


class FolderSource:
    """Full images read from a folder holding one file per image id (`<image id>.jpg`, ...).
    Only files inside the folder are read: a link leading out of it is refused like a missing
    file."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.real_folder = self.folder.resolve()  # once: `resolve` is an lstat per path part

    def path(self, image_id: str) -> Path:
        """The file of an image, inside the folder only (an id such as `../x`, or a link to
        another folder, is refused)."""
        longest = max(len(f"{image_id}{extension}".encode()) for extension in IMAGE_EXTENSIONS)
        if longest > NAME_MAX_BYTES:
            raise ImageError(
                f"image id {printable(image_id)} is too long for a file name ({longest} bytes, "
                f"at most {NAME_MAX_BYTES}): not looked for in {self.folder}"
            )
        for extension in IMAGE_EXTENSIONS:
            candidate = self.folder / f"{image_id}{extension}"
            if candidate.parent != self.folder or "\0" in image_id:
                raise ImageError(
                    f"image id {image_id!r} is not a plain file name: not looked for outside "
                    f"{self.folder}"
                )
            if candidate.is_file():
                return self._inside(candidate)
        raise ImageError(f"no file for image {printable(image_id)} in {self.folder}")

    def _inside(self, candidate: Path) -> Path:
        """`candidate`, unless it is a link leading out of the folder (the folder itself is
        resolved, and the candidate's parent is the folder: only its last part can be a link)."""
        if not candidate.is_symlink():
            return candidate
        real = candidate.resolve()
        if not real.is_relative_to(self.real_folder):
            raise ImageError(
                f"{candidate} is a link to {real}, outside {self.folder}: not read (copy the "
                "image into the folder)"
            )
        return candidate

    def describe(self, request: CropRequest) -> str:
        crop = request.crop
        return (
            f"{self.real_folder}/{printable(request.image.id)}"
            f"#{crop.x},{crop.y},{crop.width},{crop.height}@{request.width},{request.height}"
        )

    def fetch(self, request: CropRequest) -> Image.Image:
        path = self.path(request.image.id)
        try:
            with open_scan(path) as full:
                box = self._scaled_box(request, full.size, path)
                size = (request.width, request.height)
                region = drafted_region(full, box, size)
                if region is None:
                    region = crop(full, box)
                    if size != region.size:
                        region = region.resize(size, RESAMPLING)
                region.load()
                return region
        except DECODE_ERRORS as error:
            raise ImageError(f"not a valid image ({error}) at {path}") from error

    @staticmethod
    def _scaled_box(request: CropRequest, size: tuple[int, int], path: Path) -> tuple:
        """The crop in the file's pixels: a file may be a resized copy of the export's image."""
        image, crop = request.image, request.crop
        scale_x, scale_y = size[0] / image.width, size[1] / image.height
        if abs(scale_x - scale_y) > 0.01 * max(scale_x, scale_y):
            raise ImageError(
                f"{path} is {size[0]}×{size[1]} px but the export says image {printable(image.id)} is "
                f"{image.width}×{image.height}: not the same picture"
            )
        return (
            round(crop.x * scale_x),
            round(crop.y * scale_y),
            round((crop.x + crop.width) * scale_x),
            round((crop.y + crop.height) * scale_y),
        )
