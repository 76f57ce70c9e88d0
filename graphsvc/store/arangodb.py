"""The ArangoDB backend: the store port over python-arango, kept thin.

- Connection from the store URL: `arangodb://user@host:8529/db` (HTTP) or
  `arangodbs://…` (HTTPS, certificates verified; `GRAPHSVC_ARANGO_CA_FILE` names a CA
  bundle, `?verify=false` turns verification off, explicitly). Several coordinators:
  `arangodb://user@h1:8529,h2:8529/db`. The password comes from `--password-file` or
  `ARANGO_PASSWORD`, never from the URL.
- Writes go through the import API in chunks (`onDuplicate=replace`, `complete=true`:
  a chunk is written whole or not at all); attribute write-back is one AQL UPDATE per
  chunk after one existence check of all keys, so a missing key writes nothing.
- Reads are streaming AQL cursors (`stream: true`, 10,000 documents per round trip)
  turned into Arrow record batches of the requested types.
- Every AQL text lives in `graphsvc.store.aql`; every value is a bind parameter.
- Change marker: a counter per collection in the `graphsvc_state` collection, bumped
  after every write made through this backend. (A collection's revision from the
  server is an opaque string that does not order, and it resets when a collection is
  dropped and restored.) Writes made by other clients do not move it.
- Multi-chunk writes are not one transaction: the import API takes no stream
  transaction. Upserts are idempotent, so replaying a write after a failure is safe.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

import pyarrow as pa
import pyarrow.compute as pc
from arango import ArangoClient
from arango import errno as arango_errno
from arango import exceptions as arango_exceptions

from graphsvc.errors import ArangoError, CollectionNotFound, ConfigError, DocumentNotFound, StoreError
from graphsvc.store import aql
from graphsvc.store.base import (
    FILTER_OPERATORS,
    CollectionInfo,
    CollectionKind,
    Condition,
    DanglingEdges,
    EdgeDefinition,
    GraphInfo,
    GraphStore,
    IndexOutcome,
)
from graphsvc.store.checks import (
    DOCUMENT_ID_PATTERN,
    DOCUMENT_KEY_PATTERN,
    check_edge_ends,
    check_keys,
    keep_last_rows,
    last_rows,
)

SCHEMES = {"arangodb": "http", "arangodbs": "https"}
DEFAULT_PORT = 8529
CA_FILE_VARIABLE = "GRAPHSVC_ARANGO_CA_FILE"
PASSWORD_VARIABLE = "ARANGO_PASSWORD"

STATE_COLLECTION = "graphsvc_state"
IMPORT_BATCH_SIZE = 10_000  # documents per import request (~25 MB with 256-d embeddings)
CURSOR_BATCH_SIZE = 10_000  # documents per cursor round trip
KEY_BATCH_SIZE = 10_000  # keys per lookup / removal query
CURSOR_TTL = 3_600  # seconds a stream cursor survives between fetches (slow consumers)
REQUEST_TIMEOUT = 600  # seconds; counting dangling edges of a big collection takes a while
VECTOR_INDEX_MIN_VERSION = (3, 12, 4)

# ArangoDB's rules for collection names and document keys
_COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,255}$")
_DOCUMENT_KEY = re.compile(DOCUMENT_KEY_PATTERN)
_SYSTEM_ATTRIBUTES = ("_key", "_id", "_rev", "_from", "_to")
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.\-_]*)(?::(\d{1,5}))?")
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


# -- connection settings ---------------------------------------------------------------------
@dataclass(frozen=True)
class ArangoSettings:
    """Where and as whom to connect, from a store URL (the password never in repr)."""

    hosts: tuple[str, ...]
    database: str
    username: str
    password: str = field(repr=False)
    verify: bool | str = True  # HTTPS only: True, False, or the path of a CA bundle

    @property
    def tls(self) -> bool:
        return self.hosts[0].startswith("https://")


def parse_store_url(
    url: str, password_file: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None
) -> ArangoSettings:
    """Connection settings from `arangodb[s]://[user@]host[:port][,host2…][/database][?verify=false]`.

    The password comes from `password_file` (first line break stripped) or else from
    `ARANGO_PASSWORD`; a URL carrying one raises ConfigError, as do unknown options and
    a CA bundle (`GRAPHSVC_ARANGO_CA_FILE`) that does not exist."""
    environ = os.environ if environ is None else environ
    scheme, separator, _ = url.partition("://")
    if not separator or scheme.lower() not in SCHEMES:
        raise ConfigError(f"'{_redacted(url)}' is not an ArangoDB URL — use arangodb://user@host:8529/database")
    protocol = SCHEMES[scheme.lower()]
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"malformed ArangoDB URL '{_redacted(url)}': {exc}") from None
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    if ":" in userinfo:
        raise ConfigError(
            f"the store URL '{_redacted(url)}' contains a password — remove it and set "
            f"{PASSWORD_VARIABLE} or pass --password-file (a URL ends up in shell history and process lists)"
        )
    username = unquote(userinfo) or "root"
    if not hostlist:
        raise ConfigError(f"no host in the store URL '{url}' — use arangodb://user@host:8529/database")
    hosts = []
    for host in hostlist.split(","):
        match = _HOST.fullmatch(host)
        if match is None or (match.group(2) and not 0 < int(match.group(2)) < 65536):
            raise ConfigError(f"bad host '{host}' in the store URL '{url}' — use host or host:port")
        hosts.append(f"{protocol}://{match.group(1)}:{match.group(2) or DEFAULT_PORT}")
    database = unquote(parts.path.strip("/")) or "_system"
    if "/" in database:
        raise ConfigError(f"the store URL '{url}' names more than a database after the host: '{database}'")

    options = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(options) - {"verify"})
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} in the store URL '{url}' (known: verify)")
    verify: bool | str = True
    if "verify" in options:
        if protocol != "https":
            raise ConfigError(f"'verify' applies to arangodbs:// (TLS) URLs only, not '{url}'")
        text = options["verify"][-1].lower()
        if text not in _TRUE | _FALSE:
            raise ConfigError(f"verify={options['verify'][-1]} in '{url}': use verify=true or verify=false")
        verify = text in _TRUE
    ca_file = environ.get(CA_FILE_VARIABLE, "")
    if protocol == "https" and verify is True and ca_file:
        if not Path(ca_file).is_file():
            raise ConfigError(f"{CA_FILE_VARIABLE}={ca_file}: no such file")
        verify = ca_file

    if password_file is not None:
        try:
            password = Path(password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"cannot read the password file {password_file}: {exc.strerror or exc}") from None
    else:
        password = environ.get(PASSWORD_VARIABLE, "")
    return ArangoSettings(tuple(hosts), database, username, password, verify)


def _redacted(url: str) -> str:
    """The URL with any password in it replaced, for messages."""
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", url)


# -- versions ----------------------------------------------------------------------------------
def parse_version(text: str) -> tuple[int, int, int]:
    """`"3.12.4"`, `"3.12.4-1"`, `"3.12.5-devel"` → (3, 12, 4) / (3, 12, 5)."""
    match = re.match(r"\s*v?(\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        raise StoreError(f"cannot read the ArangoDB version '{text}'")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def supports_vector_index(version: str) -> bool:
    return parse_version(version) >= VECTOR_INDEX_MIN_VERSION


def default_n_lists(document_count: int) -> int:
    """ArangoDB's suggestion for the IVF cell count, 15·√N, never more than N."""
    return max(1, min(document_count, round(15 * math.sqrt(max(document_count, 1)))))


