"""python-arango's exceptions as the StoreErrors a user can act on."""

from __future__ import annotations

from contextlib import contextmanager

from arango import errno as arango_errno
from arango import exceptions as arango_exceptions

from graphsvc.errors import ArangoError, CollectionNotFound, DocumentNotFound, StoreError
from graphsvc.store.arango.store_url import PASSWORD_VARIABLE, ArangoSettings


def translate_error(
    exc: arango_exceptions.ArangoServerError,
    settings: ArangoSettings,
    store_url: str,
    collection: str = "",
    key: str | None = None,
) -> StoreError:
    """A python-arango server error as the StoreError a user can act on: a missing
    collection or document by name, a missing database or refused login with the fix,
    anything else as ArangoError with the server's error number and the request."""
    code, status = exc.error_code, exc.http_code
    request = getattr(exc, "request", None)
    method = (getattr(exc, "http_method", None) or getattr(request, "method", "") or "").upper()
    described = f"{method} {request.endpoint}".strip() if request is not None else ""
    where = ", ".join(settings.hosts)
    message = str(exc.error_message or exc.message)
    if code == arango_errno.DATA_SOURCE_NOT_FOUND and collection:  # 1203: collection or view not found
        return CollectionNotFound(collection, store_url)
    if code == arango_errno.DOCUMENT_NOT_FOUND and collection and key is not None:
        return DocumentNotFound(collection, key)
    if code == arango_errno.DATABASE_NOT_FOUND:
        return ArangoError(
            f"database '{settings.database}' does not exist at {where} — create it with --create-database",
            code, status, described,
        )
    if status == 401:
        # with authentication on, a database that does not exist also answers 401 (errorNum 11)
        return ArangoError(
            f"user '{settings.username}' was refused at {where} for database '{settings.database}' — check "
            f"{PASSWORD_VARIABLE} or --password-file (a database that does not exist is refused the same way: "
            "check its name, or pass --create-database)",
            code, status, described,
        )
    if status == 403:
        return ArangoError(
            f"user '{settings.username}' may not do this in database '{settings.database}': {message}",
            code, status, described, collection,
        )
    return ArangoError(message, code, status, described, collection)


@contextmanager
def as_json(collection: str, what: str):
    """python-arango serialises with json.dumps: a value it cannot write (a numpy
    scalar, bytes) is the caller's data problem, named as such."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        if "JSON" not in str(exc) and "serializable" not in str(exc):
            raise
        raise StoreError(f"{collection}: {what} cannot be sent as JSON: {exc}") from exc
