"""Hostile and broken image servers, caches and folders: each ends in a clear reason, in bounded
time and memory, without reading outside its folder or showing a password."""

import base64
import errno
import io
import socket
import struct
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from tests.helpers import (
    all_failures,
    assert_complete_except,
    call_within,
    closed_port,
    rewrite_image_urls,
    summary,
)
from tests.iiif_server import IIIFServer
from worker_yolo_training.core import Box, Frame
from worker_yolo_training.export import ImageInfo
from worker_yolo_training.images import (
    CropRequest,
    CropStore,
    FolderSource,
    IIIFSource,
    ImageError,
    ImageServerUnreachable,
    StorageError,
    body_limit,
    redact,
    same_shape,
)

MIB = 1024 * 1024


def picture(identifier: str) -> Image.Image:
    image = Image.new("RGB", (400, 300), "white")
    ImageDraw.Draw(image).rectangle([50, 50, 150, 100], fill="black")
    return image


@pytest.fixture
def server():
    with IIIFServer(generator=picture) as running:
        yield running


def request_for(base_url: str, identifier: str = "img", size=(200, 150)) -> CropRequest:
    image = ImageInfo(identifier, f"{base_url}/{identifier}", 400, 300, 2)
    return CropRequest(image, Box(0, 0, 400, 300), *size)


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width×height pixels in a few bytes (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


# ---------------------------------------------------------------- bounded downloads


@pytest.mark.parametrize("declare_length", [False, True])
def test_oversized_answer_is_aborted_while_streaming(server, declare_length):
    server.huge_ids = {"img": 256 * MIB}
    server.declare_length = declare_length
    source = IIIFSource(retries=1)
    request = request_for(server.base_url)
    error, seconds = call_within(20, source.fetch, request)
    assert isinstance(error, ImageError)
    assert f"{body_limit(200, 150)}-byte limit" in str(error)
    # Aborted after the limit (1.3 MiB) plus what the sockets buffer, not the whole 256 MiB
    assert server.bytes_sent < 32 * MIB
    assert seconds < 10


def test_body_limit_keeps_honest_answers():
    noise = Image.effect_noise((640, 640), 100).convert("RGB")
    buffer = io.BytesIO()
    noise.save(buffer, format="JPEG", quality=100, subsampling=0)
    assert len(buffer.getvalue()) < body_limit(640, 640)


def test_trickling_server_is_cut_at_the_deadline(server):
    server.trickle_ids = {"img": 0.01}  # a few kB at 100 bytes/s: a minute or more
    source = IIIFSource(timeout=1, deadline=1.5, retries=2, backoff=0.01)
    error, seconds = call_within(30, source.fetch, request_for(server.base_url))
    assert isinstance(error, ImageError)
    assert "not complete after 1.5 s" in str(error)
    assert seconds < 6  # 2 attempts of 1.5 s (+ one read timeout at most each)


def test_connect_timeout_follows_the_image_timeout(make_export, tmp_path):
    export = make_export(pages=4)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        # Fill its accept queue: further connections wait for ever (no answer to their SYN)
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        rewrite_image_urls(export.database, export.server.base_url, f"http://127.0.0.1:{port}/iiif")
        started = time.monotonic()
        process = export.run(tmp_path / "out", "--image-timeout", "0.5", check=False)
        seconds = time.monotonic() - started
        for filler in fillers:
            filler.close()
    assert "timed out. (connect timeout=0.5)" in process.stderr
    assert f"Image server 127.0.0.1:{port} is unreachable" in process.stderr
    assert process.returncode == 2 and "Traceback" not in process.stderr
    assert seconds < 9  # a 10 s connect timeout per attempt before


# ---------------------------------------------------------------- answers of another size


def test_answers_of_another_size_are_resized_or_dropped(make_export, tmp_path):
    export = make_export(pages=12)
    larger, squashed = list(export.pages.values())[1:3]  # in the train set
    export.server.resized_ids = {larger: (2.0, 2.0), squashed: (1.0, 0.5)}
    output = tmp_path / "out"
    export.run(output)
    # Every image written is at the requested size (320 px long side), the squashed one dropped
    assert_complete_except(export, output, {squashed})
    (failure,) = all_failures(output).values()
    assert "another aspect ratio" in failure["reason"] and "for a 229×320 crop" in failure["reason"]


@pytest.mark.parametrize(
    ("received", "same"),
    [
        ((458, 640), True),  # twice the size
        ((230, 320), True),  # a server rounding the other way: 1 px
        ((2290, 3210), True),  # within 1 %
        ((2290, 3250), False),  # 1.6 % taller
        ((229, 160), False),  # squashed
        ((0, 320), False),
    ],
)
def test_same_shape_tolerates_rounding_only(received, same):
    assert same_shape(received, (229, 320)) is same


def test_large_jpeg_answers_are_decoded_at_reduced_scale(server, tmp_path, monkeypatch):
    from PIL import JpegImagePlugin

    big = Image.new("RGB", (3200, 2400), "white")
    buffer = io.BytesIO()
    big.save(buffer, format="JPEG")
    server.raw_bodies = {"img": buffer.getvalue()}
    decoded_sizes = []
    original_load = JpegImagePlugin.JpegImageFile.load

    def spy_load(image):
        decoded_sizes.append(image.size)
        return original_load(image)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy_load)
    store = CropStore(IIIFSource(retries=1), tmp_path / "cache")
    path, _ = store.get(request_for(server.base_url), Frame(Box(0, 0, 400, 300)))
    with Image.open(path) as written:
        assert written.size == (200, 150)
    assert set(decoded_sizes) == {(400, 300)}  # 1/8 of 3200×2400, not the full answer