# -- index definitions ------------------------------------------------------------------------
_INDEX_TYPES = {
    "persistent": "persistent",
    "hash": "persistent",  # hash and skiplist have been persistent indexes since 3.9
    "skiplist": "persistent",
    "ttl": "ttl",
    "fulltext": "fulltext",
    "geo": "geo",
    "geo1": "geo",  # dumps from before 3.4
    "geo2": "geo",
    "inverted": "inverted",
    "vector": "vector",
    "mdi": "mdi",
    "mdi-prefixed": "mdi-prefixed",
    "zkd": "zkd",
}
# what the server reports about an index but does not accept when creating one
_READ_ONLY_INDEX_ATTRIBUTES = (
    "id", "selectivityEstimate", "figures", "isBuilding", "progress", "isNewlyCreated",
    "code", "error", "trainingState", "errorMessage",
)


def index_fields(definition: Mapping[str, Any]) -> tuple[str, ...]:
    """The attribute paths of a definition (inverted indexes list objects with `name`)."""
    names = []
    for item in definition.get("fields") or ():
        names.append(str(item.get("name", "")) if isinstance(item, Mapping) else str(item))
    return tuple(names)


def index_request(collection: str, definition: Mapping[str, Any]) -> dict | IndexOutcome:
    """The body for `POST /_api/index` made from an index definition as arangodump
    writes it, or the outcome straight away when nothing is to be sent (primary and
    edge indexes exist already; unknown types are skipped)."""
    index_type = str(definition.get("type", ""))
    fields = index_fields(definition)
    if index_type in ("primary", "edge"):
        return IndexOutcome(collection, index_type, fields, "exists")
    if index_type not in _INDEX_TYPES:
        return IndexOutcome(
            collection, index_type, fields, "skipped", f"ArangoDB has no '{index_type}' index type"
        )
    if not fields:
        return IndexOutcome(collection, index_type, fields, "skipped", "the definition names no fields")
    body = {k: v for k, v in definition.items() if k not in _READ_ONLY_INDEX_ATTRIBUTES}
    body["type"] = _INDEX_TYPES[index_type]
    return body


