"""Prometheus metrics of one service process (its own registry, so apps built in tests
do not collide): request latency histograms and counts by route and status, and the
loaded index's version and size per collection. With several uvicorn workers each
process reports its own figures."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "graphsvc_request_duration_seconds", "Time from request to response, by route.",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.requests = Counter(
            "graphsvc_requests", "Requests answered, by route and status code.",
            ["method", "route", "status"], registry=self.registry,
        )
        self.index_version = Gauge(
            "graphsvc_index_version", "Version of the index being served.", ["collection"], registry=self.registry,
        )
        self.index_vectors = Gauge(
            "graphsvc_index_vectors", "Vectors in the index being served.", ["collection"], registry=self.registry,
        )
        self.reloads = Counter(
            "graphsvc_index_reloads", "Index versions loaded or refused.", ["collection", "outcome"],
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.latency.labels(method, route).observe(seconds)
        self.requests.labels(method, route, str(status)).inc()

    def index_event(self, collection: str, outcome: str, version: int | None = None,
                    vectors: int | None = None) -> None:
        self.reloads.labels(collection, outcome).inc()
        if version is not None:
            self.index_version.labels(collection).set(version)
        if vectors is not None:
            self.index_vectors.labels(collection).set(vectors)

    def render(self) -> bytes:
        return generate_latest(self.registry)
