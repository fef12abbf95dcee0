"""A loopback IIIF Image API server for benchmarks and tests.

Serves ``{base}/{identifier}/{region}/{size}/{rotation}/{quality}.{format}`` and
``{base}/{identifier}/info.json`` for IIIF Image API 2.x and 3.0 from source images
on disk (one file per identifier) or generated on the fly by a callable.

Region, size and rotation are applied in that order, as the specification says
(https://iiif.io/api/image/3.0/#4-image-requests, https://iiif.io/api/image/2.1/):

* region: ``full``, ``square``, ``x,y,w,h``, ``pct:x,y,w,h``; a region partly outside
  the image is cropped to the image; one entirely outside, or of zero width or
  height, is a 400;
* size (2.x): ``full``, ``max``, ``w,``, ``,h``, ``pct:n``, ``w,h``, ``!w,h``;
  upscaling is allowed;
* size (3.0): ``max``, ``w,``, ``,h``, ``pct:n``, ``w,h``, ``!w,h``, each optionally
  prefixed by ``^``; without ``^`` a size larger than the region is a 400, except
  ``!w,h`` and ``max`` which are capped at the region size; ``full`` is a 400;
* rotation: ``n`` or ``!n`` (mirror first, then rotate clockwise), any angle in [0, 360];
* quality: ``default``, ``color``, ``gray``, ``bitonal``; format: jpg, png, webp, gif, tif.

``version=None`` accepts the union of both syntaxes (2.x upscaling rules, plus ``^``).

Fault injection (for tests): per-identifier HTTP status, corrupt bodies, and a number
of transient 503 answers before success.

Usage::

    with IIIFServer(images_dir=Path("imgs"), latency_ms=100) as server:
        url = f"{server.base_url}/{image_id}/full/max/0/default.jpg"
        ...
        print(server.request_count)
"""

from __future__ import annotations

import argparse
import io
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from PIL import Image, ImageOps

FORMATS = {
    "jpg": ("JPEG", "image/jpeg"),
    "png": ("PNG", "image/png"),
    "webp": ("WEBP", "image/webp"),
    "gif": ("GIF", "image/gif"),
    "tif": ("TIFF", "image/tiff"),
}
QUALITIES = {"default", "color", "gray", "bitonal"}
SOURCE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp")

_NUM = r"\d+(?:\.\d+)?"
_REGION_XYWH = re.compile(r"^(\d+),(\d+),(\d+),(\d+)$")
_REGION_PCT = re.compile(rf"^pct:({_NUM}),({_NUM}),({_NUM}),({_NUM})$")
_SIZE_W = re.compile(r"^(\d+),$")
_SIZE_H = re.compile(r"^,(\d+)$")
_SIZE_WH = re.compile(r"^(\d+),(\d+)$")
_SIZE_BEST = re.compile(r"^!(\d+),(\d+)$")
_SIZE_PCT = re.compile(rf"^pct:({_NUM})$")
_ROTATION = re.compile(rf"^(!?)({_NUM})$")


class IIIFError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int


