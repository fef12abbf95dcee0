"""Local parts of the image pipeline: folder source, contrast, orientation of written images."""

import numpy as np
import pytest
from PIL import Image, ImageDraw
from PIL.JpegImagePlugin import JpegImageFile

from worker_yolo_training.core import Box, Frame
from worker_yolo_training.export import ImageInfo
from worker_yolo_training.images import (
    CropRequest,
    CropStore,
    FolderSource,
    ImageError,
    fetch_size,
    open_scan,
    write_image,
)


def test_contrast_writes_an_equalised_grayscale_image(tmp_path):
    image = Image.new("RGB", (64, 32), (120, 100, 90))
    ImageDraw.Draw(image).rectangle([0, 0, 31, 31], fill=(130, 110, 100))  # low contrast
    path = tmp_path / "out.jpg"
    write_image(image, Frame(Box(0, 0, 64, 32)), contrast=True, path=path)
    with Image.open(path) as written:
        red, green, blue = written.split()
        assert red.tobytes() == green.tobytes() == blue.tobytes()
        low, high = red.getextrema()
        assert high - low > 200  # equalised: the two grays pulled apart


def test_fetch_size_never_upscales_and_fits_the_oriented_longest_side():
    assert fetch_size(Frame(Box(0, 0, 300, 100)), 640) == (300, 100)
    assert fetch_size(Frame(Box(0, 0, 1280, 640)), 640) == (640, 320)
    # rotated 90°: the longest side of the oriented image is still the crop's 1280
    assert fetch_size(Frame(Box(0, 0, 1280, 640), 90), 640) == (640, 320)


def test_folder_source_crops_and_resizes_and_reports_missing_files(tmp_path):
    image = Image.new("RGB", (200, 100), "white")
    ImageDraw.Draw(image).rectangle([100, 0, 199, 99], fill="black")
    image.save(tmp_path / "img.png")
    source = FolderSource(tmp_path)
    info = ImageInfo("img", "unused", 200, 100, 2)
    crop = source.fetch(CropRequest(info, Box(100, 0, 100, 100), 50, 50))
    assert crop.size == (50, 50) and crop.getpixel((25, 25)) == (0, 0, 0)
    with pytest.raises(ImageError, match="no file for image other"):
        source.fetch(CropRequest(ImageInfo("other", "", 10, 10, 2), Box(0, 0, 10, 10), 10, 10))


def test_folder_crops_are_resampled_with_pillows_bicubic(tmp_path):
    # A lossless file, reduced 2.5×: the pixels are the crop's bicubic ones (antialiased,
    # Pillow's `thumbnail` default), not LANCZOS'
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (100, 200, 3), dtype=np.uint8))
    noise.save(tmp_path / "img.png")
    info = ImageInfo("img", "", 200, 100, 2)
    crop = FolderSource(tmp_path).fetch(CropRequest(info, Box(50, 0, 100, 100), 40, 40))
    region = noise.crop((50, 0, 150, 100))
    assert crop.tobytes() == region.resize((40, 40), Image.Resampling.BICUBIC).tobytes()
    assert crop.tobytes() != region.resize((40, 40), Image.Resampling.LANCZOS).tobytes()


def bilinear(pixels: np.ndarray, box: tuple, size: tuple[int, int]) -> np.ndarray:
    """Bilinear interpolation from its definition: output pixel centre x + 0.5 is pixel
    left + (x + 0.5) × scale of the region, edges repeated."""
    left, top, right, bottom = box
    width, height = size

    def axis(start, end, count, limit):
        positions = start + (np.arange(count) + 0.5) * (end - start) / count - 0.5
        low = np.floor(positions)
        weight = positions - low
        low = low.astype(int)
        return np.clip(low, 0, limit - 1), np.clip(low + 1, 0, limit - 1), weight

    x0, x1, wx = axis(left, right, width, pixels.shape[1])
    y0, y1, wy = axis(top, bottom, height, pixels.shape[0])
    wx, wy = wx[None, :, None], wy[:, None, None]
    rows0, rows1 = pixels[y0].astype(float), pixels[y1].astype(float)
    top_row = rows0[:, x0] * (1 - wx) + rows0[:, x1] * wx
    bottom_row = rows1[:, x0] * (1 - wx) + rows1[:, x1] * wx
    return top_row * (1 - wy) + bottom_row * wy


