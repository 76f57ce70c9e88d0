"""The ASGI front of the HTTP service: bearer token, body size limit and request metrics
before any routing or parsing, and the hot route answered without FastAPI's routing."""

from __future__ import annotations

import hmac
import re
import time
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.responses import Response

from graphsvc.errors import GraphsvcError
from graphsvc.service.metrics import ServiceMetrics
from graphsvc.service.queries import MAX_K, SimilarityQueries
from graphsvc.service.schemas import error_response, json_response

if TYPE_CHECKING:
    from graphsvc.service.app import ServiceConfig

OPEN_PATHS = ("/healthz", "/readyz")
SIMILAR_ROUTE = "/v1/{collection}/{key}/similar"
_SIMILAR_PATH = re.compile(r"^/v1/([A-Za-z0-9_][A-Za-z0-9_\-.]{0,255})/([^/]{1,254})/similar$")
_K_ONLY = re.compile(rb"^(?:k=(\d{1,4}))?$")


class Guard:
    """ASGI wrapper around the app: bearer token, body size limit and request metrics,
    before any routing or parsing happens.

    It also answers the hot request itself — `GET /v1/{collection}/{key}/similar` with at
    most `k` — when it succeeds: FastAPI's routing and parameter validation cost about as
    much CPU as the search. The checks are the route's own (collection pattern, key
    length, 1 ≤ k ≤ 1000); anything else, and every error, goes through the app, so
    answers and error bodies are the app's."""

    def __init__(self, app: FastAPI, config: ServiceConfig, metrics: ServiceMetrics, queries: SimilarityQueries):
        self.app = app
        self.config = config
        self.metrics = metrics
        self.queries = queries
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
            if rejection is None and scope["method"] == "GET":
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
            return json_response(self.queries.similar(match.group(1), match.group(2), k).to_dict())
        except GraphsvcError:
            return None  # the app answers it again, with its own error

    def _rejection(self, scope) -> Response | None:
        if self.expected is None or scope["path"] in OPEN_PATHS:
            return None
        for name, value in scope["headers"]:
            if name == b"authorization" and hmac.compare_digest(value, self.expected):
                return None
        return error_response(401, "missing or wrong bearer token (Authorization: Bearer <GRAPHSVC_API_TOKEN>)")

    async def _bounded_body(self, scope, receive):
        """Read the body up front (bodies are small), refusing more than max_body_bytes."""
        if scope["method"] in ("GET", "HEAD"):
            return receive, None
        limit = self.config.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                return receive, error_response(413, f"request body is larger than {limit} bytes")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return receive, error_response(413, f"request body is larger than {limit} bytes")
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
