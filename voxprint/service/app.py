"""The HTTP service: a FastAPI app over the speaker store, with keys, limits and metrics.

Routes (JSON under ``/v1``; every route but ``/healthz`` and the web page needs a key,
sent as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``):

- ``POST /v1/speakers/{id}/enrollments`` (admin; multipart ``files``, optional ``name``),
  ``GET /v1/speakers``, ``GET /v1/speakers/{id}``, ``DELETE /v1/speakers/{id}`` (admin);
- ``POST /v1/verify`` (``speaker``, ``file``), ``POST /v1/identify`` (``file``, ``top_k``),
  ``POST /v1/similarity`` (``a``, ``b``), ``POST /v1/embed`` (``file``);
- ``GET /healthz``, ``GET /metrics`` (Prometheus text), ``GET /docs`` (OpenAPI), ``GET /`` (the page).

Every error is a JSON object ``{"error": "one line"}``: 400 malformed request or speaker id, 401 no,
wrong or revoked key, 403 a user key on an admin route, 404 unknown speaker or route, 409 the store
cannot do it (e.g. identify with nobody enrolled), 413 body or recording too large or long, 422
unusable audio (the CLI's message, naming the uploaded file), 429 rate limit (``Retry-After``), 504
request timeout.

Each worker opens its own connections to the store; the store's write counter (``version``) tells each
worker's search index when another worker (or host) has enrolled or deleted, so answers never lag
behind an acknowledged write (:meth:`voxprint.store.SpeakerStore.identify_embedding`).

Example:
    >>> import tempfile
    >>> from fastapi.testclient import TestClient
    >>> from voxprint.service.keys import KeyTable
    >>> store = str(Path(tempfile.mkdtemp()) / "speakers.db")
    >>> _, key = KeyTable(store).create("user")
    >>> client = TestClient(create_app(ServiceConfig(store=store, optimize=False)))
    >>> client.get("/healthz").json(), client.get("/v1/speakers").status_code
    ({'status': 'ok'}, 401)
    >>> client.get("/v1/speakers", headers={"Authorization": f"Bearer {key}"}).json()
    {'speakers': [], 'count': 0}
"""
from __future__ import annotations

import asyncio
import math
import os
import queue
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import anyio
from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

import voxprint
from voxprint.errors import AudioError, StoreError, VoxprintError
from voxprint.service.keys import ApiKey
from voxprint.service.limits import RateLimiter
from voxprint.service.metrics import Metrics
from voxprint.service.settings import ENVIRONMENT_VARIABLE, ServiceConfig
from voxprint.service.storage import open_keys, open_store, store_name, store_size
from voxprint.service.uploads import UploadTooLong, Uploads, clean_name, source_name
from voxprint.store import SpeakerStore, check_speaker_id

__all__ = ["ApiError", "Service", "app_from_environment", "create_app"]