# -- Arrow conversion ---------------------------------------------------------------------------
def rows_to_record_batch(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
    """Cursor rows (objects) → a record batch of `schema`: absent attributes are null,
    values are cast to the field types, and values that cannot be are null (a list of
    strings asked for as a number, say); strings asked for get other values as JSON."""
    columns = [_arrow_column([row.get(f.name) for row in rows], f.type) for f in schema]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def edge_rows_to_record_batch(rows: Sequence[Sequence[str]]) -> pa.RecordBatch:
    """`[_from, _to]` pairs → a record batch of two string columns."""
    sources = [row[0] for row in rows]
    targets = [row[1] for row in rows]
    return pa.RecordBatch.from_arrays(
        [pa.array(sources, pa.string()), pa.array(targets, pa.string())], names=["_from", "_to"]
    )


def _arrow_column(values: list, arrow_type: pa.DataType) -> pa.Array:
    try:
        return pa.array(values, type=arrow_type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError, OverflowError):
        return pa.array([_coerced(value, arrow_type) for value in values], type=arrow_type)


def _coerced(value: Any, arrow_type: pa.DataType) -> Any:
    """One value as `arrow_type` accepts it, or None when it does not fit."""
    if value is None:
        return None
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    try:
        return pa.array([value], type=arrow_type)[0].as_py()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError, OverflowError):
        pass
    try:
        return pa.array([value]).cast(arrow_type, safe=False)[0].as_py()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError, OverflowError):
        return None


def json_ready(array: pa.Array) -> pa.Array:
    """An Arrow array whose `to_pylist()` is plain JSON: float32 through its shortest
    decimal (0.1f is sent as 0.1, not 0.10000000149), dictionaries decoded, decimals as
    float64, dates and times as ISO text."""
    kind = array.type
    if pa.types.is_dictionary(kind):
        return json_ready(array.dictionary_decode())
    if pa.types.is_float32(kind) or pa.types.is_float16(kind):
        return pc.cast(pc.cast(array, pa.string()), pa.float64())
    if pa.types.is_decimal(kind):
        return pc.cast(array, pa.float64())
    if pa.types.is_temporal(kind):
        return pc.cast(array, pa.string())
    if pa.types.is_fixed_size_list(kind) or pa.types.is_large_list(kind):
        return json_ready(array.cast(pa.list_(kind.value_type)))
    if pa.types.is_list(kind):
        # a slice shares its parent's values: take this slice's part and rebase the offsets
        offsets = array.offsets
        start, end = offsets[0].as_py(), offsets[-1].as_py()
        values = json_ready(array.values.slice(start, end - start))
        if values.type == kind.value_type:
            return array
        rebased = pc.subtract(offsets, pa.scalar(start, offsets.type))
        return pa.ListArray.from_arrays(rebased, values, mask=array.is_null())
    if pa.types.is_struct(kind):
        children = [json_ready(array.field(i)) for i in range(kind.num_fields)]
        if all(c.type == kind.field(i).type for i, c in enumerate(children)):
            return array
        return pa.StructArray.from_arrays(
            children, names=[kind.field(i).name for i in range(kind.num_fields)], mask=array.is_null()
        )
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        raise StoreError(f"binary values ({kind}) have no JSON form — encode them as text first")
    return array


def table_to_documents(table: pa.Table | pa.RecordBatch) -> list[dict[str, Any]]:
    """Rows → documents; a null top-level attribute means the attribute is absent."""
    columns = {}
    for name, column in zip(table.schema.names, table.columns):
        chunk = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        columns[name] = json_ready(chunk)
    ready = pa.RecordBatch.from_pydict(columns) if columns else None
    if ready is None:
        return [{} for _ in range(table.num_rows)]
    return [{k: v for k, v in row.items() if v is not None} for row in ready.to_pylist()]


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class AqlQuery:
    """An AQL text with the bind parameters it needs (python-arango's `bind_vars`)."""

    text: str
    bind_vars: dict[str, Any]

    def __str__(self) -> str:
        return self.text.strip()


