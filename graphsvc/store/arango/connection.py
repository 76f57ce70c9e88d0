"""The connection to an ArangoDB database and the one way queries reach it: the client
set-up from the store URL (creating the database when asked), every python-arango call
wrapped so its errors become StoreErrors, and AQL cursors whose bind parameters must
match the query's placeholders exactly."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence

from arango import ArangoClient
from arango import errno as arango_errno
from arango import exceptions as arango_exceptions
from arango.http import HTTPClient

from graphsvc.errors import ArangoError, StoreError
from graphsvc.store.arango import aql
from graphsvc.store.arango.errors import as_json, translate_error
from graphsvc.store.arango.store_url import parse_store_url, redacted
from graphsvc.store.base import CollectionKind, StoreAddress

CURSOR_BATCH_SIZE = 10_000  # documents per cursor round trip
KEY_BATCH_SIZE = 10_000  # keys per lookup / removal query
CURSOR_TTL = 3_600  # seconds a stream cursor survives between fetches (slow consumers)
REQUEST_TIMEOUT = 600  # seconds; counting dangling edges of a big collection takes a while


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ArangoConnection:
    """What every part of the ArangoDB backend builds on: `_db`, `_errors`, `_all`,
    `_row_batches` and `_kind`."""

    url: str

    def __init__(
        self,
        url: str,
        create: bool = False,
        password_file: str | os.PathLike | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        http_client: HTTPClient | None = None,
    ):
        self.url = redacted(url)
        self.settings = parse_store_url(url, password_file=password_file, environ=environ)
        self._password_file = str(password_file) if password_file is not None else None
        self._db = None
        self._client = ArangoClient(
            hosts=list(self.settings.hosts),
            verify_override=self.settings.verify if self.settings.tls else None,
            request_timeout=REQUEST_TIMEOUT,
            http_client=http_client,
        )
        try:
            self._db = self._connect(create)
        except BaseException:
            self._client.close()
            raise

    def address(self) -> StoreAddress:
        """The URL (it never holds the password) and the password file, for Ray workers;
        one reader or writer budget per coordinator the URL names."""
        return StoreAddress(self.url, self._password_file, coordinators=len(self.settings.hosts))

    def _where(self) -> str:
        return ", ".join(self.settings.hosts)

    def _connect(self, create: bool):
        """The database, created first when `create` and it does not exist. A missing
        database answers 404/1228, but with authentication on the server answers
        401/11 instead (it does not tell strangers which databases exist), so either
        answer is checked through `_system` (GET /_api/database) before creating;
        a database that exists after a 401 means the login itself was refused."""
        settings = self.settings
        try:
            with self._errors():
                return self._client.db(settings.database, settings.username, settings.password, verify=True)
        except StoreError as exc:
            missing = getattr(exc, "error_code", None) == arango_errno.DATABASE_NOT_FOUND
            refused = getattr(exc, "http_status", None) == 401
            if not (create and (missing or refused)):
                raise
            first_error = exc
        with self._errors():
            system = self._client.db("_system", settings.username, settings.password, verify=False)
            exists = system.has_database(settings.database)
        if exists and not missing:
            raise first_error
        if not exists:
            try:
                with self._errors(action=f"creating database '{settings.database}'"):
                    system.create_database(settings.database)
            except ArangoError as exc:
                if exc.error_code != arango_errno.DUPLICATE_NAME:  # another process made it meanwhile
                    raise
        with self._errors():
            return self._client.db(settings.database, settings.username, settings.password, verify=True)

    # -- errors at the boundary ----------------------------------------------------------------
    @contextmanager
    def _errors(self, collection: str = "", key: str | None = None, action: str = ""):
        """python-arango's and the network's exceptions → StoreError and friends."""
        try:
            yield
        except arango_exceptions.ArangoServerError as exc:
            raise translate_error(exc, self.settings, self.url, collection, key) from exc
        except arango_exceptions.ArangoClientError as exc:
            raise ArangoError(str(exc.message), request=action, collection=collection) from exc
        except OSError as exc:  # requests' ConnectionError, python-arango's ConnectionAbortedError
            raise StoreError(f"ArangoDB at {self._where()} is not reachable: {exc}") from exc

    # -- queries ------------------------------------------------------------------------------------
    def _cursor(self, query: str, bind_vars: dict[str, Any], collection: str = "", stream: bool = False):
        expected = aql.bind_parameter_names(query)
        if expected != set(bind_vars):
            raise ValueError(f"bind parameters {sorted(bind_vars)} do not match the query's {sorted(expected)}")
        with self._errors(collection, action="AQL query"), as_json(collection, "a query parameter"):
            return self._db.aql.execute(
                query,
                bind_vars=bind_vars,
                batch_size=CURSOR_BATCH_SIZE,
                stream=stream or None,
                ttl=CURSOR_TTL if stream else None,
            )

    def _all(self, query: str, bind_vars: dict[str, Any], collection: str = "") -> list:
        cursor = self._cursor(query, bind_vars, collection)
        with self._errors(collection, action="AQL cursor"):
            return list(cursor)

    def _write(self, query: str, bind_vars: dict[str, Any], collection: str) -> int:
        """Run a data-modification query; the documents it wrote, as the server counts
        them (`extra.stats.writesExecuted`)."""
        cursor = self._cursor(query, bind_vars, collection)
        with self._errors(collection, action="AQL cursor"):
            rows = list(cursor)
        stats = cursor.statistics() or {}
        return int(stats.get("modified", len(rows)))

    def _row_batches(self, query: str, bind_vars: dict[str, Any], collection: str) -> Iterator[list]:
        """The rows of a streaming cursor, one server batch at a time."""
        cursor = self._cursor(query, bind_vars, collection, stream=True)
        try:
            while True:
                batch = cursor.batch()
                if batch:
                    rows = list(batch)
                    batch.clear()
                    yield rows
                    del rows  # converted by now (arrow.rebatched): not kept while the next batch comes
                if not cursor.has_more():
                    return
                with self._errors(collection, action="AQL cursor"):
                    cursor.fetch()
        finally:
            if cursor.has_more():
                try:
                    cursor.close(ignore_missing=True)
                except (arango_exceptions.ArangoError, OSError):
                    pass  # the server drops it after its TTL anyway

    def _kind(self, name: str) -> CollectionKind:
        with self._errors(name):
            properties = self._db.collection(name).properties()
        return "edge" if properties.get("edge") else "document"

    def close(self) -> None:
        client, self._client = getattr(self, "_client", None), None
        if client is not None:
            client.close()
        self._db = None
