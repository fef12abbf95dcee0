"""Crops from IIIF image servers: bounded in time and size, failing fast on a server that is down,
never showing a password.

Each attempt has a connect and a read timeout (`timeout`, both) and a total deadline
(`deadline`); the body is streamed and abandoned as soon as it exceeds `body_limit` of the
requested size. A server whose first connection attempts all fail (refused, unknown host,
unreachable) stops the run with `ImageServerUnreachable` instead of retrying every image.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from urllib.parse import unquote

import urllib3
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential
from urllib3.exceptions import ConnectTimeoutError, LocationValueError, MaxRetryError
from urllib3.util import make_headers, parse_url

from worker_yolo_training.config import DEFAULT_CONCURRENCY, DEFAULT_RETRIES, IMAGE_TIMEOUT
from worker_yolo_training.core import Box
from worker_yolo_training.images.request import CropRequest, ImageError, ImageServerUnreachable

# Total time of one attempt, as a multiple of the timeout (180 s by default): a crop of a few
# hundred kB arrives in seconds on any link, so this only cuts servers that trickle bytes
DEADLINE_FACTOR = 3
# Connection failures (refused, unknown host, unreachable, connect timeout) on a host that never
# answered, after which it is declared down: enough to ride out one dropped connection, few enough
# to stop at once (the first images' first attempts, in parallel)
FAIL_FAST_ATTEMPTS = 3
USER_AGENT = "worker-yolo-training"
CHUNK = 64 * 1024
MIB = 1024 * 1024

# user:password@ in a URL's authority; the password may hold a bare "@" (the last one ends it)
_CREDENTIALS = re.compile(r"(?<=://)([^/?#@\s:]*):[^/?#\s]*@")


def redact(text: str) -> str:
    """Text with the password of every URL in it replaced: `https://user:***@host/…`."""
    return _CREDENTIALS.sub(r"\1:***@", text)


def body_limit(width: int, height: int) -> int:
    """Largest answer accepted for a width×height crop, in bytes.

    4 × the uncompressed 8-bit RGB size, plus 1 MiB: above any honest encoding of that many
    pixels (a JPEG of pure noise at quality 100 is about 1.5× the RGB size, an uncompressed
    16-bit RGBA TIFF 2.7×) and its metadata (ICC profile, EXIF, XMP), while a hostile answer
    takes at most a few MiB per download in flight (640×640: 5.9 MiB) instead of its whole body.
    """
    return 4 * width * height * 3 + MIB


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


class DeadlineExceeded(Exception):
    """An attempt still receiving its answer at its deadline (retried like a timeout)."""


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, HTTPStatusError):
        return error.status >= 500
    # Timeouts, refused or reset connections, truncated responses, trickling servers
    return isinstance(error, urllib3.exceptions.HTTPError | DeadlineExceeded)


class Reachability:
    """Per host (`host:port`): whether it ever answered, and connection failures before that."""

    def __init__(self, attempts: int = FAIL_FAST_ATTEMPTS):
        self.attempts = attempts
        self._lock = threading.Lock()
        self._answered: set[str] = set()
        self._failures: Counter[str] = Counter()
        self._down: dict[str, str] = {}  # host → why

    def check(self, host: str) -> None:
        """Raise at once for a host already declared down (other threads stop retrying it)."""
        if host in self._down:
            raise ImageServerUnreachable(self._down[host])

    def answered(self, host: str) -> None:
        with self._lock:
            self._answered.add(host)

    def connection_failed(self, host: str, reason: str, url: str) -> None:
        """Count a failed connection; raise ImageServerUnreachable once the host is deemed down."""
        with self._lock:
            if host in self._answered:
                return
            self._failures[host] += 1
            if self._failures[host] >= self.attempts and host not in self._down:
                self._down[host] = (
                    f"Image server {host} is unreachable: {self._failures[host]} connection "
                    f"attempts failed and no image came from it ({reason}); e.g. {url}. Check "
                    "that the server is up and that the export's image URLs are right."
                )
        self.check(host)


def connection_reason(error: Exception) -> str:
    """`[Errno 111] Connection refused`, `… timed out`: urllib3's message without its object."""
    text = str(error.args[-1]) if error.args else str(error)
    return redact(text.split("): ", 1)[-1])