def test_full_resolution_crops_reduced_less_than_twice_keep_pillows_bicubic(tmp_path):
    # A lossless file reduced 1.3× is not decoded at reduced scale: its crop is Pillow's
    # antialiased bicubic, not bilinear interpolation
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (100, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "img.png")
    info = ImageInfo("img", "", 200, 100, 2)
    crop = FolderSource(tmp_path).fetch(CropRequest(info, Box(30, 10, 130, 80), 100, 62))
    region = Image.fromarray(noise).crop((30, 10, 160, 90))
    assert crop.tobytes() == region.resize((100, 62), Image.Resampling.BICUBIC).tobytes()
    linear = bilinear(noise, (30, 10, 160, 90), (100, 62))
    assert np.abs(np.asarray(crop, float) - linear).mean() > 5


@pytest.mark.parametrize(
    ("box", "size"),
    [
        (Box(51, 33, 249, 167), (100, 67)),  # a part of the scan
        (Box(1, 1, 397, 297), (160, 120)),  # most of it (read whole, not cropped first)
    ],
)
def test_jpeg_scans_decoded_at_half_scale_keep_an_odd_crops_exact_place(tmp_path, box, size):
    # Decoded at 1/2 scale, a crop whose edges are odd pixels starts half a pixel into the
    # decoded image: interpolated from there, not from a rounded pixel
    rng = np.random.default_rng(2)
    smooth = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).resize(
        (400, 300), Image.Resampling.BICUBIC
    )
    smooth.save(tmp_path / "scan.jpg", quality=95)
    info = ImageInfo("scan", "", 400, 300, 2)
    crop = FolderSource(tmp_path).fetch(CropRequest(info, box, *size))
    with Image.open(tmp_path / "scan.jpg") as scan:
        scan.draft("RGB", (160, 120))
        assert scan.size == (200, 150)  # the decoder's own 1/2 scale
        half = np.asarray(scan)
    left, top, right, bottom = box.x, box.y, box.x + box.width, box.y + box.height
    expected = bilinear(half, (left / 2, top / 2, right / 2, bottom / 2), size)
    assert np.abs(np.asarray(crop, float) - expected).max() <= 1
    shifted = bilinear(
        half, ((left - 1) / 2, (top - 1) / 2, (right - 1) / 2, (bottom - 1) / 2), size
    )
    assert np.abs(shifted - expected).max() > 10


def test_store_writes_oriented_crops_once(tmp_path):
    image = Image.new("RGB", (200, 100), "white")
    image.paste((0, 0, 0), (0, 0, 20, 10))  # top-left corner
    image.save(tmp_path / "img.png")
    store = CropStore(FolderSource(tmp_path), tmp_path / "cache")
    request = CropRequest(ImageInfo("img", "", 200, 100, 2), Box(0, 0, 200, 100), 200, 100)
    frame = Frame(Box(0, 0, 200, 100), rotation_angle=90)
    path, cached = store.get(request, frame)
    assert not cached
    with Image.open(path) as written:
        assert written.size == (100, 200)
        assert written.getpixel((95, 5))[0] < 60  # the corner turned to the top right
    assert store.get(request, frame) == (path, True)


def test_a_store_without_cache_only_writes(tmp_path):
    """`--no-cache`: the scratch folder is new and removed by each run, so nothing is looked up
    in it, and no checksum is written beside the images."""
    Image.new("RGB", (200, 100), "white").save(tmp_path / "img.png")
    request = CropRequest(ImageInfo("img", "", 200, 100, 2), Box(0, 0, 200, 100), 200, 100)
    frame = Frame(Box(0, 0, 200, 100))
    scratch = CropStore(FolderSource(tmp_path), tmp_path / "scratch", kept=False)
    path, cached = scratch.get(request, frame)
    assert not cached and path.is_file()
    assert scratch.get(request, frame) == (path, False)  # fetched again, never looked up
    assert [file.suffix for file in (tmp_path / "scratch").rglob("*") if file.is_file()] == [".jpg"]
    # a kept store reuses it once its checksum is there
    kept = CropStore(FolderSource(tmp_path), tmp_path / "cache")
    assert kept.get(request, frame)[1] is False and kept.get(request, frame)[1] is True


def test_sixteen_bit_scans_are_scaled_not_clipped(tmp_path):
    values = np.full((20, 40), 30000, dtype=np.uint16)
    values[:, 20:] = 65535
    scan = Image.fromarray(values)
    assert scan.mode == "I;16"
    path = tmp_path / "out.jpg"
    write_image(scan, Frame(Box(0, 0, 40, 20)), contrast=False, path=path)
    with Image.open(path) as written:
        assert abs(written.getpixel((5, 10))[0] - 117) <= 2  # 30000 / 65535 × 255
        assert written.getpixel((35, 10))[0] >= 253