# -- errors -------------------------------------------------------------------------------------
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
        return ArangoError(
            f"user '{settings.username}' was refused at {where} — check {PASSWORD_VARIABLE} or --password-file",
            code, status, described,
        )
    if status == 403:
        return ArangoError(
            f"user '{settings.username}' may not do this in database '{settings.database}': {message}",
            code, status, described, collection,
        )
    return ArangoError(message, code, status, described, collection)


def _condition_bind_vars(conditions: Sequence[Condition]) -> dict[str, Any]:
    bind_vars: dict[str, Any] = {}
    for n, condition in enumerate(conditions):
        if condition.op not in FILTER_OPERATORS:
            raise StoreError(f"filter on '{condition.attribute}': unknown operator '{condition.op}'")
        value = condition.value
        if condition.op == "in" and not isinstance(value, (list, tuple)):
            raise StoreError(f"filter on '{condition.attribute}': 'in' needs a list of values")
        bind_vars[f"attr_{n}"] = condition.attribute
        bind_vars[f"value_{n}"] = list(value) if condition.op == "in" else value
    return bind_vars


def filter_keys_query(collection: str, conditions: Sequence[Condition]) -> "AqlQuery":
    """The keys of `collection` matching `conditions`, every value a bind parameter."""
    bind_vars = {"@collection": collection, **_condition_bind_vars(conditions)}
    return AqlQuery(aql.filter_keys_query([c.op for c in conditions]), bind_vars)


def similarity_query(
    collection: str,
    k: int,
    query_vector: Sequence[float] | None = None,
    conditions: Sequence[Condition] = (),
    excluding_key: str | None = None,
    attribute: str = "embedding",
) -> "AqlQuery":
    """What `graphsvc similar/search --explain-aql` prints: the APPROX_NEAR_COSINE query
    (ArangoDB >= 3.12.4 with a vector index on `attribute`) for the same question."""
    bind_vars: dict[str, Any] = {"@collection": collection, "attribute": attribute, "k": int(k)}
    bind_vars.update(_condition_bind_vars(conditions))
    if excluding_key is not None:
        bind_vars["key"] = excluding_key
        bind_vars["limit"] = int(k) + 1
    if query_vector is not None:
        bind_vars["query_vector"] = [float(x) for x in query_vector]
    text = aql.approx_near_cosine_filtered_query([c.op for c in conditions], excluding_key is not None)
    return AqlQuery(text, bind_vars)


def state_document_key(key: str) -> str:
    """A state key as a document key: readable when it is a valid one, hashed otherwise;
    prefixed so that job state and change markers never collide."""
    if _DOCUMENT_KEY.match(key) and len(key) <= 200:
        return "k:" + key
    return "h:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def marker_document_key(collection: str) -> str:
    return "m:" + collection


