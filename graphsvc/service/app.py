"""The HTTP API of `graphsvc serve` (FastAPI on uvicorn).

    GET  /v1/{collection}/{key}/similar?k=10&fields=title,category&filter={"price":{"lt":20}}
    POST /v1/{collection}/similar          {"keys": [...], "k": 10, "fields": [...], "filter": {...}}
    POST /v1/{collection}/search           {"vector": [...]} or {"text": "..."}, plus k, fields, filter
    POST /v1/{collection}/search/batch     {"vectors": [[...], ...]} or {"texts": [...]}, plus k, fields, filter
    GET  /v1/collections · /healthz · /readyz · /metrics · /openapi.json · /docs

FastAPI because the schema it serves is what clients and the schemathesis test read,
and request models give 400s that name the field; uvicorn because it is the ASGI server
FastAPI is measured on. Searches run in worker threads (FAISS releases the GIL).

Safety: a bearer token when GRAPHSVC_API_TOKEN is set (all routes but /healthz and
/readyz); no query text from clients, only structured filters bound as parameters;
limits on k, batch size, body size and request time; 400 for bad input, 404 for an
unknown collection or key, 503 while no index is loaded or a dependency is down.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Optional

from fastapi import FastAPI, Query
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from graphsvc.errors import GraphsvcError
from graphsvc.service.errors import BadRequest, Unavailable, status_of
from graphsvc.service.metrics import ServiceMetrics
from graphsvc.service.reloader import IndexReloader
from graphsvc.service.similarity import SimilarityService, StoreAccess

MAX_K = 1000
MAX_BATCH = 256
MAX_DIM = 4096
MAX_TEXT = 10_000
MAX_FIELDS = 32
COLLECTION_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_\-.]*$"
CONFIG_VARIABLE = "GRAPHSVC_SERVE_CONFIG"
TOKEN_VARIABLE = "GRAPHSVC_API_TOKEN"
OPEN_PATHS = ("/healthz", "/readyz")
SIMILAR_ROUTE = "/v1/{collection}/{key}/similar"
_SIMILAR_PATH = re.compile(r"^/v1/([A-Za-z0-9_][A-Za-z0-9_\-.]{0,255})/([^/]{1,254})/similar$")
_K_ONLY = re.compile(rb"^(?:k=(\d{1,4}))?$")


@dataclass
class ServiceConfig:
    index_dir: str
    store: str | None = None
    password_file: str | None = None
    triton_url: str | None = None
    collections: list[str] | None = None
    max_k: int = MAX_K
    max_batch: int = MAX_BATCH
    max_body_bytes: int = 1 << 20
    request_timeout: float = 10.0
    reload_interval: float = 1.0
    hold_store: bool = False
    token: str | None = field(default=None, repr=False)

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if k != "token"})

    @classmethod
    def from_env(cls) -> "ServiceConfig":
        config = cls(**json.loads(os.environ[CONFIG_VARIABLE]))
        config.token = os.environ.get(TOKEN_VARIABLE) or None
        return config


# -- request and response shapes (what /openapi.json documents) ------------------------------------
Collection = Annotated[str, PathParam(pattern=COLLECTION_PATTERN, max_length=256)]
DocumentKey = Annotated[str, PathParam(min_length=1, max_length=254)]
KQuery = Annotated[int, Query(ge=1, le=MAX_K)]
FieldsQuery = Annotated[Optional[str], Query(max_length=4096, description="Comma-separated attributes")]
FilterQuery = Annotated[Optional[str], Query(max_length=16_384, description="Structured filter as JSON")]
Finite = Annotated[float, Field(allow_inf_nan=False)]
K = Annotated[int, Field(ge=1, le=MAX_K, description="How many hits (at most 1000).")]
FieldNames = Annotated[Optional[list[Annotated[str, Field(min_length=1, max_length=256)]]],
                       Field(max_length=MAX_FIELDS, description="Document attributes to return with each hit.")]
Filter = Annotated[Optional[dict[str, Any]], Field(
    description='Structured filter, e.g. {"category": {"in": ["Books"]}, "price": {"lt": 20}}; '
                "operators eq, ne, lt, lte, gt, gte, in.")]


class Hit(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    key: str = Field(alias="_key")
    score: float


class Answer(BaseModel):
    collection: str
    index_version: int
    query: dict[str, Any]
    hits: list[Hit]


class BatchResult(BaseModel):
    key: Optional[str] = None
    hits: Optional[list[Hit]] = None
    error: Optional[dict[str, Any]] = None


class BatchAnswer(BaseModel):
    collection: str
    index_version: int
    k: int
    results: list[BatchResult]


class ErrorBody(BaseModel):
    error: str


class SimilarBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: list[Annotated[str, Field(min_length=1, max_length=254)]] = Field(min_length=1, max_length=MAX_BATCH)
    k: K = 10
    fields: FieldNames = None
    filter: Filter = None


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vector: Optional[list[Finite]] = Field(None, min_length=1, max_length=MAX_DIM)
    text: Optional[str] = Field(None, min_length=1, max_length=MAX_TEXT)
    k: K = 10
    fields: FieldNames = None
    filter: Filter = None


class SearchBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vectors: Optional[list[Annotated[list[Finite], Field(min_length=1, max_length=MAX_DIM)]]] = Field(
        None, min_length=1, max_length=MAX_BATCH)
    texts: Optional[list[Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]]] = Field(
        None, min_length=1, max_length=MAX_BATCH)
    k: K = 10
    fields: FieldNames = None
    filter: Filter = None


ERRORS = {400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 404: {"model": ErrorBody},
          413: {"model": ErrorBody}, 503: {"model": ErrorBody}}


def _json(body: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status_code=status, media_type="application/json",
                    headers=headers)


def _error(status: int, message: str) -> Response:
    headers = {"Retry-After": "1"} if status == 503 else ({"WWW-Authenticate": "Bearer"} if status == 401 else None)
    return _json({"error": message}, status, headers)


def _fields(text: str | None) -> list[str] | None:
    if not text:
        return None
    names = [f.strip() for f in text.split(",") if f.strip()]
    if len(names) > MAX_FIELDS:
        raise BadRequest(f"at most {MAX_FIELDS} fields may be asked for, got {len(names)}")
    return names or None


# -- the app ---------------------------------------------------------------------------------------------
def create_app(config: ServiceConfig, start_reloader: bool = True) -> "Guard":
    metrics = ServiceMetrics()

    def on_event(event, loaded):
        metrics.index_event(event.collection, event.outcome,
                            loaded.version if loaded else None, len(loaded) if loaded else None)

    reloader = IndexReloader(config.index_dir, config.collections, interval=config.reload_interval, on_event=on_event)
    service = SimilarityService(reloader, StoreAccess(config.store, config.password_file, hold=config.hold_store),
                                config.triton_url, max_k=min(config.max_k, MAX_K))

    async def lifespan(_app):
        if start_reloader:
            await run_in_threadpool(reloader.check)
            reloader.start()
        try:
            yield
        finally:
            reloader.stop()
            service.store.close()

    app = FastAPI(title="graphsvc", version="1", lifespan=lifespan,
                  description="Similar documents from published FAISS indexes over a graph store.")
    app.state.service = service
    app.state.reloader = reloader
    app.state.metrics = metrics
    app.state.config = config

    async def run(function, *args):
        try:
            return await asyncio.wait_for(run_in_threadpool(function, *args), config.request_timeout)
        except asyncio.TimeoutError:
            raise Unavailable(f"the request did not finish within {config.request_timeout:g}s") from None

    def check_batch(size: int) -> None:
        if size > config.max_batch:
            raise BadRequest(f"batches hold at most {config.max_batch} queries, got {size}")

    @app.exception_handler(GraphsvcError)
    async def graphsvc_error(_request, exc: GraphsvcError):
        return _error(status_of(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request, exc: RequestValidationError):
        problems = []
        for error in exc.errors()[:3]:
            where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            problems.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
        return _error(400, "; ".join(problems) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail))

    @app.get("/v1/{collection}/{key}/similar", response_model=Answer, responses=ERRORS,
             summary="Documents most similar to a stored document")
    async def similar(
        collection: Collection, key: DocumentKey, k: KQuery = 10, fields: FieldsQuery = None,
        filter: FilterQuery = None,
    ):
        if fields is None and filter is None:
            # the hot path: memory only and bounded (one probe of the index), so it runs
            # on the event loop; a hop to a worker thread would cost more than the search
            return _json(service.similar(collection, key, k))
        return _json(await run(service.similar, collection, key, k, _fields(fields), filter))

    @app.post("/v1/{collection}/similar", response_model=BatchAnswer, responses=ERRORS,
              summary="Similar documents for many stored documents")
    async def similar_batch(collection: Collection, body: SimilarBatchRequest):
        check_batch(len(body.keys))
        return _json(await run(service.similar_batch, collection, body.keys, body.k, body.fields, body.filter))

    @app.post("/v1/{collection}/search", response_model=Answer, responses=ERRORS,
              summary="Documents closest to a vector or a text")
    async def search(collection: Collection, body: SearchRequest):
        return _json(await run(service.search, collection, body.vector, body.text, body.k, body.fields, body.filter))

    @app.post("/v1/{collection}/search/batch", response_model=BatchAnswer, responses=ERRORS,
              summary="Search with many vectors or texts")
    async def search_batch(collection: Collection, body: SearchBatchRequest):
        check_batch(len(body.vectors or body.texts or ()))
        return _json(await run(service.search_batch, collection, body.vectors, body.texts, body.k, body.fields,
                               body.filter))

    @app.get("/v1/collections", summary="The collections served and their loaded index versions")
    async def collections():
        return _json({"collections": await run(service.collections)})

    @app.get("/healthz", summary="The process is up")
    async def healthz():
        return _json({"status": "ok"})

    @app.get("/readyz", summary="Ready when an index is loaded", responses={503: {"model": ErrorBody}})
    async def readyz():
        live = {c: i.version for c, i in reloader.live().items()}
        if not reloader.ready:
            return _error(503, "no index is loaded yet" if not live else f"still loading; serving {live}")
        return _json({"status": "ready", "indexes": live})

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus():
        return Response(metrics.render(), media_type=metrics.content_type)

    return Guard(app, config, metrics, service)


class Guard:
    """ASGI wrapper around the app: bearer token, body size limit and request metrics,
    before any routing or parsing happens.

    It also answers the hot request itself — `GET /v1/{collection}/{key}/similar` with at
    most `k` — when it succeeds: FastAPI's routing and parameter validation cost about as
    much CPU as the search. The checks are the route's own (collection pattern, key
    length, 1 ≤ k ≤ 1000); anything else, and every error, goes through the app, so
    answers and error bodies are the app's."""

    def __init__(self, app: FastAPI, config: ServiceConfig, metrics: ServiceMetrics,
                 service: SimilarityService | None = None):
        self.app = app
        self.config = config
        self.metrics = metrics
        self.service = service
        self.expected = f"Bearer {config.token}".encode() if config.token else None

    @property
    def state(self):
        return self.app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_recording(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        route_label = None
        try:
            rejection = self._rejection(scope)
            if rejection is None and scope["method"] == "GET" and self.service is not None:
                answer = self._hot_answer(scope)
                if answer is not None:
                    route_label = SIMILAR_ROUTE
                    return await answer(scope, receive, send_recording)
            if rejection is None:
                receive, rejection = await self._bounded_body(scope, receive)
            if rejection is not None:
                await rejection(scope, receive, send_recording)
            else:
                await self.app(scope, receive, send_recording)
        finally:
            route = route_label or getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(scope["method"], route, status["code"], time.perf_counter() - started)

    def _hot_answer(self, scope) -> Response | None:
        match = _SIMILAR_PATH.match(scope["path"])
        if match is None:
            return None
        k_only = _K_ONLY.match(scope["query_string"])
        if k_only is None:
            return None
        k = int(k_only.group(1)) if k_only.group(1) else 10
        if not 1 <= k <= MAX_K:
            return None
        try:
            return _json(self.service.similar(match.group(1), match.group(2), k))
        except GraphsvcError:
            return None  # the app answers it again, with its own error

    def _rejection(self, scope) -> Response | None:
        if self.expected is None or scope["path"] in OPEN_PATHS:
            return None
        for name, value in scope["headers"]:
            if name == b"authorization" and hmac.compare_digest(value, self.expected):
                return None
        return _error(401, "missing or wrong bearer token (Authorization: Bearer <GRAPHSVC_API_TOKEN>)")

    async def _bounded_body(self, scope, receive):
        """Read the body up front (bodies are small), refusing more than max_body_bytes."""
        if scope["method"] in ("GET", "HEAD"):
            return receive, None
        limit = self.config.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                return receive, _error(413, f"request body is larger than {limit} bytes")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return receive, _error(413, f"request body is larger than {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay, None


def app_from_env() -> Guard:
    """The app factory uvicorn's workers call (`graphsvc serve` passes the settings in
    GRAPHSVC_SERVE_CONFIG and the token in GRAPHSVC_API_TOKEN)."""
    import faiss

    faiss.omp_set_num_threads(1)  # one query per thread: the thread pool is the parallelism
    return create_app(ServiceConfig.from_env())


__all__ = ["ServiceConfig", "create_app", "app_from_env"]
