"""A small stateful fake of the Arkindex API, served over real HTTP on 127.0.0.1.

Routing comes from ``schema.json`` (the OpenAPI document shipped with the tests and
served at ``/api/v1/openapi/``): a request is matched to an operationId through the
schema's paths, its query parameters and JSON body are validated against the schema,
then ``_op_<OperationId>`` handles it. JSON responses are checked against the declared
response schemas; mismatches land in :attr:`FakeArkindex.schema_violations`.

Every request is recorded, in order, in :attr:`FakeArkindex.requests`.
"""

import base64
import copy
import hashlib
import json
import sqlite3
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import typesystem
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import WSGIRequestHandler
from werkzeug.wrappers import Request, Response

from .s3 import FakeS3, serve

SCHEMA_PATH = Path(__file__).with_name("schema.json")
SCHEMA_ENDPOINT = "/api/v1/openapi/"
S3_FAILURE_PREFIX = "/_fake_s3_failure"


# What the fake S3 endpoint answers to part uploads when S3 failures are switched on
S3_FAILURES = {
    # Not retried by arkindex-client's MultipartUpload (only 5xx are): fails at once
    "forbidden": (
        403,
        "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
        None,
    ),
    # Retried 4 times by MultipartUpload.upload_part (waits 2 + 4 + 8 s unless patched)
    "server_error": (
        500,
        "<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>",
        None,
    ),
    # 200 without an ETag header: MultipartUpload raises "The Etag header is missing"
    "missing_etag": (200, "", None),
    # 200 with the ETag of other bytes (a corrupted part): the fake's
    # CompleteMultipartUpload answers 400, which MultipartUpload.complete does not retry
    "wrong_etag": (200, "", f'"{hashlib.md5(b"corrupted").hexdigest()}"'),
}


class _QuietRequestHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):
        pass


def _now_iso(offset: int = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=offset)).isoformat().replace("+00:00", "Z")


def _uuid() -> str:
    return str(uuid.uuid4())


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def empty_sqlite_bytes() -> bytes:
    """A valid, empty SQLite database (used as export content when none was given)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "empty.sqlite"
        connection = sqlite3.connect(path)
        connection.execute("CREATE TABLE export_version (version INTEGER NOT NULL)")
        connection.commit()
        connection.close()
        return path.read_bytes()


def error_content(error_type: str, code: str, detail: str, attr: list | None = None) -> dict:
    """An error body in Arkindex's standard format."""
    return {"type": error_type, "errors": [{"attr": attr, "code": code, "detail": detail}]}


class ApiError(Exception):
    def __init__(self, status: int, content: Any):
        super().__init__(status, content)
        self.status = status
        self.content = content


def validation_error(code: str, detail: str, attr: list | None = None) -> ApiError:
    return ApiError(400, error_content("validation_error", code, detail, attr))


def not_found(detail: str = "Not found.") -> ApiError:
    return ApiError(404, error_content("client_error", "not_found", detail))


@dataclass
class RecordedRequest:
    """One HTTP request received by the fake API."""

    operation_id: str | None
    method: str
    path: str
    path_params: dict
    query: dict
    body: Any
    status: int | None = None

    @property
    def name(self) -> str:
        """The operationId, or ``"METHOD /path"`` for requests outside the schema."""
        return self.operation_id or f"{self.method} {self.path}"


@dataclass
class ModelVersion:
    id: str
    model_id: str
    state: str
    configuration: dict
    size: int | None = None
    archive_hash: str | None = None
    tag: str | None = None
    description: str = ""
    parent: str | None = None
    created: str = field(default_factory=_now_iso)
    # Body of the CreateModelVersion request, None for versions set up by tests
    body: dict | None = None

    @property
    def s3_key(self) -> str:
        return f"model_versions/{self.id}.tar.zst"

    def to_api(self) -> dict:
        return {
            "id": self.id,
            "model_id": self.model_id,
            "parent": self.parent,
            "tag": self.tag,
            "description": self.description,
            "state": self.state,
            "size": self.size,
            "archive_hash": self.archive_hash,
            "configuration": copy.deepcopy(self.configuration),
            "created": self.created,
            "s3_url": None,
        }


@dataclass
class MultipartUploadRecord:
    upload_id: str
    object_type: str
    object_id: str
    key: str
    # "open", "completed" or "aborted"
    state: str = "open"
    # Bodies of the CreateMultipartUploadPart requests
    part_requests: list[dict] = field(default_factory=list)
    # "parts" of the CompleteMultipartUpload request
    completed_parts: list[dict] | None = None