# -- the store ---------------------------------------------------------------------------------
class ArangoStore(GraphStore):
    """A graph store in an ArangoDB database, through python-arango."""

    def __init__(
        self,
        url: str,
        create: bool = False,
        password_file: str | os.PathLike | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        import_batch_size: int = IMPORT_BATCH_SIZE,
    ):
        self.url = _redacted(url)
        self.settings = parse_store_url(url, password_file=password_file, environ=environ)
        self.import_batch_size = import_batch_size
        self._state_ready = False
        self._db = None
        self._client = ArangoClient(
            hosts=list(self.settings.hosts),
            verify_override=self.settings.verify if self.settings.tls else None,
            request_timeout=REQUEST_TIMEOUT,
        )
        try:
            self._db = self._connect(create)
        except BaseException:
            self._client.close()
            raise

    def _where(self) -> str:
        return ", ".join(self.settings.hosts)

    def _connect(self, create: bool):
        settings = self.settings
        try:
            with self._errors():
                return self._client.db(settings.database, settings.username, settings.password, verify=True)
        except StoreError as exc:
            if not (create and getattr(exc, "error_code", None) == arango_errno.DATABASE_NOT_FOUND):
                raise
        with self._errors():
            system = self._client.db("_system", settings.username, settings.password, verify=False)
            if not system.has_database(settings.database):
                system.create_database(settings.database)
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
        with self._errors(collection, action="AQL query"), _as_json(collection, "a query parameter"):
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

    # -- collections ---------------------------------------------------------------------------------
    def collections(self) -> list[CollectionInfo]:
        with self._errors(action="listing collections"):
            listing = self._db.collections()
            infos = []
            for entry in sorted(listing, key=lambda e: e["name"]):
                if entry["system"] or entry["name"] == STATE_COLLECTION:
                    continue
                count = self._db.collection(entry["name"]).count()
                infos.append(CollectionInfo(entry["name"], entry["type"], count))
        return infos

    def has_collection(self, name: str) -> bool:
        if name == STATE_COLLECTION or name.startswith("_"):
            return False
        with self._errors(name):
            return bool(self._db.has_collection(name))

    def _kind(self, name: str) -> CollectionKind:
        with self._errors(name):
            properties = self._db.collection(name).properties()
        return "edge" if properties.get("edge") else "document"

    def collection(self, name: str) -> CollectionInfo:
        kind = self._kind(name)
        with self._errors(name):
            count = self._db.collection(name).count()
        return CollectionInfo(name, kind, count)

    def create_collection(self, name: str, kind: CollectionKind = "document") -> CollectionInfo:
        if not _COLLECTION_NAME.match(name):
            raise StoreError(f"invalid collection name '{name}'")
        if kind not in ("document", "edge"):
            raise StoreError(f"invalid collection kind '{kind}' for '{name}'")
        with self._errors(name):
            exists = self._db.has_collection(name)
        if not exists:
            try:
                with self._errors(name, action="creating the collection"):
                    self._db.create_collection(name, edge=kind == "edge")
                return CollectionInfo(name, kind, 0)
            except ArangoError as exc:
                if exc.error_code != arango_errno.DUPLICATE_NAME:  # another process made it meanwhile
                    raise
        existing = self.collection(name)
        if existing.kind != kind:
            raise StoreError(f"collection '{name}' exists as a {existing.kind} collection, not {kind}")
        return existing

    def drop_collection(self, name: str) -> None:
        with self._errors(name, action="dropping the collection"):
            self._db.delete_collection(name, ignore_missing=True)

    # -- named graphs --------------------------------------------------------------------------------
    def create_graph(self, graph: GraphInfo) -> None:
        definitions = [
            {
                "edge_collection": d.collection,
                "from_vertex_collections": list(d.from_collections),
                "to_vertex_collections": list(d.to_collections),
            }
            for d in graph.edge_definitions
        ]
        with self._errors(action=f"creating graph '{graph.name}'"):
            if not self._db.has_graph(graph.name):
                self._db.create_graph(graph.name, edge_definitions=definitions)
                return
            existing = self._db.graph(graph.name)
            current = {d["edge_collection"] for d in existing.edge_definitions()}
            for definition in definitions:
                if definition["edge_collection"] in current:
                    existing.replace_edge_definition(**definition)
                else:
                    existing.create_edge_definition(**definition)
            for stale in sorted(current - {d.collection for d in graph.edge_definitions}):
                existing.delete_edge_definition(stale, purge=False)

    def graphs(self) -> list[GraphInfo]:
        with self._errors(action="listing graphs"):
            listing = self._db.graphs()
        return [
            GraphInfo(
                entry["name"],
                tuple(
                    EdgeDefinition(
                        d["edge_collection"],
                        tuple(d["from_vertex_collections"]),
                        tuple(d["to_vertex_collections"]),
                    )
                    for d in entry["edge_definitions"]
                ),
            )
            for entry in sorted(listing, key=lambda e: e["name"])
        ]

    # -- writes ------------------------------------------------------------------------------------------
    def upsert_documents(self, name: str, documents: Iterable[Mapping[str, Any]]) -> int:
        kind = self._kind(name)
        keyed: dict[str, dict] = {}
        unkeyed: list[dict] = []
        for position, document in enumerate(documents):
            if not isinstance(document, Mapping):
                raise StoreError(f"{name}: document {position} is not an object")
            body = {k: v for k, v in document.items() if v is not None and k not in ("_id", "_rev")}
            key = body.get("_key")
            if key is not None and (not isinstance(key, str) or not _DOCUMENT_KEY.match(key)):
                raise StoreError(f"{name}: document {position} has an invalid _key {key!r}")
            if kind == "edge":
                for end in ("_from", "_to"):
                    value = body.get(end)
                    if not isinstance(value, str) or not re.match(DOCUMENT_ID_PATTERN, value):
                        raise StoreError(f"{name}: edge {key!r} needs {end} as 'Collection/key', got {value!r}")
            if key is None:
                unkeyed.append(body)
            else:
                keyed.pop(key, None)  # a later document with the same key replaces the earlier one
                keyed[key] = body
        prepared = list(keyed.values()) + unkeyed
        written = sum(self._import(name, chunk) for chunk in _chunks(prepared, self.import_batch_size))
        if written:
            self._bump(name)
        return written

    def upsert_table(
        self, name: str, table: pa.Table, state: tuple[str, dict] | None = None, *, checked: bool = False
    ) -> int:
        kind = self._kind(name)
        if not checked:
            table = self._checked_table(name, kind, table)
        written = 0
        for batch in table.to_batches(max_chunksize=self.import_batch_size):
            written += self._import(name, table_to_documents(batch))
        if written:
            self._bump(name)
        if state is not None:
            self.put_state(*state)
        return written

    def _checked_table(self, name: str, kind: CollectionKind, table: pa.Table) -> pa.Table:
        """Keys and edge ends validated before anything is written; `_id`/`_rev`
        dropped; the last row of a repeated key kept."""
        table = table.drop_columns([c for c in ("_id", "_rev") if c in table.column_names])
        if "_key" in table.column_names:
            keys = table.column("_key")
            if pa.types.is_null(keys.type):  # all keys left to the server
                table = table.drop_columns(["_key"])
        if "_key" in table.column_names:
            check_keys(name, table.column("_key"))
        if kind == "edge":
            check_edge_ends(name, table)
        if "_key" in table.column_names:
            table = keep_last_rows(table)
        return table

    def _import(self, name: str, documents: list[dict]) -> int:
        """One import request: all documents or none (`complete=true`)."""
        if not documents:
            return 0
        with self._errors(name, action=f"importing into '{name}'"), _as_json(name, "a document"):
            result = self._db.collection(name).import_bulk(
                documents, on_duplicate="replace", halt_on_error=True, details=True
            )
        if result.get("errors"):
            details = "; ".join(result.get("details", [])[:3])
            raise StoreError(f"ArangoDB rejected {result['errors']} document(s) of '{name}': {details}")
        return int(result.get("created", 0)) + int(result.get("updated", 0))

    def remove_documents(self, name: str, keys: Sequence[str]) -> int:
        self._kind(name)
        removed = 0
        for chunk in _chunks(list(dict.fromkeys(keys)), KEY_BATCH_SIZE):
            removed += len(self._all(aql.REMOVE_DOCUMENTS, {"@collection": name, "keys": list(chunk)}, name))
        if removed:
            self._bump(name)
        return removed

    def update_attributes(self, name: str, table: pa.Table) -> int:
        self._kind(name)
        if "_key" not in table.column_names:
            raise StoreError(f"{name}: write-back table has no _key column")
        attributes = [c for c in table.column_names if c != "_key"]
        bad = [a for a in attributes if a in _SYSTEM_ATTRIBUTES]
        if bad:
            raise StoreError(f"{name}: cannot write system attribute(s) {', '.join(bad)}")
        if table.num_rows == 0 or not attributes:
            return 0
        keys = table.column("_key")
        if keys.null_count:
            raise StoreError(f"{name}: write-back table has rows without a _key")
        keep = last_rows(keys)
        if keep is not None:
            table = table.take(keep)
        all_keys = table.column("_key").to_pylist()
        for chunk in _chunks(all_keys, KEY_BATCH_SIZE):
            self._raise_first_missing(name, list(chunk))
        for batch in table.to_batches(max_chunksize=self.import_batch_size):
            rows = [row for row in table_to_documents(batch) if len(row) > 1]
            if not rows:
                continue
            try:
                self._all(aql.UPDATE_ATTRIBUTES, {"@collection": name, "rows": rows}, name)
            except ArangoError as exc:
                if exc.error_code == arango_errno.DOCUMENT_NOT_FOUND:  # removed since the check
                    self._raise_first_missing(name, [row["_key"] for row in rows])
                raise
        self._bump(name)
        return table.num_rows

    def _raise_first_missing(self, name: str, keys: list[str]) -> None:
        missing = self._all(aql.FIRST_MISSING_KEY, {"@collection": name, "keys": keys}, name)
        if missing:
            raise DocumentNotFound(name, missing[0])

    # -- reads -----------------------------------------------------------------------------------------------
    def pull(
        self,
        name: str,
        attributes: Mapping[str, pa.DataType],
        batch_size: int = 65_536,
    ) -> Iterator[pa.RecordBatch]:
        self._kind(name)
        schema = pa.schema([("_key", pa.string())] + [(a, t) for a, t in attributes.items() if a != "_key"])
        bind_vars = {"@collection": name, "attributes": schema.names}
        rows = self._row_batches(aql.PULL_ATTRIBUTES, bind_vars, name)
        return _rebatched(rows, batch_size, lambda part: rows_to_record_batch(part, schema))

    def pull_edges(self, name: str, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        if self._kind(name) != "edge":
            raise StoreError(f"collection '{name}' is not an edge collection")
        rows = self._row_batches(aql.PULL_EDGES, {"@collection": name}, name)
        return _rebatched(rows, batch_size, edge_rows_to_record_batch)

    def pull_revisions(self, name: str, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        self._kind(name)
        rows = self._row_batches(aql.PULL_REVISIONS, {"@collection": name}, name)

        def to_batch(part):
            return pa.RecordBatch.from_arrays(
                [pa.array([r[0] for r in part], pa.string()), pa.array([r[1] for r in part], pa.string())],
                names=["_key", "_rev"],
            )

        return _rebatched(rows, batch_size, to_batch)

    def get_documents(self, name: str, keys: Sequence[str], *, attributes: Sequence[str] | None = None
                      ) -> list[dict[str, Any] | None]:
        self._kind(name)
        found: dict[str, dict] = {}
        query, bind_vars = aql.GET_DOCUMENTS, {"@collection": name}
        if attributes is not None:
            query = aql.GET_DOCUMENT_ATTRIBUTES
            bind_vars["attributes"] = ["_key", "_id", "_rev", "_from", "_to", *attributes]
        for chunk in _chunks(list(dict.fromkeys(keys)), KEY_BATCH_SIZE):
            for document in self._all(query, {**bind_vars, "keys": list(chunk)}, name):
                found[document["_key"]] = document
        return [found.get(key) for key in keys]

    def select_keys(self, name: str, equals: Mapping[str, Any] | None = None) -> list[str]:
        self._kind(name)
        conditions = list((equals or {}).items())
        bind_vars: dict[str, Any] = {"@collection": name}
        for n, (attribute, value) in enumerate(conditions):
            bind_vars[f"attr_{n}"] = attribute
            bind_vars[f"value_{n}"] = value
        return self._all(aql.select_keys_query(len(conditions)), bind_vars, name)

    def filter_keys(self, name: str, conditions: Sequence[Condition]) -> list[str]:
        self._kind(name)
        query = filter_keys_query(name, conditions)
        return self._all(query.text, query.bind_vars, name)

    def change_marker(self, name: str) -> int:
        self._kind(name)
        if not self._ensure_state_collection(create=False):
            return 0
        markers = self._all(
            aql.GET_CHANGE_MARKER, {"@collection": STATE_COLLECTION, "key": marker_document_key(name)}, STATE_COLLECTION
        )
        return int(markers[0]) if markers and markers[0] is not None else 0

    def _bump(self, name: str) -> int:
        """Move the collection's change marker on; concurrent writers retry."""
        self._ensure_state_collection(create=True)
        bind_vars = {"@collection": STATE_COLLECTION, "key": marker_document_key(name), "name": name}
        for attempt in range(8):
            try:
                return int(self._all(aql.BUMP_CHANGE_MARKER, bind_vars, STATE_COLLECTION)[0])
            except ArangoError as exc:
                racing = exc.error_code in (arango_errno.CONFLICT, arango_errno.UNIQUE_CONSTRAINT_VIOLATED)
                if not racing or attempt == 7:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    # -- indexes ---------------------------------------------------------------------------------------------
    def create_index(self, name: str, definition: Mapping[str, Any]) -> IndexOutcome:
        self._kind(name)
        request = index_request(name, definition)
        if isinstance(request, IndexOutcome):
            return request
        asked, fields = str(definition.get("type", "")), index_fields(definition)
        try:
            with self._errors(name, action="creating an index"):
                created = self._db.collection(name).add_index(request)
        except ArangoError as exc:
            if exc.http_status in (400, 409, 501):  # this server does not take the definition
                return IndexOutcome(name, asked, fields, "skipped", f"ArangoDB refused it: {exc}")
            raise
        return IndexOutcome(name, asked, fields, "created" if created.get("isNewlyCreated", True) else "exists")

    # -- vector search (ArangoDB >= 3.12.4; not part of the port) ------------------------------------------------
    def server_version(self) -> str:
        with self._errors(action="asking the server version"):
            return str(self._db.version())

    def supports_vector_index(self) -> bool:
        return supports_vector_index(self.server_version())

    def create_vector_index(
        self,
        collection: str,
        *,
        dimension: int,
        attribute: str = "embedding",
        metric: str = "cosine",
        n_lists: int | None = None,
    ) -> IndexOutcome:
        """A vector index on `attribute`, so that AQL's APPROX_NEAR_COSINE works in the
        database. Needs ArangoDB 3.12.4 or later (started with --experimental-vector-index
        in 3.12.4, --vector-index later) and the vectors written first: the server trains
        the index on them. `n_lists` defaults to 15·√N."""
        version = self.server_version()
        if not supports_vector_index(version):
            raise StoreError(
                f"ArangoDB {version} at {self._where()} has no vector indexes: APPROX_NEAR_COSINE needs "
                f"{'.'.join(map(str, VECTOR_INDEX_MIN_VERSION))} or later — upgrade the server, "
                "or answer similarity queries with graphsvc's own index"
            )
        if metric not in ("cosine", "l2", "innerProduct"):
            raise StoreError(f"unknown vector index metric '{metric}' (cosine, l2 or innerProduct)")
        if dimension < 1:
            raise StoreError(f"vector index dimension must be positive, got {dimension}")
        count = self.collection(collection).count
        if count == 0:
            raise StoreError(
                f"'{collection}' is empty: write the {attribute} vectors first, "
                "ArangoDB trains the vector index on them"
            )
        body = {
            "type": "vector",
            "name": f"vector_{attribute}",
            "fields": [attribute],
            "params": {"metric": metric, "dimension": dimension, "nLists": n_lists or default_n_lists(count)},
        }
        try:
            with self._errors(collection, action="creating a vector index"):
                created = self._db.collection(collection).add_index(body)
        except ArangoError as exc:
            raise StoreError(
                f"{exc} — is the server started with --experimental-vector-index (3.12.4) / --vector-index, "
                f"and does every '{attribute}' hold {dimension} numbers?"
            ) from exc
        status = "created" if created.get("isNewlyCreated", True) else "exists"
        return IndexOutcome(collection, "vector", (attribute,), status)

    # -- checks ---------------------------------------------------------------------------------------------------
    def dangling_edges(self, name: str, examples: int = 3) -> DanglingEdges:
        if self._kind(name) != "edge":
            raise StoreError(f"collection '{name}' is not an edge collection")
        with self._errors(action="listing collections"):
            existing = [entry["name"] for entry in self._db.collections()]
        bind_vars = {"@collection": name, "existing": existing}
        count = int(self._all(aql.COUNT_DANGLING_EDGES, bind_vars, name)[0])
        found: list[dict] = []
        if count and examples > 0:
            found = self._all(aql.DANGLING_EDGE_EXAMPLES, {**bind_vars, "examples": int(examples)}, name)
        return DanglingEdges(name, count, tuple(found))

    # -- job state --------------------------------------------------------------------------------------------------
    def _ensure_state_collection(self, create: bool) -> bool:
        if self._state_ready:
            return True
        with self._errors(STATE_COLLECTION):
            exists = self._db.has_collection(STATE_COLLECTION)
        if not exists:
            if not create:
                return False
            try:
                with self._errors(STATE_COLLECTION, action="creating the state collection"):
                    self._db.create_collection(STATE_COLLECTION)
            except ArangoError as exc:
                if exc.error_code != arango_errno.DUPLICATE_NAME:
                    raise
        self._state_ready = True
        return True

    def get_state(self, key: str) -> dict | None:
        if not self._ensure_state_collection(create=False):
            return None
        bind_vars = {"@collection": STATE_COLLECTION, "key": state_document_key(key)}
        values = self._all(aql.GET_STATE, bind_vars, STATE_COLLECTION)
        return values[0] if values else None

    def put_state(self, key: str, value: dict) -> None:
        self._ensure_state_collection(create=True)
        bind_vars = {"@collection": STATE_COLLECTION, "key": state_document_key(key), "name": key, "value": value}
        self._all(aql.PUT_STATE, bind_vars, STATE_COLLECTION)

    def delete_state(self, key: str) -> None:
        if self._ensure_state_collection(create=False):
            bind_vars = {"@collection": STATE_COLLECTION, "key": state_document_key(key)}
            self._all(aql.DELETE_STATE, bind_vars, STATE_COLLECTION)

    def close(self) -> None:
        client, self._client = getattr(self, "_client", None), None
        if client is not None:
            client.close()
        self._db = None


@contextmanager
def _as_json(collection: str, what: str):
    """python-arango serialises with json.dumps: a value it cannot write (a numpy
    scalar, bytes) is the caller's data problem, named as such."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        if "JSON" not in str(exc) and "serializable" not in str(exc):
            raise
        raise StoreError(f"{collection}: {what} cannot be sent as JSON: {exc}") from exc


def _rebatched(row_batches: Iterator[list], batch_size: int, convert) -> Iterator[pa.RecordBatch]:
    """Server batches of rows → record batches of exactly `batch_size` rows (the last
    one shorter)."""
    pending: list = []
    for rows in row_batches:
        pending.extend(rows)
        while len(pending) >= batch_size:
            yield convert(pending[:batch_size])
            del pending[:batch_size]
    if pending:
        yield convert(pending)
