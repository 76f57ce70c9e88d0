"""The HTTP API of `graphsvc serve` (FastAPI on uvicorn).

    GET  /v1/{collection}/{key}/similar?k=10&fields=title,category&filter={"price":{"lt":20}}
    GET  /v1/{users}/{key}/recommendations?k=10&fields=title&filter={"genre":"Drama"}
    POST /v1/{collection}/similar          {"keys": [...], "k": 10, "fields": [...], "filter": {...}}
    POST /v1/{collection}/search           {"vector": [...]} or {"text": "..."}, plus k, fields, filter
    POST /v1/{collection}/search/batch     {"vectors": [[...], ...]} or {"texts": [...]}, plus k, fields, filter
    GET  /v1/collections · /healthz · /readyz · /metrics · /openapi.json · /docs

FastAPI because the schema it serves is what clients and the schemathesis test read,
and request models give 400s that name the field; uvicorn because it is the ASGI server
FastAPI is measured on. Searches run in worker threads (FAISS releases the GIL);
every query goes through `queries.SimilarityQueries`, as the CLI's do.

Safety: a bearer token when GRAPHSVC_API_TOKEN is set (all routes but /healthz and
/readyz); no query text from clients, only structured filters bound as parameters;
limits on k, batch size, body size and request time; 400 for bad input, 404 for an
unknown collection or key, 503 while no index is loaded or a dependency is down.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from graphsvc.errors import ConfigError, GraphsvcError
from graphsvc.service.errors import BadRequest, Unavailable, status_of
from graphsvc.service.guard import Guard
from graphsvc.service.metrics import ServiceMetrics
from graphsvc.service.queries import MAX_K, SimilarityQueries, field_names
from graphsvc.service.reloader import IndexReloader
from graphsvc.service.schemas import (
    ERRORS,
    MAX_BATCH,
    Answer,
    BatchAnswer,
    Collection,
    DocumentKey,
    ErrorBody,
    FieldsQuery,
    FilterQuery,
    KQuery,
    Recommendation,
    SearchBatchRequest,
    SearchRequest,
    SimilarBatchRequest,
    error_response,
    json_response,
)
from graphsvc.service.store_access import StoreAccess
from graphsvc.settings import API_TOKEN, SERVE_CONFIG, read


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
        text = read(SERVE_CONFIG)
        if not text:
            raise ConfigError(f"{SERVE_CONFIG} is not set — start the service with 'graphsvc serve'")
        config = cls(**json.loads(text))
        config.token = read(API_TOKEN)
        return config


# -- the app ---------------------------------------------------------------------------------------------
def create_app(config: ServiceConfig, start_reloader: bool = True) -> Guard:
    metrics = ServiceMetrics()

    def on_event(event, loaded):
        metrics.index_event(event.collection, event.outcome,
                            loaded.version if loaded else None, len(loaded) if loaded else None)

    reloader = IndexReloader(config.index_dir, config.collections, interval=config.reload_interval, on_event=on_event)
    store = StoreAccess(config.store, config.password_file, hold=config.hold_store)
    queries = SimilarityQueries(reloader.get, store.open, config.triton_url, max_k=min(config.max_k, MAX_K))

    async def lifespan(_app):
        if start_reloader:
            await run_in_threadpool(reloader.check)
            reloader.start()
        try:
            yield
        finally:
            reloader.stop()
            store.close()
            queries.close()

    app = FastAPI(title="graphsvc", version="1", lifespan=lifespan,
                  description="Similar documents from published FAISS indexes over a graph store.")
    app.state.queries = queries
    app.state.reloader = reloader
    app.state.metrics = metrics
    app.state.config = config

    async def run(function, *args):
        try:
            return await asyncio.wait_for(run_in_threadpool(function, *args), config.request_timeout)
        except asyncio.TimeoutError:
            raise Unavailable(f"the request did not finish within {config.request_timeout:g}s") from None

    async def answer(query, *args) -> Response:
        """A query answered in a worker thread (FAISS releases the GIL), as its JSON body."""
        return json_response(await run(lambda: query(*args).to_dict()))

    def check_batch(size: int) -> None:
        if size > config.max_batch:
            raise BadRequest(f"batches hold at most {config.max_batch} queries, got {size}")

    @app.exception_handler(GraphsvcError)
    async def graphsvc_error(_request, exc: GraphsvcError):
        return error_response(status_of(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request, exc: RequestValidationError):
        problems = []
        for error in exc.errors()[:3]:
            where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            problems.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
        return error_response(400, "; ".join(problems) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail))

    @app.get("/v1/{collection}/{key}/similar", response_model=Answer, responses=ERRORS,
             summary="Documents most similar to a stored document")
    async def similar(
        collection: Collection, key: DocumentKey, k: KQuery = 10, fields: FieldsQuery = None,
        filter: FilterQuery = None,
    ):
        if fields is None and filter is None:
            # the hot path: memory only and bounded (one probe of the index), so it runs
            # on the event loop; a hop to a worker thread would cost more than the search
            return json_response(queries.similar(collection, key, k).to_dict())
        return await answer(queries.similar, collection, key, k, field_names(fields), filter)

    @app.get("/v1/{collection}/{key}/recommendations", response_model=Recommendation, responses=ERRORS,
             summary="Movies a user has not rated, best first (popular ones for a user without ratings)")
    async def recommendations(
        collection: Collection, key: DocumentKey, k: KQuery = 10, fields: FieldsQuery = None,
        filter: FilterQuery = None,
    ):
        return await answer(queries.recommend, collection, key, k, field_names(fields), filter)

    @app.post("/v1/{collection}/similar", response_model=BatchAnswer, responses=ERRORS,
              summary="Similar documents for many stored documents")
    async def similar_batch(collection: Collection, body: SimilarBatchRequest):
        check_batch(len(body.keys))
        return await answer(queries.similar_batch, collection, body.keys, body.k, body.fields, body.filter)

    @app.post("/v1/{collection}/search", response_model=Answer, responses=ERRORS,
              summary="Documents closest to a vector or a text")
    async def search(collection: Collection, body: SearchRequest):
        return await answer(queries.search, collection, body.vector, body.text, body.k, body.fields, body.filter)

    @app.post("/v1/{collection}/search/batch", response_model=BatchAnswer, responses=ERRORS,
              summary="Search with many vectors or texts")
    async def search_batch(collection: Collection, body: SearchBatchRequest):
        check_batch(len(body.vectors or body.texts or ()))
        return await answer(queries.search_batch, collection, body.vectors, body.texts, body.k, body.fields,
                            body.filter)

    @app.get("/v1/collections", summary="The collections served and their loaded index versions")
    async def collections():
        return json_response({"collections": await run(reloader.describe)})

    @app.get("/healthz", summary="The process is up")
    async def healthz():
        return json_response({"status": "ok"})

    @app.get("/readyz", summary="Ready when an index is loaded", responses={503: {"model": ErrorBody}})
    async def readyz():
        live = {c: i.version for c, i in reloader.live().items()}
        if not reloader.ready:
            return error_response(503, "no index is loaded yet" if not live else f"still loading; serving {live}")
        return json_response({"status": "ready", "indexes": live})

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus():
        return Response(metrics.render(), media_type=metrics.content_type)

    return Guard(app, config, metrics, queries)


def app_from_env() -> Guard:
    """The app factory uvicorn's workers call (`graphsvc serve` passes the settings in
    GRAPHSVC_SERVE_CONFIG and the token in GRAPHSVC_API_TOKEN)."""
    import faiss

    faiss.omp_set_num_threads(1)  # one query per thread: the thread pool is the parallelism
    return create_app(ServiceConfig.from_env())


__all__ = ["ServiceConfig", "create_app", "app_from_env"]