STATIC = Path(__file__).resolve().parent / "static"
#: Paths anyone may read: the health check, the web page and its files, the API's description.
# The rule: a key on every route but the health check and the page's own files. The API
# description (/docs, /openapi.json) needs a key too.
PUBLIC_PATHS = frozenset({"/", "/healthz", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)
_SCOPE_KEY = "voxprint.api_key"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# The page allows only its own scripts and styles; the recorder's audio plays from blob: URLs.
_PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                "media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                "form-action 'none'")


class ApiError(Exception):
    """An error answered as ``{"error": message}`` with an HTTP status.

    Args:
        status: the HTTP status code.
        message: one line saying what went wrong and what to do.
        headers: extra response headers.
    """

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON error response every failure uses: ``{"error": "one line"}``."""
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


class Service:
    """One worker's state: the model, a pool of store connections, keys, limits and metrics.

    Args:
        config: the settings.
        model: a loaded :class:`~voxprint.inference.SpeakerModel` (default: load ``config.model``).

    Raises:
        VoxprintError: the model cannot be loaded, or the store cannot be opened or holds another
            model's embeddings.
    """

    def __init__(self, config: ServiceConfig, model: Any = None):
        if config.threads is not None:
            import torch

            torch.set_num_threads(config.threads)
        self.config = config
        if model is None:
            model = voxprint.load_model(config.model, device=config.device, max_seconds=config.max_audio_seconds)
            if config.optimize:
                model.optimize()
        self.model = model
        self.model.backend  # loaded now (PLDA, calibration), not by the first request
        # One store (its own database connection and search index) per concurrent request: a
        # connection carries one transaction at a time, and the pool bounds the work a worker takes on.
        self._stores: queue.SimpleQueue[SpeakerStore] = queue.SimpleQueue()
        for _ in range(config.concurrency):
            self._stores.put(open_store(config.store, self.model))
        self.keys = open_keys(config.store)
        # Health checks and metrics use a connection of their own: they must answer while every
        # compute slot is busy.
        self._probe = open_store(config.store, self.model)
        self._probe_lock = threading.Lock()
        self.rate = RateLimiter(config.rate_limit, config.rate_burst)
        self.metrics = Metrics(worker=str(os.getpid()))
        self._limiter: anyio.CapacityLimiter | None = None

    @contextmanager
    def store(self) -> Iterator[SpeakerStore]:
        """A store connection for the calling thread (blocks while all are in use)."""
        store = self._stores.get()
        try:
            yield store
        finally:
            self._stores.put(store)

    async def run(self, work: Callable[[SpeakerStore], Any]) -> Any:
        """Run ``work(store)`` in a worker thread, at most ``concurrency`` at once.

        A request that times out abandons its thread, which finishes (and commits, for an enrollment)
        in the background; the store pool still bounds how many run.
        """
        if self._limiter is None:  # made inside the event loop, which anyio requires
            self._limiter = anyio.CapacityLimiter(self.config.concurrency)

        def call() -> Any:
            with self.store() as store:
                return work(store)

        return await anyio.to_thread.run_sync(call, limiter=self._limiter, abandon_on_cancel=True)

    def store_version(self) -> int:
        """The store's write counter (read on the probe connection)."""
        with self._probe_lock:
            return self._probe.table.version

    def store_gauges(self) -> dict[str, tuple[str, float]]:
        """The store's size for ``/metrics``: speakers, enrollments, write counter, bytes."""
        with self._probe_lock:
            size = store_size(self._probe)
        helps = {"speakers": "Speakers enrolled in the store.", "enrollments": "Enrollment recordings in the store.",
                 "version": "The store's write counter.", "bytes": "Size of the store's files or tables, in bytes."}
        return {f"voxprint_store_{name}": (helps[name], value) for name, value in size.items()}


# -------------------------------------------------------------------------------------------- middleware

def _token(scope: dict) -> str | None:
    """The key a request presents: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get("x-api-key", "").strip() or None


class Guard:
    """ASGI middleware in front of every route: authentication, rate limit, body size, timeout,
    security headers and metrics.

    Authentication and the rate limit run before the body is read, so a request without a valid key
    costs no upload and never reaches the store; the body is read once, up to the size limit, and
    replayed to the app.

    Args:
        app: the wrapped ASGI app.
        service: the worker's :class:`Service`.
    """

    def __init__(self, app: Callable, service: Service):
        self.app = app
        self.service = service

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}
        path = scope["path"]

        async def tracked_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                if path.startswith("/v1/") or path == "/metrics":
                    headers.append((b"cache-control", b"no-store"))
                if not path.startswith("/docs"):  # the API docs load FastAPI's Swagger UI from its CDN
                    headers += [(b"content-security-policy", _PAGE_POLICY.encode()),
                                (b"x-frame-options", b"DENY")]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await asyncio.wait_for(self._handle(scope, receive, tracked_send, status), self.service.config.timeout)
        except asyncio.TimeoutError:
            if status.get("started"):
                return  # the response is half sent; the connection just ends
            response = error_response(504, f"the request took longer than the service's "
                                           f"{self.service.config.timeout:g} s limit; try again later (an "
                                           "enrollment may still complete: repeating it is harmless)")
            await response(scope, receive, tracked_send)
        finally:
            self.service.metrics.observe(scope["method"], self._route(scope), status["code"],
                                         time.perf_counter() - started)

    async def _handle(self, scope: dict, receive: Callable, send: Callable, status: dict) -> None:
        async def marking_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["started"] = True
            await send(message)

        path = scope["path"]
        if not (path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)) and scope["method"] != "OPTIONS":
            rejection = self._authenticate(scope)
            if rejection is not None:
                await rejection(scope, receive, marking_send)
                return
        if scope["method"] in _BODY_METHODS:
            body = await self._read_body(scope, receive)
            if isinstance(body, JSONResponse):
                await body(scope, receive, marking_send)
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, marking_send)

    def _authenticate(self, scope: dict) -> JSONResponse | None:
        """None when the request carries a valid key within its rate limit, else the error response."""
        token = _token(scope)
        challenge = {"WWW-Authenticate": "Bearer"}
        if token is None:
            return error_response(401, "this route needs an API key: send 'Authorization: Bearer KEY' or "
                                       "'X-API-Key: KEY' (an admin makes keys with `voxprint keys create`)", challenge)
        key = self.service.keys.authenticate(token)
        if key is None:
            return error_response(401, "the API key is not valid; check it was copied whole", challenge)
        if key.revoked is not None:
            return error_response(401, f"the API key {key.id} was revoked; ask an admin for a new one", challenge)
        wait = self.service.rate.wait(key.id)
        if wait > 0:
            return error_response(429, f"too many requests for key {key.id} (limit "
                                       f"{self.service.config.rate_limit:g} a minute); retry in {math.ceil(wait)} s",
                                  {"Retry-After": str(math.ceil(wait))})
        scope[_SCOPE_KEY] = key
        return None

    async def _read_body(self, scope: dict, receive: Callable) -> bytes | JSONResponse:
        """The whole request body, or a 413 response as soon as it is known to exceed the limit."""
        limit = self.service.config.max_upload_bytes
        too_large = error_response(413, f"the request is larger than the service's limit of "
                                        f"{limit / 2 ** 20:g} MiB; send shorter or compressed recordings")
        for name, value in scope.get("headers", []):
            if name.lower() == b"content-length":
                try:
                    if int(value) > limit:
                        return too_large
                except ValueError:
                    return error_response(400, "malformed Content-Length header")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _route(self, scope: dict) -> str:
        """The route template of a request (bounded label values), or ``other``."""
        route = scope.get("route")
        if route is None:
            for candidate in scope["app"].routes if "app" in scope else []:
                if candidate.matches(scope)[0] is Match.FULL:
                    route = candidate
                    break
        return getattr(route, "path", None) or "other"


def _replay(body: bytes, receive: Callable) -> Callable[[], Awaitable[dict]]:
    """A ``receive`` that gives the app the already-read body, then passes through (disconnects)."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# ------------------------------------------------------------------------------------------------ the app

def caller(request: Request) -> ApiKey:
    """Dependency: the API key the :class:`Guard` accepted for this request."""
    return request.scope[_SCOPE_KEY]


def admin(key: ApiKey = Depends(caller)) -> ApiKey:
    """Dependency: the caller's key, which must have the ``admin`` role.

    Raises:
        ApiError: 403 for a ``user`` key.
    """
    if key.role != "admin":
        raise ApiError(403, f"key {key.id} has the role 'user'; enrolling and deleting speakers needs an admin key")
    return key


def _speaker_id(speaker_id: str) -> str:
    try:
        return check_speaker_id(speaker_id)
    except StoreError as exc:
        raise ApiError(400, str(exc)) from None


@contextmanager
def _speaker_errors(speaker_id: str) -> Iterator[None]:
    """Turn the store's "no speaker" error into a 404."""
    try:
        yield
    except StoreError as exc:
        # The store has no error type of its own for an unknown speaker; its message starts so.
        if str(exc).startswith(f"no speaker {speaker_id!r}"):
            raise ApiError(404, f"no speaker {speaker_id!r} is enrolled; GET /v1/speakers lists who is") from None
        raise


async def _read_uploads(files: list[UploadFile], field: str) -> list[tuple[bytes, str]]:
    """The bytes and cleaned names of uploaded files."""
    return [(await f.read(), clean_name(f.filename, f"{field}[{i}]" if len(files) > 1 else field))
            for i, f in enumerate(files)]


def _with_audio(service: Service, uploads: list[tuple[bytes, str]],
                work: Callable[[SpeakerStore, list[str]], Any]) -> Callable[[SpeakerStore], Any]:
    """``work(store, paths)`` with the uploads as in-memory files, their lengths checked first, and
    audio errors naming the uploaded files."""

    def run(store: SpeakerStore) -> Any:
        with Uploads() as files:
            paths = [files.add(data, name) for data, name in uploads]
            files.check_durations(service.config.max_audio_seconds)
            with files.named_errors():
                return work(store, paths)

    return run


def create_app(config: ServiceConfig, model: Any = None) -> FastAPI:
    """The service's ASGI app.

    Args:
        config: the settings.
        model: an already loaded model to share (tests); default: load ``config.model``.

    Returns:
        The FastAPI app (run it with uvicorn).

    Raises:
        VoxprintError: the model or the store cannot be opened.
    """
    service = Service(config, model)
    app = FastAPI(title="voxprint", version=voxprint.__version__, redoc_url=None,
                  description="Speaker verification and identification over a speaker store. Send an API key "
                              "as `Authorization: Bearer KEY` or `X-API-Key: KEY`.",
                  # Declared for the docs' "Authorize" button; the Guard does the checking.
                  dependencies=[Depends(HTTPBearer(auto_error=False)),
                                Depends(APIKeyHeader(name="X-API-Key", auto_error=False))])
    app.state.service = service

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(UploadTooLong)
    async def _too_long(request: Request, exc: UploadTooLong) -> JSONResponse:
        return error_response(413, str(exc))

    @app.exception_handler(AudioError)
    async def _audio_error(request: Request, exc: AudioError) -> JSONResponse:
        return error_response(422, str(exc))

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        # Clients need not (and should not) learn where the server keeps its data.
        where = store_name(config.store)
        message = str(exc).replace(f"speaker store {where}", "the speaker store").replace(where, "the speaker store")
        return error_response(409, message)

    @app.exception_handler(VoxprintError)
    async def _voxprint_error(request: Request, exc: VoxprintError) -> JSONResponse:
        return error_response(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "the request"
        message = (f"missing {where}" if first.get("type") == "missing" else f"{where}: {first.get('msg', 'invalid')}")
        return error_response(400, message + " (see /docs for each route's fields)")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code in (404, 405) and message in ("Not Found", "Method Not Allowed"):
            message = f"no route {request.method} {request.url.path}; /docs lists the routes"
        return error_response(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        import logging

        logging.getLogger("voxprint.service").exception("unexpected error on %s", request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); the service log has the details")

    # ----------------------------------------------------------------------------------- speakers

    @app.post("/v1/speakers/{speaker_id}/enrollments", tags=["speakers"])
    async def enroll(speaker_id: str, files: list[UploadFile] = File(..., description="enrollment recordings"),
                     name: str | None = Form(None, max_length=200, description="display name (default: the id)"),
                     key: ApiKey = Depends(admin)) -> dict[str, Any]:
        """Enroll a speaker (or add recordings to one) from one or more recordings (admin).

        Idempotent: a recording the speaker already has (same bytes) is skipped.
        """
        speaker_id = _speaker_id(speaker_id)
        uploads = await _read_uploads(files, "files")
        sources = [source_name(data, label) for data, label in uploads]
        work = _with_audio(service, uploads,
                           lambda store, paths: store.enroll(speaker_id, paths, name=name, sources=sources).to_dict())
        return await service.run(work)

    @app.get("/v1/speakers", tags=["speakers"])
    async def list_speakers(key: ApiKey = Depends(caller)) -> dict[str, Any]:
        """Every enrolled speaker."""
        records = await service.run(lambda store: [r.to_dict() for r in store.speakers()])
        return {"speakers": records, "count": len(records)}

    @app.get("/v1/speakers/{speaker_id}", tags=["speakers"])
    async def show_speaker(speaker_id: str, key: ApiKey = Depends(caller)) -> dict[str, Any]:
        """One speaker and its enrollment recordings."""
        speaker_id = _speaker_id(speaker_id)

        def show(store: SpeakerStore) -> dict[str, Any]:
            with _speaker_errors(speaker_id):
                record = store.speaker(speaker_id).to_dict()
                recordings = [{"source": e.source, "seconds": round(e.seconds, 3), "quality": round(e.quality, 3)}
                              for e in store.table.enrollments(speaker_id)]
            return {**record, "recordings": recordings}

        return await service.run(show)

    @app.delete("/v1/speakers/{speaker_id}", tags=["speakers"])
    async def remove_speaker(speaker_id: str, key: ApiKey = Depends(admin)) -> dict[str, Any]:
        """Delete a speaker and its enrollments (admin)."""
        speaker_id = _speaker_id(speaker_id)

        def remove(store: SpeakerStore) -> dict[str, Any]:
            with _speaker_errors(speaker_id):
                store.remove(speaker_id)
            return {"removed": speaker_id}

        return await service.run(remove)

    # -------------------------------------------------------------------------------- recognition

    @app.post("/v1/verify", tags=["recognition"])
    async def verify(speaker: str = Form(..., description="the claimed speaker's id"),
                     file: UploadFile = File(..., description="the test recording"),
                     key: ApiKey = Depends(caller)) -> dict[str, Any]:
        """Is ``file`` the enrolled ``speaker``? The back-end's score against the model's threshold."""
        speaker = _speaker_id(speaker)
        uploads = await _read_uploads([file], "file")

        def work(store: SpeakerStore, paths: list[str]) -> dict[str, Any]:
            with _speaker_errors(speaker):
                return store.verify(speaker, paths[0])

        return await service.run(_with_audio(service, uploads, work))

    @app.post("/v1/identify", tags=["recognition"])
    async def identify(file: UploadFile = File(..., description="the recording"),
                       top_k: int = Form(5, ge=1, le=100, description="candidates to report"),
                       key: ApiKey = Depends(caller)) -> dict[str, Any]:
        """Who is speaking: the best enrolled speaker, or null when nobody enrolled matches."""
        uploads = await _read_uploads([file], "file")
        work = _with_audio(service, uploads, lambda store, paths: store.identify(paths[0], top_k=top_k).to_dict())
        return await service.run(work)

    @app.post("/v1/similarity", tags=["recognition"])
    async def similarity(a: UploadFile = File(..., description="first recording"),
                         b: UploadFile = File(..., description="second recording"),
                         key: ApiKey = Depends(caller)) -> dict[str, float]:
        """Cosine similarity of two recordings' embeddings (in [-1, 1], not calibrated)."""
        uploads = await _read_uploads([a], "a") + await _read_uploads([b], "b")
        work = _with_audio(service, uploads, lambda store, paths: store.model.compute_similarity(*paths))
        return {"cosine": float(await service.run(work))}

    @app.post("/v1/embed", tags=["recognition"])
    async def embed(file: UploadFile = File(..., description="the recording"),
                    key: ApiKey = Depends(caller)) -> dict[str, Any]:
        """The recording's embedding (unit vector) under the service's model."""
        uploads = await _read_uploads([file], "file")
        work = _with_audio(service, uploads, lambda store, paths: store.model.extract_embedding(paths[0]))
        embedding = await service.run(work)
        return {"model": service.model.identity, "dim": int(embedding.shape[0]),
                "embedding": [round(float(x), 6) for x in embedding]}

    # ---------------------------------------------------------------------------------- operations

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """Liveness and store access (no key needed; says nothing about the store's content)."""
        try:
            await anyio.to_thread.run_sync(service.store_version)
        except StoreError:
            raise ApiError(503, "the speaker store cannot be read") from None
        return {"status": "ok"}

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def metrics(key: ApiKey = Depends(caller)) -> PlainTextResponse:
        """Prometheus-style metrics of this worker: requests, latencies, store size."""
        gauges = await anyio.to_thread.run_sync(service.store_gauges)
        return PlainTextResponse(service.metrics.render(gauges), media_type="text/plain; version=0.0.4")

    # -------------------------------------------------------------------------------------- the page

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    app.add_middleware(Guard, service=service)
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        # Outside the Guard, so browsers' preflight requests (which carry no key) are answered.
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    return app


def app_from_environment() -> FastAPI:
    """The app of the settings in ``$VOXPRINT_SERVICE_CONFIG`` (what each uvicorn worker calls).

    Raises:
        ConfigError: the variable is missing or malformed.
    """
    from voxprint.errors import ConfigError

    text = os.environ.get(ENVIRONMENT_VARIABLE)
    if not text:
        raise ConfigError(f"${ENVIRONMENT_VARIABLE} is not set; start the service with `voxprint serve`")
    return create_app(ServiceConfig.from_json(text))
