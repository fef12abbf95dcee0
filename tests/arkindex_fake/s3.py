"""A real S3 protocol server for tests: moto's server, in a thread, on 127.0.0.1.

Objects are reached by the code under test through presigned URLs only (GET for
exports, PUT for artifacts, ``upload_part`` for multipart uploads), exactly as with
Arkindex in production, so the worker needs no AWS credentials.

moto keeps its state in process-wide backends: each :class:`FakeS3` uses its own
bucket (random name) and deletes it when stopped. moto checks neither presigned URL
signatures nor ``Content-MD5`` headers; :mod:`.server` checks part MD5s itself when a
multipart upload is completed.
"""

import logging
import threading
import uuid
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from werkzeug.serving import make_server

logger = logging.getLogger(__name__)

REGION = "us-east-1"
# moto accepts any credentials; these never leave the test process
ACCESS_KEY = "fake-access-key"
SECRET_KEY = "fake-secret-key"
PRESIGN_EXPIRY = 3600


def serve(app, request_handler, name: str):
    """A WSGI app served on 127.0.0.1 (a free port) in a daemon thread: (server, thread, url)."""
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=request_handler)
    host, port = server.server_address[:2]
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
    )
    thread.start()
    return server, thread, f"http://{host}:{port}"


def _quiet_moto_handler():
    from moto.server import MotoRequestHandler

    class QuietMotoRequestHandler(MotoRequestHandler):
        def log_request(self, *args, **kwargs):
            pass

    return QuietMotoRequestHandler


class FakeS3:
    """moto S3 server bound to 127.0.0.1 on a free port, with one bucket."""

    def __init__(self, bucket: str | None = None):
        self.bucket = bucket or f"arkindex-fake-{uuid.uuid4().hex[:12]}"
        self._server = None
        self._thread = None
        self.client = None
        self.url = None

    # Lifecycle

    def start(self) -> "FakeS3":
        from moto.server import DomainDispatcherApplication, create_backend_app

        app = DomainDispatcherApplication(create_backend_app)
        self._server, self._thread, self.url = serve(app, _quiet_moto_handler(), "fake-s3")

        self.client = boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )
        self.client.create_bucket(Bucket=self.bucket)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        try:
            self._empty_bucket()
        except Exception as e:  # Best effort: the server is going away anyway
            logger.warning(f"Could not clean up bucket {self.bucket}: {e}")
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self._server = None

    def _empty_bucket(self) -> None:
        uploads = self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        for upload in uploads:
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        for key in self.keys():
            self.client.delete_object(Bucket=self.bucket, Key=key)
        self.client.delete_bucket(Bucket=self.bucket)

    # Objects

    def put_bytes(self, key: str, data: bytes | Path) -> None:
        if isinstance(data, Path):
            data = data.read_bytes()
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def get_bytes(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError:
            return False
        return True

    def keys(self, prefix: str = "") -> list[str]:
        response = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for item in response.get("Contents", [])]

    # Presigned URLs

    def presigned_get(self, key: str) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=PRESIGN_EXPIRY
        )

    def presigned_put(self, key: str, content_type: str | None = None) -> str:
        params = {"Bucket": self.bucket, "Key": key}
        if content_type:
            params["ContentType"] = content_type
        return self.client.generate_presigned_url(
            "put_object", Params=params, ExpiresIn=PRESIGN_EXPIRY
        )

    def presigned_upload_part(self, key: str, upload_id: str, part_number: int) -> str:
        return self.client.generate_presigned_url(
            "upload_part",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "UploadId": upload_id,
                "PartNumber": part_number,
            },
            ExpiresIn=PRESIGN_EXPIRY,
        )

    # Multipart uploads (server side, as the Arkindex backend does them)

    def create_multipart_upload(self, key: str) -> str:
        return self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]

    def complete_multipart_upload(self, key: str, upload_id: str, parts: list[dict]) -> None:
        """``parts``: ``[{"PartNumber": int, "ETag": str}, ...]``"""
        self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )

    def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)

    def list_parts(self, key: str, upload_id: str) -> list[dict]:
        return self.client.list_parts(Bucket=self.bucket, Key=key, UploadId=upload_id).get(
            "Parts", []
        )

    def pending_multipart_uploads(self) -> list[dict]:
        return self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