def test_folder_files_at_another_resolution_are_cropped_at_scale(tmp_path):
    half = Image.new("RGB", (100, 50), "white")
    half.paste((0, 0, 0), (50, 0, 100, 50))  # right half black
    half.save(tmp_path / "img.png")
    info = ImageInfo("img", "", 200, 100, 2)  # the export's size: twice the file's
    crop = FolderSource(tmp_path).fetch(CropRequest(info, Box(100, 0, 100, 100), 100, 100))
    assert crop.size == (100, 100) and crop.getpixel((50, 50)) == (0, 0, 0)
    Image.new("RGB", (100, 100)).save(tmp_path / "square.png")
    square = ImageInfo("square", "", 200, 100, 2)
    with pytest.raises(ImageError, match=r"100×100 px but the export says image square is 200×100"):
        FolderSource(tmp_path).fetch(CropRequest(square, Box(0, 0, 10, 10), 10, 10))


def test_folder_scans_beyond_pillows_bomb_limit_are_read(tmp_path, monkeypatch):
    """A local scan over Pillow's decompression-bomb limit is read, crop included, while the
    limit still holds for any other image the process opens (Pillow's own `open`)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a 100×100 file is now "a bomb"
    scan = Image.new("RGB", (100, 100), "gray")
    ImageDraw.Draw(scan).rectangle([10, 20, 89, 69], fill=(200, 30, 30))
    scan.save(tmp_path / "img.png")
    source = FolderSource(tmp_path)
    info = ImageInfo("img", "", 100, 100, 2)
    crop = source.fetch(CropRequest(info, Box(0, 0, 100, 100), 50, 50))
    assert crop.size == (50, 50)
    # A crop of 80×50 = 4000 px, at its own size: made of bands, the same pixels as the file's
    exact = source.fetch(CropRequest(info, Box(10, 20, 80, 50), 80, 50))
    assert np.array_equal(np.asarray(exact), np.asarray(scan)[20:70, 10:90])
    assert Image.MAX_IMAGE_PIXELS == 1000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tmp_path / "img.png")
    with pytest.raises(ImageError, match="more than 5000 pixels"):
        open_scan(tmp_path / "img.png", max_pixels=5000)


@pytest.mark.parametrize("reduction", [1.5, 2.3, 4.6, 9.5])
def test_folder_jpegs_are_decoded_at_reduced_scale_with_the_same_region(
    tmp_path, monkeypatch, reduction
):
    # A smooth gradient with a black square: decoded at 1/2, 1/4 or 1/8 scale (Pillow's draft)
    # whenever the crop is at least twice the size asked, the crop lands on the same pixels as
    # a full decode, to a fraction of a gray level (JPEG noise aside); under 2×, a full decode
    x, y = np.meshgrid(np.arange(1600), np.arange(1200))
    pixels = np.stack([x * 255 // 1600, y * 255 // 1200, (x + y) * 255 // 2800], axis=2)
    pixels[500:700, 700:900] = 0
    Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "scan.jpg", quality=95)
    info = ImageInfo("scan", "", 1600, 1200, 2)
    crop = Box(601, 403, 600, 400)
    size = (round(600 / reduction), round(400 / reduction))
    scales = []
    draft = JpegImageFile.draft

    def recorded(image, mode, wanted):
        result = draft(image, mode, wanted)
        scales.append(1600 / image.width)
        return result

    monkeypatch.setattr(JpegImageFile, "draft", recorded)
    region = FolderSource(tmp_path).fetch(CropRequest(info, crop, *size))
    with Image.open(tmp_path / "scan.jpg") as full:
        expected = full.crop((601, 403, 1201, 803)).resize(size, Image.Resampling.BICUBIC)
    assert region.size == size
    assert max(scales, default=1) == 2 ** min(3, int(np.log2(reduction)))
    difference = np.abs(np.asarray(region, float) - np.asarray(expected, float))
    assert difference.mean() < 1.0
    # the square's edges at the same place: (700 - 601, 500 - 403) in the crop
    left, top = (700 - 601) / reduction, (500 - 403) / reduction
    assert np.asarray(region)[int(top) + 2, int(left) + 2].max() < 40
    assert np.asarray(region)[int(top) - 2, int(left) - 2].min() > 60
