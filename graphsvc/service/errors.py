"""Errors of the query path, each with the HTTP status the service answers with (the
CLI prints their message and exits 1, as for any GraphsvcError).

Errors raised elsewhere in graphsvc map onto statuses in `status_of`: unknown documents
and collections are 404, an index or a dependency that is not there (yet) is 503, and
everything else a user can act on is 400.
"""

from __future__ import annotations

from graphsvc.errors import (
    CollectionNotFound,
    DocumentNotFound,
    GraphsvcError,
    IndexCorrupt,
    IndexNotFound,
    StoreError,
    TritonInferenceError,
    TritonUnavailable,
)


class ServiceError(GraphsvcError):
    status = 400


class BadRequest(ServiceError):
    status = 400


class NotFound(ServiceError):
    status = 404


class Unavailable(ServiceError):
    """A dependency (the index, the store, Triton) is not there right now; retry later."""

    status = 503


class FilterError(BadRequest):
    """A structured filter is malformed; the message names the attribute and operator."""


def status_of(exc: GraphsvcError) -> int:
    if isinstance(exc, ServiceError):
        return exc.status
    if isinstance(exc, (DocumentNotFound, CollectionNotFound)):
        return 404
    if isinstance(exc, (IndexNotFound, IndexCorrupt, TritonUnavailable, TritonInferenceError, StoreError)):
        return 503
    return 400