def test_far_too_large_answers_are_refused_before_decoding(server, tmp_path):
    big = Image.new("RGB", (4000, 3000), "white")
    buffer = io.BytesIO()
    big.save(buffer, format="PNG")  # no reduced decoding for PNG
    server.raw_bodies = {"img": buffer.getvalue()}
    store = CropStore(IIIFSource(retries=1), tmp_path / "cache")
    with pytest.raises(ImageError, match=r"sent 4000×3000 px for a 200×150 crop: too large"):
        store.get(request_for(server.base_url), Frame(Box(0, 0, 400, 300)))


def test_decompression_bomb_over_iiif_fails_cleanly(server, tmp_path):
    FolderSource(tmp_path)  # lifts Pillow's limit for local files: IIIF answers stay bounded
    server.raw_bodies = {"img": png_header(40000, 30000)}
    store = CropStore(IIIFSource(retries=1), tmp_path / "cache")
    with pytest.raises(ImageError, match=r"40000×30000 px|decompression bomb"):
        store.get(request_for(server.base_url), Frame(Box(0, 0, 400, 300)))


# ---------------------------------------------------------------- server down, other schemes


def test_unreachable_server_stops_within_seconds_naming_it():
    port = closed_port()
    source = IIIFSource()  # 5 attempts with backoff: 15 s per image before
    error, seconds = call_within(30, source.fetch, request_for(f"http://127.0.0.1:{port}/iiif"))
    assert isinstance(error, ImageServerUnreachable)
    assert f"Image server 127.0.0.1:{port} is unreachable" in str(error)
    assert "(Failed to establish a new connection: [Errno 111] Connection refused)" in str(error)
    assert seconds < 5
    # Every later image of that host stops at once
    error, seconds = call_within(5, source.fetch, request_for(f"http://127.0.0.1:{port}/iiif", "b"))
    assert isinstance(error, ImageServerUnreachable) and seconds < 0.5


def test_a_server_that_answered_once_is_retried_not_declared_down(tmp_path):
    server = IIIFServer(generator=picture).start()
    base_url = server.base_url
    source = IIIFSource(backoff=0.01)
    source.fetch(request_for(base_url))
    server.stop()  # its port now refuses connections
    source.http.clear()  # no kept-alive connection to it either
    with pytest.raises(ImageError, match=r"NewConnectionError|refused"):
        source.fetch(request_for(base_url, "other"))


def test_server_down_stops_the_run_quickly(make_export, tmp_path):
    export = make_export(pages=40)
    port = closed_port()
    rewrite_image_urls(export.database, export.server.base_url, f"http://127.0.0.1:{port}/iiif")
    started = time.monotonic()
    process = export.run(tmp_path / "out", check=False)
    assert time.monotonic() - started < 20  # 40 pages × 5 attempts with backoff before
    assert process.returncode == 2
    assert f"Image server 127.0.0.1:{port} is unreachable" in process.stderr
    assert "Traceback" not in process.stderr