class IIIFSource:
    """Crops from IIIF servers over keep-alive connections (urllib3: a fraction of requests' CPU
    per request), with retries on timeouts, connection errors and 5xx, never on 4xx.

    `timeout` bounds the connection and each wait for bytes; `deadline` (default
    DEADLINE_FACTOR × timeout) bounds a whole attempt, body included. A (connect, read) pair
    is accepted for older callers: its read value applies to both.
    """

    def __init__(
        self,
        timeout: float = IMAGE_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = 1.0,
        connections: int = DEFAULT_CONCURRENCY,
        deadline: float | None = None,
    ):
        self.deadline = deadline if deadline is not None else DEADLINE_FACTOR * timeout
        self.http = urllib3.PoolManager(
            num_pools=16,
            maxsize=connections,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            # Follow redirects (http → https, moved servers); tenacity does the retrying.
            # Authorization is dropped on a redirect to another host (urllib3's default).
            retries=urllib3.Retry(total=None, connect=0, read=0, other=0, status=0, redirect=5),
            headers={"User-Agent": USER_AGENT},
        )
        self.reachability = Reachability()
        self._get = retry(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(retries),
            wait=wait_exponential(multiplier=backoff, max=30),
            reraise=True,
        )(self._get_once)

    def describe(self, request: CropRequest) -> str:
        return redact(iiif_url(request))

    def fetch(self, request: CropRequest) -> bytes:
        url = iiif_url(request)
        shown = redact(url)
        try:
            parsed = parse_url(url)
        except LocationValueError as error:
            raise ImageError(f"malformed image URL {shown}") from error
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ImageError(
                f"{shown} is not an http:// or https:// URL: IIIF images are fetched over HTTP"
            )
        headers = {}
        if parsed.auth:
            # Credentials in the URL: sent as HTTP basic authentication, as browsers do
            headers = make_headers(basic_auth=unquote(parsed.auth))
        host = f"{parsed.host}:{parsed.port or (443 if parsed.scheme == 'https' else 80)}"
        limit = body_limit(request.width, request.height)
        try:
            return self._get(parsed._replace(auth=None).url, host, headers, limit)
        except (HTTPStatusError, DeadlineExceeded) as error:
            raise ImageError(str(error)) from error
        except urllib3.exceptions.HTTPError as error:
            # urllib3 never had the credentials (sent as a header): redacting is a safeguard
            raise ImageError(redact(f"{type(error).__name__}: {error}")) from error

    def _get_once(self, url: str, host: str, headers: dict, limit: int) -> bytes:
        self.reachability.check(host)
        deadline = time.monotonic() + self.deadline
        try:
            response = self.http.request("GET", url, headers=headers, preload_content=False)
        except MaxRetryError as error:
            # Refused, unknown host, unreachable (NewConnectionError), or no answer to connect
            if isinstance(error.reason, ConnectTimeoutError):
                self.reachability.connection_failed(host, connection_reason(error.reason), url)
            raise
        self.reachability.answered(host)
        complete = False
        try:
            if response.status >= 300:
                raise HTTPStatusError(response.status)
            body = read_bounded(response, limit, deadline, self.deadline)
            complete = True
            return body
        finally:
            if not complete:
                # Unread bytes would corrupt the next answer on this connection
                response.close()
            response.release_conn()


def read_bounded(
    response: urllib3.BaseHTTPResponse, limit: int, deadline: float, seconds: float
) -> bytes:
    """The body, read while it stays under `limit` bytes and the clock before `deadline`."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ImageError(
            f"answer of {int(declared)} bytes, over the {limit}-byte limit for this crop"
        )
    chunks, size = [], 0
    # read1 returns what has arrived: the deadline is checked even when bytes come one by one
    while chunk := response.read1(CHUNK):
        size += len(chunk)
        if size > limit:
            raise ImageError(f"answer over the {limit}-byte limit for this crop: download aborted")
        if time.monotonic() > deadline:
            raise DeadlineExceeded(
                f"answer not complete after {seconds:g} s ({size} bytes received): download "
                "aborted (image deadline)"
            )
        chunks.append(chunk)
    return b"".join(chunks)