@dataclass
class Export:
    id: str
    corpus_id: str
    dataset_id: str | None
    state: str
    created: str
    data: bytes

    @property
    def s3_key(self) -> str:
        return f"exports/{self.id}.sqlite"

    def to_api(self) -> dict:
        return {
            "id": self.id,
            "created": self.created,
            "updated": self.created,
            "corpus_id": self.corpus_id,
            "dataset_id": self.dataset_id,
            "user": {"id": 1, "display_name": "Fake user", "email": "user@arkindex.fake"},
            "state": self.state,
            "source": "default",
        }


class FakeArkindex:
    """Stateful fake of the Arkindex API (production mode of a training worker run).

    Change the scenario by mutating attributes or calling helpers *before* the code
    under test calls the API: :attr:`configuration`, :attr:`process_mode`,
    :meth:`add_dataset`, :meth:`add_export`, :meth:`set_worker_run_model_version`,
    :attr:`start_export_conflict`, :attr:`new_export_state`, :attr:`s3_part_failure`, ...
    """

    def __init__(
        self,
        s3: FakeS3,
        data_dir: Path,
        *,
        page_size: int = 20,
        default_dataset: bool = True,
    ):
        self.s3 = s3
        self.data_dir = Path(data_dir)
        self.page_size = page_size
        self.schema = json.loads(SCHEMA_PATH.read_text())
        self._definitions = typesystem.Definitions()
        for name, value in self.schema.get("components", {}).get("schemas", {}).items():
            self._definitions[f"#/components/schemas/{name}"] = typesystem.from_json_schema(
                value, definitions=self._definitions
            )
        self._operations = {}
        rules = [
            Rule(SCHEMA_ENDPOINT, methods=["GET"], endpoint="__schema__"),
            Rule(f"{S3_FAILURE_PREFIX}/<mode>/<token>", methods=["PUT"], endpoint="__s3_failure__"),
        ]
        for path, path_info in self.schema["paths"].items():
            for method, operation in path_info.items():
                if method not in ("get", "post", "put", "patch", "delete"):
                    continue
                self._operations[operation["operationId"]] = (method.upper(), path, operation)
                rule_path = path.replace("{", "<").replace("}", ">")
                rules.append(
                    Rule(rule_path, methods=[method.upper()], endpoint=operation["operationId"])
                )
        self._url_map = Map(rules)

        self._lock = threading.RLock()
        self._server = None
        self._thread = None
        self.url: str | None = None

        # Authentication
        self.task_token = f"task-{uuid.uuid4().hex}"
        self.api_token = f"api-{uuid.uuid4().hex}"

        # Identifiers of the scenario
        self.worker_run_id = _uuid()
        self.process_id = _uuid()
        self.corpus_id = _uuid()
        self.task_id = _uuid()
        self.worker_id = _uuid()
        self.worker_version_id = _uuid()
        self.model_id = _uuid()

        # Worker run
        self.process_mode = "dataset"
        self.worker_run_summary = "Worker YOLO training @ fake"
        self.worker_slug = "yolo-training"
        self.worker_type = "training"
        # Non secret configuration served by RetrieveWorkerRunConfiguration
        self.configuration: dict[str, Any] = {}
        # Keys of self.configuration served with "secret": true
        self.secret_keys: set[str] = set()
        self.worker_run_model_version_id: str | None = None
        self.task_parents: list[str] = []

        # Models and versions
        self.models: dict[str, dict] = {}
        self.add_model("Fake YOLO model", model_id=self.model_id)
        self.model_versions: dict[str, ModelVersion] = {}
        self.multipart_uploads: dict[str, MultipartUploadRecord] = {}

        # Datasets, process sets and exports
        self.datasets: dict[str, dict] = {}
        # (dataset_id, set_name) tuples selected in the process, in order
        self.process_sets: list[tuple[str, str]] = []
        self.dataset_export_data: dict[str, bytes] = {}
        self.exports: dict[str, Export] = {}
        # None, "running_export" or "existing_export": StartExport answers 400 with that code
        self.start_export_conflict: str | None = None
        # State of exports created by StartExport. Anything but "done" makes
        # base-worker's check_export_status sleep 60 s between retries (up to 3 hours).
        self.new_export_state = "done"
        self._clock = 0

        # Check on CompleteMultipartUpload that the S3 object's size and MD5 match the
        # model version's size and archive_hash
        self.verify_archives = True

        # S3 failure injection for part uploads: None or a key of S3_FAILURES
        self.s3_part_failure: str | None = None
        # How many part URLs are handed out failing (None: all of them)
        self.s3_part_failure_count: int | None = None
        # PUT requests received by the failing S3 endpoint
        self.s3_failed_puts: list[dict] = []

        # Artifacts, by path
        self.artifacts: dict[str, dict] = {}

        self.requests: list[RecordedRequest] = []
        self.schema_violations: list[str] = []

        if default_dataset:
            self.add_dataset("Fake dataset", sets=("train", "val", "test"))

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "FakeArkindex":
        self._server, self._thread, self.url = serve(
            self._wsgi_app, _QuietRequestHandler, "fake-arkindex"
        )
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self._server = None

    # ---------------------------------------------------------------- environment

    @property
    def schema_path(self) -> Path:
        return SCHEMA_PATH

    @property
    def schema_url(self) -> str:
        return f"{self.url}{SCHEMA_ENDPOINT}?format=json"

    @property
    def work_dir(self) -> Path:
        """``$PONOS_DATA/current``, the worker's ``work_dir``."""
        return self.data_dir / "current"

    def env(
        self,
        *,
        auth: str = "task",
        schema: str = "url",
        model_dir: Path | None = None,
    ) -> dict[str, str]:
        """Environment variables of a Ponos task running this worker run.

        :param auth: ``"task"`` (``ARKINDEX_TASK_TOKEN``, ``Ponos`` scheme, as the agent
           does) or ``"api"`` (``ARKINDEX_API_TOKEN``, ``Token`` scheme).
        :param schema: ``"url"`` (the schema served by the fake), ``"path"`` (local
           ``schema.json``) or ``"none"`` (unset: the client fetches
           ``/api/v1/openapi/?format=json`` from ``ARKINDEX_API_URL``).
        :param model_dir: value of ``ARKINDEX_MODEL_DIR`` (fine-tuning), unset if None.
        """
        assert self.url, "Start the fake first"
        env = {
            "ARKINDEX_API_URL": f"{self.url}/",
            "ARKINDEX_WORKER_RUN_ID": self.worker_run_id,
            "PONOS_TASK": self.task_id,
            "PONOS_DATA": str(self.data_dir),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        if auth == "task":
            env["ARKINDEX_TASK_TOKEN"] = self.task_token
        elif auth == "api":
            env["ARKINDEX_API_TOKEN"] = self.api_token
        else:
            raise ValueError(f"Unknown auth {auth!r}")
        if schema == "url":
            env["ARKINDEX_API_SCHEMA_URL"] = self.schema_url
        elif schema == "path":
            env["ARKINDEX_API_SCHEMA_URL"] = str(SCHEMA_PATH)
        elif schema != "none":
            raise ValueError(f"Unknown schema {schema!r}")
        if model_dir is not None:
            env["ARKINDEX_MODEL_DIR"] = str(model_dir)
        return env

    # Variables that would change the worker's behaviour if they leaked from the host
    LEAKY_PREFIXES = ("ARKINDEX_", "PONOS_", "TASK_BOOTSTRAP")

    def subprocess_env(self, base: dict | None = None, **kwargs) -> dict[str, str]:
        """``base`` (default ``os.environ``) without any ``ARKINDEX_*``/``PONOS_*``
        variable, plus :meth:`env` (same keyword arguments)."""
        import os

        base = dict(os.environ if base is None else base)
        clean = {k: v for k, v in base.items() if not k.startswith(self.LEAKY_PREFIXES)}
        return {**clean, **self.env(**kwargs)}

    def apply_env(self, monkeypatch, **kwargs) -> dict[str, str]:
        """Set :meth:`env` in this process with pytest's ``monkeypatch``, removing other
        ``ARKINDEX_*``/``PONOS_*`` variables. Returns the variables set."""
        import os

        for key in list(os.environ):
            if key.startswith(self.LEAKY_PREFIXES):
                monkeypatch.delenv(key)
        env = self.env(**kwargs)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return env

    # ------------------------------------------------------------------- scenario

    def _next_created(self) -> str:
        # Strictly increasing creation dates, so that "latest" is well defined
        self._clock += 1
        return _now_iso(self._clock)

    def add_model(self, name: str, *, model_id: str | None = None) -> str:
        model_id = model_id or _uuid()
        now = _now_iso()
        self.models[model_id] = {
            "id": model_id,
            "name": name,
            "description": "",
            "created": now,
            "updated": now,
        }
        return model_id

    def add_model_version(
        self,
        *,
        model_id: str | None = None,
        configuration: dict | None = None,
        tag: str | None = None,
        state: str = "available",
        data: bytes | None = None,
    ) -> ModelVersion:
        """A pre-existing model version (e.g. a parent for fine-tuning)."""
        model_id = model_id or self.model_id
        assert model_id in self.models, f"Unknown model {model_id}"
        version = ModelVersion(
            id=_uuid(),
            model_id=model_id,
            state=state,
            configuration=dict(configuration or {}),
            tag=tag,
            created=self._next_created(),
        )
        if data is not None:
            version.size = len(data)
            version.archive_hash = hashlib.md5(data).hexdigest()
            self.s3.put_bytes(version.s3_key, data)
        self.model_versions[version.id] = version
        return version

    def set_worker_run_model_version(self, **kwargs) -> ModelVersion:
        """Attach a new available model version to the worker run (fine-tuning);
        keyword arguments as for :meth:`add_model_version`."""
        version = self.add_model_version(**kwargs)
        self.worker_run_model_version_id = version.id
        return version

    def add_dataset(
        self,
        name: str = "Dataset",
        sets: tuple[str, ...] | list[str] = ("train", "val", "test"),
        *,
        selected: list[str] | None = None,
        export: bytes | Path | None = None,
        corpus_id: str | None = None,
    ) -> dict:
        """Add a dataset and select its sets (``selected``, default all) in the process.

        ``export``: content of the SQLite export that StartExport produces for it
        (default: an empty SQLite database)."""
        dataset_id = _uuid()
        now = self._next_created()
        dataset = {
            "id": dataset_id,
            "name": name,
            "description": f"{name} description",
            "sets": [{"id": _uuid(), "name": set_name} for set_name in sets],
            "set_elements": None,
            "corpus_id": corpus_id or self.corpus_id,
            "state": "complete",
            "creator": "Fake user",
            "task_id": None,
            "unique_elements": True,
            "created": now,
            "updated": now,
        }
        self.datasets[dataset_id] = dataset
        for set_name in sets if selected is None else selected:
            assert set_name in sets, f"Unknown set {set_name}"
            self.process_sets.append((dataset_id, set_name))
        if export is not None:
            self.set_export_data(dataset_id, export)
        return dataset

    @property
    def dataset(self) -> dict:
        """The first dataset (the default one unless ``default_dataset=False``)."""
        return next(iter(self.datasets.values()))

    def set_export_data(self, dataset_id: str, data: bytes | Path) -> None:
        self.dataset_export_data[str(dataset_id)] = (
            data.read_bytes() if isinstance(data, Path) else bytes(data)
        )

    def _export_data(self, dataset_id: str | None) -> bytes:
        if dataset_id in self.dataset_export_data:
            return self.dataset_export_data[dataset_id]
        return empty_sqlite_bytes()

    def add_export(
        self,
        dataset_id: str | None = None,
        *,
        state: str = "done",
        data: bytes | Path | None = None,
        corpus_id: str | None = None,
    ) -> Export:
        """A pre-existing export (newer than any previous one)."""
        dataset_id = str(dataset_id) if dataset_id else None
        if isinstance(data, Path):
            data = data.read_bytes()
        export = Export(
            id=_uuid(),
            corpus_id=corpus_id or self.corpus_id,
            dataset_id=dataset_id,
            state=state,
            created=self._next_created(),
            data=self._export_data(dataset_id) if data is None else data,
        )
        self.s3.put_bytes(export.s3_key, export.data)
        self.exports[export.id] = export
        return export

    # ------------------------------------------------------------------ inspection

    def operation_ids(self) -> list[str]:
        """Names of the recorded requests, in order (see :attr:`RecordedRequest.name`)."""
        with self._lock:
            return [request.name for request in self.requests]

    def requests_for(self, operation_id: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.operation_id == operation_id]

    def created_model_versions(self) -> list[ModelVersion]:
        """Model versions created through CreateModelVersion, in order."""
        return [v for v in self.model_versions.values() if v.body is not None]

    def uploaded_archive_bytes(self, version_id: str) -> bytes:
        """Content of a model version's archive in S3 (after CompleteMultipartUpload)."""
        return self.s3.get_bytes(self.model_versions[str(version_id)].s3_key)

    def artifact_bytes(self, path: str) -> bytes:
        return self.s3.get_bytes(self.artifacts[path]["s3_key"])

    def export_bytes(self, export_id: str) -> bytes:
        return self.exports[str(export_id)].data

    def uploads_for(self, object_id: str) -> list[MultipartUploadRecord]:
        return [u for u in self.multipart_uploads.values() if u.object_id == str(object_id)]

    # ----------------------------------------------------------------------- WSGI

    def _wsgi_app(self, environ, start_response):
        request = Request(environ)
        response = self._dispatch(request)
        return response(environ, start_response)

    @staticmethod
    def _json(status: int, content: Any, headers: dict | None = None) -> Response:
        if content is None:
            return Response(status=status, headers=headers)
        return Response(
            json.dumps(content), status=status, headers=headers, content_type="application/json"
        )

    def _dispatch(self, request: Request) -> Response:
        adapter = self._url_map.bind_to_environ(request.environ)
        raw_body = request.get_data()
        try:
            endpoint, path_params = adapter.match()
        except (NotFound, MethodNotAllowed):
            endpoint, path_params = None, {}

        if endpoint == "__schema__":
            # Not recorded: fetched by every ArkindexClient on construction
            return self._json(200, self.schema)
        if endpoint == "__s3_failure__":
            return self._s3_failure(path_params["mode"], request, raw_body)

        record = RecordedRequest(
            operation_id=endpoint,
            method=request.method,
            path=request.path,
            path_params=path_params,
            query=request.args.to_dict(flat=True),
            body=None,
        )
        with self._lock:
            self.requests.append(record)
        headers = None
        try:
            if raw_body:
                try:
                    record.body = json.loads(raw_body)
                except ValueError as e:
                    raise ApiError(
                        400, error_content("client_error", "parse_error", f"JSON parse error: {e}")
                    ) from e
            if endpoint is None:
                raise not_found()

            self._authenticate(request)
            _method, _path, operation = self._operations[endpoint]
            self._validate_request(operation, path_params, record)
            with self._lock:
                status, content, headers = getattr(self, f"_op_{endpoint}")(
                    request, path_params, record.body
                )
            self._check_response(operation, status, content)
        except ApiError as e:
            status, content = e.status, e.content
        except Exception as e:  # A bug in the fake: answer like Django would
            status = 500
            content = error_content("server_error", "server_error", f"Fake server error: {e!r}")
            with self._lock:
                self.schema_violations.append(f"{record.name}: unhandled {e!r}")
        record.status = status
        return self._json(status, content, headers)

    def _authenticate(self, request: Request) -> None:
        header = request.headers.get("Authorization")
        if not header:
            raise ApiError(
                401,
                error_content(
                    "client_error",
                    "not_authenticated",
                    "Authentication credentials were not provided.",
                ),
            )
        if header not in (f"Ponos {self.task_token}", f"Token {self.api_token}"):
            raise ApiError(
                401, error_content("client_error", "authentication_failed", "Invalid token.")
            )

    def _validate_request(self, operation: dict, path_params: dict, record: RecordedRequest):
        parameters = operation.get("parameters", [])
        for param in parameters:
            if param["in"] == "path" and not _is_uuid(path_params.get(param["name"])):
                raise not_found()
        declared = {p["name"]: p for p in parameters if p["in"] == "query"}
        for name, value in record.query.items():
            if name not in declared:
                raise validation_error(
                    "unknown_parameter", f"Unknown query parameter {name!r}.", [name]
                )
            schema = declared[name]["schema"]
            if schema.get("format") == "uuid" and not _is_uuid(value):
                raise validation_error("invalid", "Must be a valid UUID.", [name])
            if schema.get("type") == "integer" and not value.isdigit():
                raise validation_error("invalid", "A valid integer is required.", [name])

        body_schema = (
            operation.get("requestBody", {}).get("content", {}).get("application/json", {})
        ).get("schema")
        if body_schema is None:
            if record.body is not None:
                raise validation_error("unexpected_body", "This endpoint takes no body.")
            return
        if record.body is None:
            raise validation_error("required", "A request body is required.")
        validator = typesystem.from_json_schema(body_schema, definitions=self._definitions)
        try:
            validator.validate(record.body)
        except typesystem.ValidationError as e:
            raise ApiError(
                400,
                {
                    "type": "validation_error",
                    "errors": [
                        {"attr": list(m.index) or None, "code": m.code, "detail": m.text}
                        for m in e.messages()
                    ],
                },
            ) from e

    def _check_response(self, operation: dict, status: int, content: Any) -> None:
        responses = operation.get("responses", {})
        if str(status) not in responses:
            self.schema_violations.append(f"{operation['operationId']}: undeclared status {status}")
            return
        schema = responses[str(status)].get("content", {}).get("application/json", {}).get("schema")
        if schema is None:
            if content is not None:
                self.schema_violations.append(
                    f"{operation['operationId']}: body on a {status} without content"
                )
            return
        validator = typesystem.from_json_schema(schema, definitions=self._definitions)
        try:
            validator.validate(content)
        except typesystem.ValidationError as e:
            self.schema_violations.append(
                f"{operation['operationId']} {status}: "
                + "; ".join(f"{list(m.index)}: {m.text}" for m in e.messages())
            )

    # --------------------------------------------------------------- pagination

    def _paginate(self, request: Request, items: list[dict]) -> tuple[int, dict, None]:
        page = int(request.args.get("page", 1))
        count = len(items)
        pages = max(1, -(-count // self.page_size))
        if page < 1 or page > pages:
            raise not_found("Invalid page.")
        start = (page - 1) * self.page_size

        def page_url(number: int) -> str:
            args = request.args.to_dict(flat=True)
            args["page"] = str(number)
            return f"{self.url}{request.path}?{urlencode(args)}"

        return (
            200,
            {
                "count": count,
                "number": page,
                "previous": page_url(page - 1) if page > 1 else None,
                "next": page_url(page + 1) if page < pages else None,
                "results": items[start : start + self.page_size],
            },
            None,
        )

    # ------------------------------------------------------------ operations

    def _op_RetrieveWorkerRun(self, request, params, body):
        if params["id"] != self.worker_run_id:
            raise not_found("No WorkerRun matches the given query.")
        model_version = None
        if self.worker_run_model_version_id:
            version = self.model_versions[self.worker_run_model_version_id]
            model_version = version.to_api()
            del model_version["model_id"], model_version["s3_url"]
            model_version["model"] = copy.deepcopy(self.models[version.model_id])
        return (
            200,
            {
                "id": self.worker_run_id,
                "parents": [],
                "worker_version": {
                    "id": self.worker_version_id,
                    "worker": {
                        "id": self.worker_id,
                        "name": "YOLO training",
                        "slug": self.worker_slug,
                        "type": self.worker_type,
                        "description": "",
                        "repository_url": None,
                    },
                    "version": 1,
                    "revision_url": None,
                    "configuration": {},
                    "state": "available",
                    "gpu_usage": "supported",
                    "model_usage": "supported",
                    "docker_image_iid": "registry.fake/worker-yolo-training:latest",
                    "created": _now_iso(),
                },
                "model_version": model_version,
                "configuration": None,
                "process": {
                    "id": self.process_id,
                    "name": "Fake training process",
                    "corpus": self.corpus_id,
                    "mode": self.process_mode,
                    "state": "running",
                    "activity_state": "disabled",
                    "use_cache": False,
                    "chunks": 1,
                },
                "summary": self.worker_run_summary,
                "use_gpu": False,
            },
            None,
        )

    def _op_RetrieveWorkerRunConfiguration(self, request, params, body):
        if params["id"] != self.worker_run_id:
            raise not_found("No WorkerRun matches the given query.")
        return (
            200,
            {
                "configuration": [
                    {"key": key, "value": value, "secret": key in self.secret_keys}
                    for key, value in self.configuration.items()
                ]
            },
            None,
        )

    def _op_ListProcessSets(self, request, params, body):
        if params["id"] != self.process_id:
            raise not_found("No Process matches the given query.")
        items = []
        for dataset_id, set_name in self.process_sets:
            dataset = self.datasets[dataset_id]
            set_id = next(s["id"] for s in dataset["sets"] if s["name"] == set_name)
            items.append({"id": set_id, "set_name": set_name, "dataset": copy.deepcopy(dataset)})
        return self._paginate(request, items)

    def _op_StartExport(self, request, params, body):
        corpus_id = params["id"]
        dataset_id = body.get("dataset_id")
        if dataset_id is not None:
            dataset = self.datasets.get(dataset_id)
            if dataset is None or dataset["corpus_id"] != corpus_id:
                raise validation_error(
                    "does_not_exist",
                    f'Invalid pk "{dataset_id}" - object does not exist.',
                    ["dataset_id"],
                )
        if self.start_export_conflict == "running_export":
            raise validation_error(
                "running_export", "An export is already running for this corpus.", None
            )
        if self.start_export_conflict == "existing_export":
            raise validation_error(
                "existing_export",
                "An export has already been made for this corpus or dataset.",
                None,
            )
        export = self.add_export(dataset_id, state=self.new_export_state, corpus_id=corpus_id)
        return 201, export.to_api(), None

    def _op_ListExports(self, request, params, body):
        dataset_id = request.args.get("dataset_id")
        items = [
            export.to_api()
            for export in sorted(self.exports.values(), key=lambda e: e.created, reverse=True)
            if export.corpus_id == params["id"]
            and (dataset_id is None or export.dataset_id == dataset_id)
        ]
        return self._paginate(request, items)

    def _op_DownloadExport(self, request, params, body):
        export = self.exports.get(params["id"])
        if export is None:
            raise not_found("No CorpusExport matches the given query.")
        if export.state != "done":
            raise validation_error("not_done", "This export is not done yet.", None)
        return 302, None, {"Location": self.s3.presigned_get(export.s3_key)}

    def _op_CreateModelVersion(self, request, params, body):
        model_id = params["id"]
        if model_id not in self.models:
            raise not_found("No Model matches the given query.")
        tag = body.get("tag")
        parent = body.get("parent")
        if parent is not None and parent not in self.model_versions:
            raise validation_error(
                "does_not_exist", f'Invalid pk "{parent}" - object does not exist.', ["parent"]
            )
        version = ModelVersion(
            id=_uuid(),
            model_id=model_id,
            state="created",
            configuration=copy.deepcopy(body.get("configuration", {})),
            size=body["size"],
            archive_hash=body["archive_hash"],
            tag=tag,
            description=body.get("description", ""),
            parent=parent,
            body=copy.deepcopy(body),
            created=self._next_created(),
        )
        self.model_versions[version.id] = version
        return 201, version.to_api(), None

    def _multipart_object(self, body: dict) -> ModelVersion:
        version = self.model_versions.get(body["object_id"])
        if version is None:
            raise validation_error(
                "does_not_exist",
                f'Invalid pk "{body["object_id"]}" - object does not exist.',
                ["object_id"],
            )
        return version

    def _open_upload(self, body: dict) -> MultipartUploadRecord:
        upload = self.multipart_uploads.get(body["upload_id"])
        if (
            upload is None
            or upload.object_id != body["object_id"]
            or upload.object_type != body["object_type"]
        ):
            raise validation_error(
                "invalid_upload", "No such multipart upload for this object.", ["upload_id"]
            )
        if upload.state != "open":
            raise validation_error(
                "invalid_upload", f"This multipart upload is {upload.state}.", ["upload_id"]
            )
        return upload

    def _op_CreateMultipartUpload(self, request, params, body):
        version = self._multipart_object(body)
        if version.state != "created":
            raise validation_error(
                "invalid_state", f"This model version is {version.state}.", ["object_id"]
            )
        upload_id = self.s3.create_multipart_upload(version.s3_key)
        self.multipart_uploads[upload_id] = MultipartUploadRecord(
            upload_id=upload_id,
            object_type=body["object_type"],
            object_id=version.id,
            key=version.s3_key,
        )
        return (
            201,
            {"upload_id": upload_id, "object_type": body["object_type"], "object_id": version.id},
            None,
        )

    def _op_CreateMultipartUploadPart(self, request, params, body):
        self._multipart_object(body)
        upload = self._open_upload(body)
        upload.part_requests.append(copy.deepcopy(body))
        if self.s3_part_failure and self.s3_part_failure_count != 0:
            if self.s3_part_failure_count is not None:
                self.s3_part_failure_count -= 1
            url = f"{self.url}{S3_FAILURE_PREFIX}/{self.s3_part_failure}/{uuid.uuid4().hex}"
        else:
            url = self.s3.presigned_upload_part(upload.key, upload.upload_id, body["part_number"])
        return 201, {"url": url, "part_number": body["part_number"]}, None

    def _op_CompleteMultipartUpload(self, request, params, body):
        version = self._multipart_object(body)
        upload = self._open_upload(body)
        requested_md5 = {p["part_number"]: p["md5_hash"] for p in upload.part_requests}
        parts = sorted(body["parts"], key=lambda p: p["part_number"])
        for index, part in enumerate(parts):
            number = part["part_number"]
            if requested_md5.get(number) != part["md5_hash"]:
                raise validation_error(
                    "invalid_part",
                    f"Part {number} was not requested with this MD5 hash.",
                    ["parts", index, "md5_hash"],
                )
            try:
                etag_md5 = base64.b64encode(bytes.fromhex(part["etag"].strip('"'))).decode()
            except ValueError:
                etag_md5 = None
            if etag_md5 != part["md5_hash"]:
                # What S3 would have refused at upload time through Content-MD5
                raise validation_error(
                    "invalid_part",
                    f"The ETag of part {number} does not match its MD5 hash.",
                    ["parts", index, "etag"],
                )
        try:
            self.s3.complete_multipart_upload(
                upload.key,
                upload.upload_id,
                [{"PartNumber": p["part_number"], "ETag": p["etag"]} for p in parts],
            )
        except Exception as e:
            raise validation_error("s3_error", f"S3 refused to complete the upload: {e}") from e
        upload.state = "completed"
        upload.completed_parts = copy.deepcopy(body["parts"])
        if self.verify_archives:
            data = self.s3.get_bytes(upload.key)
            problems = []
            if len(data) != version.size:
                problems.append(f"size {len(data)} != {version.size}")
            if hashlib.md5(data).hexdigest() != version.archive_hash:
                problems.append("MD5 of the uploaded archive != archive_hash")
            if problems:
                version.state = "error"
                raise validation_error("invalid_archive", "; ".join(problems), None)
        version.state = "available"
        return (
            200,
            {
                "upload_id": upload.upload_id,
                "object_type": upload.object_type,
                "object_id": version.id,
            },
            None,
        )

    def _op_AbortMultipartUpload(self, request, params, body):
        self._multipart_object(body)
        upload = self._open_upload(body)
        self.s3.abort_multipart_upload(upload.key, upload.upload_id)
        upload.state = "aborted"
        return 204, None, None

    def _version_api(self, version: ModelVersion) -> dict:
        """A model version as the API shows it: a download URL once its archive is whole."""
        data = version.to_api()
        if version.state == "available" and version.size is not None:
            data["s3_url"] = self.s3.presigned_get(version.s3_key)
        return data

    def _op_ListModelVersions(self, request, params, body):
        if params["id"] not in self.models:
            raise not_found("No Model matches the given query.")
        versions = [v for v in self.model_versions.values() if v.model_id == params["id"]]
        versions.sort(key=lambda version: version.created, reverse=True)
        return self._paginate(request, [self._version_api(version) for version in versions])

    def _op_RetrieveModelVersion(self, request, params, body):
        version = self.model_versions.get(params["id"])
        if version is None:
            raise not_found("No ModelVersion matches the given query.")
        return 200, self._version_api(version), None

    def _op_RetrieveModel(self, request, params, body):
        model = self.models.get(params["id"])
        if model is None:
            raise not_found("No Model matches the given query.")
        return 200, model, None

    def _op_RetrieveTask(self, request, params, body):
        if params["id"] != self.task_id:
            raise not_found("No Task matches the given query.")
        return (
            200,
            {
                "id": self.task_id,
                "run": 0,
                "depth": 0,
                "slug": "training",
                "state": "running",
                "parents": list(self.task_parents),
                "extra_files": {},
                "agent": None,
                "gpu": None,
                "shm_size": None,
            },
            None,
        )

    def _op_CreateArtifact(self, request, params, body):
        if params["id"] != self.task_id:
            raise not_found("No Task matches the given query.")
        path = body["path"]
        if path in self.artifacts:
            raise validation_error("unique", "An artifact with this path already exists.", ["path"])
        s3_key = f"artifacts/{self.task_id}/{path}"
        now = _now_iso()
        artifact = {
            "id": _uuid(),
            "path": path,
            "size": body["size"],
            "content_type": body["content_type"],
            "created": now,
            "updated": now,
            "s3_put_url": self.s3.presigned_put(s3_key, body["content_type"]),
        }
        self.artifacts[path] = {**artifact, "s3_key": s3_key}
        return 201, artifact, None

    # ------------------------------------------------------------ failing S3

    def _s3_failure(self, mode: str, request: Request, raw_body: bytes) -> Response:
        status, text, etag = S3_FAILURES[mode]
        with self._lock:
            self.s3_failed_puts.append(
                {
                    "mode": mode,
                    "path": request.path,
                    "size": len(raw_body),
                    "content_md5": request.headers.get("Content-MD5"),
                }
            )
        headers = {"ETag": etag} if etag else {}
        return Response(text, status=status, headers=headers, content_type="application/xml")


def md5_base64(data: bytes) -> str:
    """The ``md5_hash`` / ``Content-MD5`` value of some bytes."""
    return base64.b64encode(hashlib.md5(data).digest()).decode()