def parse_region(region: str, width: int, height: int) -> Box:
    """Region in full-image pixels, cropped to the image (IIIF §4.1)."""
    if region == "full":
        return Box(0, 0, width, height)
    if region == "square":
        side = min(width, height)
        return Box((width - side) // 2, (height - side) // 2, side, side)
    if match := _REGION_XYWH.match(region):
        x, y, w, h = map(int, match.groups())
    elif match := _REGION_PCT.match(region):
        px, py, pw, ph = map(float, match.groups())
        x = round(px * width / 100)
        y = round(py * height / 100)
        w = round(pw * width / 100)
        h = round(ph * height / 100)
    else:
        raise IIIFError(400, f"Invalid region {region!r}")
    if w <= 0 or h <= 0:
        raise IIIFError(400, f"Region {region!r} has zero width or height")
    if x >= width or y >= height:
        raise IIIFError(400, f"Region {region!r} is entirely outside the image")
    return Box(x, y, min(w, width - x), min(h, height - y))


def parse_size(
    size: str,
    region_w: int,
    region_h: int,
    version: int | None,
    max_width: int | None = None,
    max_height: int | None = None,
) -> tuple[int, int]:
    """Output dimensions for a size parameter applied to a region (IIIF §4.2)."""
    upscale = False
    if size.startswith("^"):
        if version == 2:
            raise IIIFError(400, f"Size {size!r}: '^' is not IIIF 2.x syntax")
        upscale = True
        size = size[1:]
    # IIIF 2.x allows upscaling by default; 3.0 needs '^'.
    allow_upscale = upscale or version == 2 or version is None

    def fit_max(w: float, h: float) -> tuple[float, float]:
        scale = 1.0
        if max_width:
            scale = min(scale, max_width / w)
        if max_height:
            scale = min(scale, max_height / h)
        return w * scale, h * scale

    if size in ("full", "max"):
        if size == "full" and version == 3:
            raise IIIFError(400, "Size 'full' is not IIIF 3.0 syntax, use 'max'")
        if size == "full" and upscale:
            raise IIIFError(400, "Size '^full' is invalid")
        w, h = fit_max(region_w, region_h)
        return max(1, round(w)), max(1, round(h))

    if match := _SIZE_W.match(size):
        w = int(match.group(1))
        h = round(region_h * w / region_w)
    elif match := _SIZE_H.match(size):
        h = int(match.group(1))
        w = round(region_w * h / region_h)
    elif match := _SIZE_PCT.match(size):
        pct = float(match.group(1))
        if pct <= 0:
            raise IIIFError(400, f"Invalid size {size!r}")
        if pct > 100 and not allow_upscale:
            raise IIIFError(400, f"Size {size!r} upscales without '^'")
        w = round(region_w * pct / 100)
        h = round(region_h * pct / 100)
    elif match := _SIZE_WH.match(size):
        w, h = map(int, match.groups())
    elif match := _SIZE_BEST.match(size):
        bw, bh = map(int, match.groups())
        if bw <= 0 or bh <= 0:
            raise IIIFError(400, f"Invalid size {size!r}")
        scale = min(bw / region_w, bh / region_h)
        if not allow_upscale:
            # 3.0: "as large as possible but not larger than the extracted region"
            scale = min(scale, 1.0)
        w = round(region_w * scale)
        h = round(region_h * scale)
    else:
        raise IIIFError(400, f"Invalid size {size!r}")

    w, h = max(1, w), max(1, h)
    if (w > region_w or h > region_h) and not allow_upscale:
        raise IIIFError(400, f"Size {size!r} upscales the region without '^'")
    if (max_width and w > max_width) or (max_height and h > max_height):
        raise IIIFError(400, f"Size {size!r} exceeds the server's maximum size")
    return w, h


def parse_rotation(rotation: str) -> tuple[bool, float]:
    match = _ROTATION.match(rotation)
    if not match:
        raise IIIFError(400, f"Invalid rotation {rotation!r}")
    angle = float(match.group(2))
    if not 0 <= angle <= 360:
        raise IIIFError(400, f"Invalid rotation {rotation!r}")
    return bool(match.group(1)), angle % 360


def render(
    image: Image.Image,
    region: str,
    size: str,
    rotation: str,
    quality: str,
    fmt: str,
    *,
    version: int | None = 2,
    max_width: int | None = None,
    max_height: int | None = None,
    jpeg_quality: int = 90,
    resample: Image.Resampling = Image.Resampling.BICUBIC,
) -> bytes:
    """Apply an IIIF image request to a PIL image and encode the result."""
    if fmt not in FORMATS:
        raise IIIFError(400, f"Unsupported format {fmt!r}")
    if quality not in QUALITIES:
        raise IIIFError(400, f"Unsupported quality {quality!r}")
    width, height = image.size
    box = parse_region(region, width, height)
    out_w, out_h = parse_size(size, box.w, box.h, version, max_width, max_height)
    mirror, angle = parse_rotation(rotation)

    if (box.x, box.y, box.w, box.h) != (0, 0, width, height):
        image = image.crop((box.x, box.y, box.x + box.w, box.y + box.h))
    if (out_w, out_h) != image.size:
        image = image.resize((out_w, out_h), resample)
    if mirror:
        image = ImageOps.mirror(image)
    if angle:
        if angle in (90, 180, 270):
            image = image.transpose(
                {
                    90: Image.Transpose.ROTATE_270,  # PIL rotates counter-clockwise
                    180: Image.Transpose.ROTATE_180,
                    270: Image.Transpose.ROTATE_90,
                }[int(angle)]
            )
        else:
            fill = None if fmt == "png" else "white"
            if fmt == "png":
                image = image.convert("RGBA")
            image = image.rotate(-angle, expand=True, fillcolor=fill)

    if quality == "gray":
        image = image.convert("L")
    elif quality == "bitonal":
        image = image.convert("1")
    elif image.mode not in ("RGB", "L", "RGBA") or (image.mode == "RGBA" and fmt == "jpg"):
        image = image.convert("RGB")

    pil_format, _ = FORMATS[fmt]
    buffer = io.BytesIO()
    kwargs = {"quality": jpeg_quality} if pil_format in ("JPEG", "WEBP") else {}
    image.save(buffer, format=pil_format, **kwargs)
    return buffer.getvalue()


class IIIFServer:
    """Threaded loopback IIIF server; use as a context manager or call start()/stop().

    :param images_dir: folder holding one source file per identifier (``{id}.jpg``, ...).
    :param generator: callable ``identifier -> PIL.Image`` (or None if unknown) used
        when the identifier has no file in ``images_dir``.
    :param latency_ms: delay added to every request before answering (mutable attribute).
    :param version: 2, 3, or None to accept both syntaxes.
    :param cache_responses: keep encoded responses in memory keyed by path.
    :param status_overrides: identifier -> HTTP status to answer instead of the image.
    :param corrupt_ids: identifiers whose image requests answer 200 with broken bytes.
    :param transient_failures: identifier -> number of failed answers before success.
    :param transient_status: the status of those answers (503 by default).
    :param slow_ids: identifier -> seconds to wait before answering its image requests.
    :param huge_ids: identifier -> size in bytes of a body of zeros answered (200, JPEG type)
        instead of the image, streamed until the client hangs up; with ``declare_length`` its
        Content-Length is sent, else the body ends when the connection closes.
    :param trickle_ids: identifier -> seconds between two bytes of its (real) image answer.
    :param resized_ids: identifier -> (x, y) factors applied to the size of its answers.
    :param raw_bodies: identifier -> bytes answered (200, JPEG type) instead of the image.
    """

    def __init__(
        self,
        images_dir: Path | None = None,
        generator: Callable[[str], Image.Image | None] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        prefix: str = "/iiif",
        latency_ms: float = 0,
        version: int | None = 2,
        max_width: int | None = None,
        max_height: int | None = None,
        jpeg_quality: int = 90,
        cache_responses: bool = False,
        status_overrides: dict[str, int] | None = None,
        corrupt_ids: Iterable[str] = (),
        transient_failures: dict[str, int] | None = None,
        transient_status: int = 503,
        slow_ids: dict[str, float] | None = None,
        huge_ids: dict[str, int] | None = None,
        declare_length: bool = False,
        trickle_ids: dict[str, float] | None = None,
        resized_ids: dict[str, tuple[float, float]] | None = None,
        raw_bodies: dict[str, bytes] | None = None,
    ) -> None:
        assert images_dir is not None or generator is not None, "No image source"
        assert version in (2, 3, None)
        self.images_dir = Path(images_dir) if images_dir else None
        self.generator = generator
        self.host = host
        self.port = port
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.latency_ms = latency_ms
        self.version = version
        self.max_width = max_width
        self.max_height = max_height
        self.jpeg_quality = jpeg_quality
        self.cache_responses = cache_responses
        self.status_overrides = dict(status_overrides or {})
        self.corrupt_ids = set(corrupt_ids)
        self.transient_failures = dict(transient_failures or {})
        self.transient_status = transient_status
        self.slow_ids = dict(slow_ids or {})
        self.huge_ids = dict(huge_ids or {})
        self.declare_length = declare_length
        self.trickle_ids = dict(trickle_ids or {})
        self.resized_ids = dict(resized_ids or {})
        self.raw_bodies = dict(raw_bodies or {})
        self.authorizations: list[str | None] = []  # Authorization header of each request

        self._lock = threading.Lock()
        self._paths: dict[str, Path] = {}
        self._sizes: dict[str, tuple[int, int]] = {}
        self._cache: dict[str, tuple[bytes, str]] = {}
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.reset_counters()

    # ----------------------------------------------------------------- counters
    def reset_counters(self) -> None:
        with self._lock:
            self.request_count = 0
            self.image_requests = 0
            self.info_requests = 0
            self.error_count = 0
            self.bytes_sent = 0
            self.in_flight = 0
            self.max_in_flight = 0
            self.connections = 0
            self.paths: Counter[str] = Counter()
            self.statuses: Counter[int] = Counter()

    def stats(self) -> dict:
        with self._lock:
            return {
                "requests": self.request_count,
                "image_requests": self.image_requests,
                "info_requests": self.info_requests,
                "errors": self.error_count,
                "bytes_sent": self.bytes_sent,
                "max_in_flight": self.max_in_flight,
                "connections": self.connections,
                "statuses": dict(self.statuses),
                "duplicate_paths": sum(1 for n in self.paths.values() if n > 1),
            }

    # ---------------------------------------------------------------- lifecycle
    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "Server not started"
        return f"http://{self.host}:{self.port}{self.prefix}"

    def url_for(self, identifier: str) -> str:
        return f"{self.base_url}/{identifier}"

    def start(self) -> IIIFServer:
        server = self

        class Handler(_Handler):
            iiif = server

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

        self._httpd = Server((self.host, self.port), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> IIIFServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ sources
    def _source_path(self, identifier: str) -> Path | None:
        if self.images_dir is None or "/" in identifier or identifier in ("", ".", ".."):
            return None
        if identifier in self._paths:
            return self._paths[identifier]
        for suffix in ("", *SOURCE_SUFFIXES):
            candidate = self.images_dir / f"{identifier}{suffix}"
            if candidate.is_file():
                self._paths[identifier] = candidate
                return candidate
        return None

    def open_source(self, identifier: str) -> Image.Image:
        path = self._source_path(identifier)
        if path is not None:
            image = Image.open(path)
            image.load()
            return image
        if self.generator is not None:
            image = self.generator(identifier)
            if image is not None:
                return image
        raise IIIFError(404, f"Unknown image {identifier!r}")

    def source_size(self, identifier: str) -> tuple[int, int]:
        if identifier in self._sizes:
            return self._sizes[identifier]
        path = self._source_path(identifier)
        if path is not None:
            with Image.open(path) as image:  # reads the header only
                size = image.size
        else:
            size = self.open_source(identifier).size
        self._sizes[identifier] = size
        return size

    # ----------------------------------------------------------------- requests
    def handle_path(self, path: str) -> tuple[int, bytes, str]:
        """Answer a request path: (status, body, content type)."""
        path = urlsplit(path).path
        if self.prefix:
            if not path.startswith(self.prefix + "/"):
                raise IIIFError(404, "Not an IIIF path")
            path = path[len(self.prefix) :]
        parts = path.strip("/").split("/")

        if len(parts) >= 2 and parts[-1] == "info.json":
            identifier = unquote("/".join(parts[:-1]))
            self._check_faults(identifier, count=False)
            with self._lock:
                self.info_requests += 1
            return 200, self.info(identifier), "application/json"

        if len(parts) < 5:
            raise IIIFError(404, "Not an IIIF image request")
        identifier = unquote("/".join(parts[:-4]))
        region, size, rotation, last = (unquote(p) for p in parts[-4:])
        if "." not in last:
            raise IIIFError(400, f"Missing format in {last!r}")
        quality, fmt = last.rsplit(".", 1)
        with self._lock:
            self.image_requests += 1
        self._check_faults(identifier, count=True)
        if identifier in self.slow_ids:
            time.sleep(self.slow_ids[identifier])
        if identifier in self.corrupt_ids:
            return 200, b"\xff\xd8\xff\xe0 this is not a JPEG" + bytes(64), FORMATS["jpg"][1]
        if identifier in self.raw_bodies:
            return 200, self.raw_bodies[identifier], FORMATS["jpg"][1]

        if self.cache_responses and path in self._cache:
            body, ctype = self._cache[path]
            return 200, body, ctype

        body = render(
            self.open_source(identifier),
            region,
            size,
            rotation,
            quality,
            fmt,
            version=self.version,
            max_width=self.max_width,
            max_height=self.max_height,
            jpeg_quality=self.jpeg_quality,
        )
        ctype = FORMATS[fmt][1]
        if identifier in self.resized_ids:
            body = _resized(body, self.resized_ids[identifier], FORMATS[fmt][0])
        if self.cache_responses:
            self._cache[path] = (body, ctype)
        return 200, body, ctype

    def _check_faults(self, identifier: str, count: bool) -> None:
        if identifier in self.status_overrides:
            raise IIIFError(self.status_overrides[identifier], "Injected failure")
        if count:
            with self._lock:
                remaining = self.transient_failures.get(identifier, 0)
                if remaining > 0:
                    self.transient_failures[identifier] = remaining - 1
                    raise IIIFError(self.transient_status, "Injected transient failure")

    def info(self, identifier: str) -> bytes:
        width, height = self.source_size(identifier)
        image_id = self.url_for(identifier)
        if self.version == 3:
            data = {
                "@context": "http://iiif.io/api/image/3/context.json",
                "id": image_id,
                "type": "ImageService3",
                "protocol": "http://iiif.io/api/image",
                "profile": "level2",
                "width": width,
                "height": height,
            }
        else:
            data = {
                "@context": "http://iiif.io/api/image/2/context.json",
                "@id": image_id,
                "protocol": "http://iiif.io/api/image",
                "profile": ["http://iiif.io/api/image/2/level2.json"],
                "width": width,
                "height": height,
            }
        if self.max_width:
            data["maxWidth"] = self.max_width
        if self.max_height:
            data["maxHeight"] = self.max_height
        return json.dumps(data).encode()


class _Handler(BaseHTTPRequestHandler):
    iiif: IIIFServer
    protocol_version = "HTTP/1.1"  # keep-alive for clients that reuse connections
    # TCP_NODELAY, as production servers (nginx, Cantaloupe…) set it: without it, the body sent
    # after the headers waits for the client's delayed ACK (40 ms) on reused connections
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        with self.iiif._lock:
            self.iiif.connections += 1

    def log_message(self, format, *args) -> None:  # silence stderr logging
        pass

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, head: bool) -> None:
        server = self.iiif
        with server._lock:
            server.authorizations.append(self.headers.get("Authorization"))
            server.request_count += 1
            server.paths[self.path] += 1
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            if server.latency_ms:
                time.sleep(server.latency_ms / 1000)
            try:
                status, body, ctype = server.handle_path(self.path)
            except IIIFError as e:
                status, body, ctype = e.status, e.message.encode(), "text/plain"
            except Exception as e:  # a bug or an unreadable source: 500, keep serving
                status, body, ctype = 500, repr(e).encode(), "text/plain"
            with server._lock:
                server.statuses[status] += 1
                if status >= 400:
                    server.error_count += 1
                server.bytes_sent += len(body)
            identifier = _identifier(self.path, server.prefix)
            if status == 200 and identifier in server.huge_ids:
                self._send_huge(server.huge_ids[identifier])
                return
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Access-Control-Allow-Origin", "*")
            self.end_headers()
            if head:
                return
            if status == 200 and identifier in server.trickle_ids:
                for index in range(len(body)):
                    self.wfile.write(body[index : index + 1])
                    self.wfile.flush()
                    time.sleep(server.trickle_ids[identifier])
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            with server._lock:
                server.in_flight -= 1

    def _send_huge(self, size: int) -> None:
        """A body of `size` zero bytes, streamed; the count sent lands in `bytes_sent`."""
        server = self.iiif
        self.send_response(200)
        self.send_header("Content-Type", FORMATS["jpg"][1])
        if server.declare_length:
            self.send_header("Content-Length", str(size))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        chunk = bytes(64 * 1024)
        sent = 0
        try:
            while sent < size:
                self.wfile.write(chunk[: size - sent])
                sent += min(len(chunk), size - sent)
        finally:
            with server._lock:
                server.bytes_sent += sent


def _identifier(path: str, prefix: str) -> str:
    parts = urlsplit(path).path[len(prefix) :].strip("/").split("/")
    return unquote("/".join(parts[:-4])) if len(parts) >= 5 else ""


def _resized(body: bytes, factors: tuple[float, float], pil_format: str) -> bytes:
    with Image.open(io.BytesIO(body)) as image:
        size = (round(image.width * factors[0]), round(image.height * factors[1]))
        buffer = io.BytesIO()
        image.resize(size).save(buffer, format=pil_format)
    return buffer.getvalue()


def expected_size(
    region_w: int, region_h: int, size: str, version: int | None = 2
) -> tuple[int, int]:
    """Convenience for tests: output size of ``size`` applied to a region."""
    return parse_size(size, region_w, region_h, version)


def _main() -> None:
    parser = argparse.ArgumentParser(description="Serve a folder of images over IIIF.")
    parser.add_argument("images_dir", type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--version", type=int, choices=[2, 3], default=2)
    args = parser.parse_args()
    with IIIFServer(
        args.images_dir, port=args.port, latency_ms=args.latency_ms, version=args.version
    ) as server:
        print(f"Serving {args.images_dir} at {server.base_url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    _main()


__all__ = ["IIIFError", "IIIFServer", "expected_size", "parse_region", "parse_size", "render"]