@pytest.mark.parametrize("base", ["file:///etc", "ftp://127.0.0.1/iiif"])
def test_non_http_urls_fail_at_once(base):
    error, seconds = call_within(20, IIIFSource().fetch, request_for(base))
    assert isinstance(error, ImageError)
    assert "is not an http:// or https:// URL" in str(error)
    assert seconds < 1


# ---------------------------------------------------------------- credentials


def test_redact_hides_passwords_in_any_text():
    text = "Error: https://reader:p@:ss@iiif.example.org/x@y failed; http://a@b/ ok; c://d:e@f"
    assert redact(text) == (
        "Error: https://reader:***@iiif.example.org/x@y failed; http://a@b/ ok; c://d:***@f"
    )


def test_password_in_image_urls_is_sent_but_never_shown(make_export, tmp_path):
    export = make_export(pages=12)
    missing = list(export.pages.values())[1:3]  # in the train set
    export.server.status_overrides = dict.fromkeys(missing, 404)
    secret = "s3cret-Pw"
    origin = export.server.base_url
    rewrite_image_urls(export.database, origin, origin.replace("://", f"://reader:{secret}@"))
    output = tmp_path / "out"
    process = export.run(output)
    token = base64.b64encode(f"reader:{secret}".encode()).decode()
    assert set(export.server.authorizations) == {f"Basic {token}"}
    shown = process.stdout + process.stderr + (output / "dataset" / "summary.json").read_text()
    assert secret not in shown
    failures = all_failures(output)
    assert len(failures) == 2
    assert all(f["source"].startswith("http://reader:***@127.0.0.1") for f in failures.values())


# ---------------------------------------------------------------- cache


def zeros_in_the_middle(entry: Path) -> None:
    content = bytearray(entry.read_bytes())
    middle = len(content) // 2
    content[middle : middle + 16] = bytes(16)  # start and end markers intact
    entry.write_bytes(bytes(content))


def bytes_appended(entry: Path) -> None:
    entry.write_bytes(entry.read_bytes() + b"\0")


def cut_short(entry: Path) -> None:
    entry.write_bytes(entry.read_bytes()[:-1])


def sidecar_garbled(entry: Path) -> None:
    entry.with_suffix(".sum").write_bytes(b"\xff\xfe not a size")


@pytest.mark.parametrize(
    "damage", [zeros_in_the_middle, bytes_appended, cut_short, sidecar_garbled]
)
def test_a_damaged_cache_entry_is_fetched_again(make_export, tmp_path, damage):
    export = make_export(pages=8)
    export.run(tmp_path / "first")
    entries = sorted((export.root / "cache").glob("*/*.jpg"))
    damage(entries[0])
    process = export.run(tmp_path / "second")
    assert export.server.image_requests == 9
    assert process.stderr.count(f"Damaged cache entry {entries[0]}") == 1
    reports = summary(tmp_path / "second")["splits"].values()
    assert sum(r["images_downloaded"] for r in reports) == 1


def test_disk_full_while_caching_names_the_folder_and_leaves_no_file(tmp_path, monkeypatch):
    Image.new("RGB", (400, 300), "gray").save(tmp_path / "img.png")
    cache = tmp_path / "cache"
    store = CropStore(FolderSource(tmp_path), cache)
    original_write = Path.write_bytes

    def full_disk(path, data):
        original_write(path, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(StorageError, match=rf"image cache in {cache}: the disk is full"):
        store.get(request_for("unused"), Frame(Box(0, 0, 400, 300)))
    assert [path for path in cache.rglob("*") if path.is_file()] == []
    assert not store.partials


# ---------------------------------------------------------------- local folder


@pytest.mark.parametrize("escape", ["../secret", "{outside}/secret"])
def test_folder_source_reads_nothing_outside_its_folder(tmp_path, escape):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (40, 30)).save(tmp_path / "secret.png")
    image_id = escape.format(outside=tmp_path)
    request = CropRequest(ImageInfo(image_id, "", 40, 30, 2), Box(0, 0, 40, 30), 40, 30)
    with pytest.raises(ImageError, match="is not a plain file name"):
        FolderSource(folder).fetch(request)
