"""ArangoDB without a server: a python-arango HTTP client that records every request the
real `ArangoStore` sends and answers from routes a test sets, with bodies shaped as
ArangoDB 3.12's HTTP API documents them (https://docs.arangodb.com/3.12/develop/http-api/).

    server = ArangoStub(version="3.12.6")
    server.on("post", "/_api/cursor", cursor_response([{"_key": "a"}]))
    store = server.store()
    ... drive the store ...
    assert [r.endpoint for r in server.requests] == [...]

Routes are matched newest first on (method, endpoint), where `endpoint` is the path
without its `/_db/<name>` prefix; a route's answer is a (status, body) pair, a body (200),
or a function of the `Recorded` request returning either (or raising, as the transport would:
`raises(requests.exceptions.ReadTimeout(...))`). A request no route answers is recorded in
`unanswered` and fails the test: the harness never guesses an answer.

Every request is checked, as it is recorded, against the JSON schema (tests/store/arango/schemas/,
written from the ArangoDB 3.12 manual's HTTP API pages) of its (method, endpoint): query
parameters and body. A violation, or a request to an endpoint without a schema, fails the
request with an AssertionError naming both, and is kept in `violations`, which
tests/store/arango/conftest.py checks after every test (so a store that swallows the error
still fails the test).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, ClassVar, MutableMapping
from urllib.parse import parse_qsl, urlsplit

from arango.http import HTTPClient
from arango.response import Response
from jsonschema import Draft202012Validator
from requests import Session

from graphsvc.store.arango.store import ArangoStore

DATABASE = "graphsvc"
URL = f"arangodb://root@localhost:8529/{DATABASE}"


@dataclass
class Recorded:
    method: str  # lower case, as python-arango sends it
    path: str  # the whole path, /_db/<name>/... included
    database: str | None  # the <name> of /_db/<name>, None for a path without one
    endpoint: str  # the path without /_db/<name>
    params: dict[str, str]
    body: Any  # parsed JSON; a list of parsed lines for JSON Lines; the raw text otherwise
    headers: dict[str, str] = field(repr=False, default_factory=dict)


Answer = Any  # a body, or (status, body)


def error_body(status: int, error_num: int, message: str) -> tuple[int, dict]:
    """An error as every ArangoDB endpoint answers one."""
    return status, {"error": True, "code": status, "errorNum": error_num, "errorMessage": message}


def cursor_response(result: list, *, has_more: bool = False, cursor_id: str | None = None,
                    status: int = 201) -> tuple[int, dict]:
    """POST /_api/cursor (201) and POST /_api/cursor/<id> (200) answers: `result`, and
    `id` while `hasMore` (https://docs.arangodb.com/3.12/develop/http-api/queries/aql-queries/)."""
    body: dict[str, Any] = {"result": result, "hasMore": has_more, "cached": False,
                            "extra": {"warnings": [], "stats": {"writesExecuted": 0, "writesIgnored": 0,
                                                                "scannedFull": 0, "scannedIndex": 0,
                                                                "filtered": 0, "executionTime": 0.001}},
                            "error": False, "code": status}
    if has_more:
        body["id"] = cursor_id or "1"
    return status, body


def raises(exc: BaseException) -> Callable[[Recorded], Answer]:
    """A route answer that fails in the transport, as requests does: a timeout
    (`requests.exceptions.ReadTimeout`), a refused connection (`ConnectionError`)."""
    def respond(_request: Recorded) -> Answer:
        raise exc
    return respond


# -- the published API, one schema per (method, endpoint) ------------------------------------------
SCHEMAS = Path(__file__).parent / "schemas"
_NAME = r"[^/]+"
_INDEX_TYPES = {"persistent": "index-create-persistent", "ttl": "index-create-ttl", "geo": "index-create-geo",
                "fulltext": "index-create-fulltext", "inverted": "index-create-inverted",
                "mdi": "index-create-mdi", "mdi-prefixed": "index-create-mdi", "vector": "index-create-vector"}
# (method, endpoint regex, schema name); POST /_api/index picks its schema by the body's `type`
ENDPOINTS: list[tuple[str, str, str | Callable[["Recorded"], str | None]]] = [
    ("get", "/_api/version", "version"),
    ("get", "/_api/database", "database-list"),
    ("post", "/_api/database", "database-create"),
    ("get", "/_api/database/current", "database-current"),
    ("get", "/_api/collection", "collection-list"),
    ("post", "/_api/collection", "collection-create"),
    ("get", f"/_api/collection/{_NAME}", "collection-get"),
    ("delete", f"/_api/collection/{_NAME}", "collection-drop"),
    ("get", f"/_api/collection/{_NAME}/properties", "collection-properties"),
    ("get", f"/_api/collection/{_NAME}/count", "collection-count"),
    ("get", "/_api/gharial", "gharial-list"),
    ("post", "/_api/gharial", "gharial-create"),
    ("get", f"/_api/gharial/{_NAME}", "gharial-get"),
    ("delete", f"/_api/gharial/{_NAME}", "gharial-delete"),
    ("get", f"/_api/gharial/{_NAME}/edge", "gharial-edge-list"),
    ("post", f"/_api/gharial/{_NAME}/edge", "gharial-edge-create"),
    ("put", f"/_api/gharial/{_NAME}/edge/{_NAME}", "gharial-edge-replace"),
    ("delete", f"/_api/gharial/{_NAME}/edge/{_NAME}", "gharial-edge-delete"),
    ("get", f"/_api/gharial/{_NAME}/vertex", "gharial-vertex-list"),
    ("post", f"/_api/gharial/{_NAME}/vertex", "gharial-vertex-create"),
    ("post", "/_api/import", "import"),
    ("get", "/_api/index", "index-list"),
    ("get", f"/_api/index/{_NAME}/{_NAME}", "index-get"),
    ("delete", f"/_api/index/{_NAME}/{_NAME}", "index-delete"),
    ("post", "/_api/index",
     lambda r: _INDEX_TYPES.get(r.body.get("type")) if isinstance(r.body, dict) else None),
    ("post", "/_api/cursor", "cursor-create"),
    ("post", f"/_api/cursor/{_NAME}", "cursor-next"),
    ("delete", f"/_api/cursor/{_NAME}", "cursor-delete"),
    ("post", f"/_api/document/{_NAME}", "documents-create"),
    ("patch", f"/_api/document/{_NAME}", "documents-update"),
    ("put", f"/_api/document/{_NAME}", "documents-replace"),
    ("delete", f"/_api/document/{_NAME}", "documents-remove"),
]
_SYSTEM_ONLY = {"database-list", "database-create"}  # the manual: only in _system


@lru_cache(maxsize=None)
def schema(name: str) -> Draft202012Validator:
    document = json.loads((SCHEMAS / f"{name}.json").read_text())
    Draft202012Validator.check_schema(document)
    return Draft202012Validator(document)


def _as_documented(request: Recorded) -> dict:
    """What is validated: the query parameters and the body, less two things python-arango
    8.x adds that the manual does not document and the server does not read:
    - its copy of every cursor option at the top level of the body (arango/aql.py `execute`
      does `data.update(options)`; the manual has them only under `options`); a top-level
      value that differs from its `options` twin is left in, and fails;
    - `purge: false` in the body of an edge definition replacement (arango/graph.py
      `replace_edge_definition`; the manual's switch is the `dropCollections` query
      parameter, default false); `purge: true` would be silently ignored, so it fails."""
    body = request.body
    if request.method == "post" and request.endpoint == "/_api/cursor" and isinstance(body, dict):
        options = body.get("options") or {}
        body = {k: v for k, v in body.items() if not (k in options and options[k] == v and k != "options")}
    if (request.method == "put" and re.fullmatch(r"/_api/gharial/[^/]+/edge/[^/]+", request.endpoint)
            and isinstance(body, dict) and body.get("purge") is False):
        body = {k: v for k, v in body.items() if k != "purge"}
    return {"params": request.params, "body": body}


def schema_name(request: Recorded) -> str | None:
    """The schema (tests/store/arango/schemas/<name>.json) of the request's endpoint, if any."""
    for method, pattern, name in ENDPOINTS:
        if method == request.method and re.fullmatch(pattern, request.endpoint):
            return name(request) if callable(name) else name
    return None


def violations_of(request: Recorded) -> list[str]:
    """How `request` departs from ArangoDB's documented API: empty when it conforms."""
    where = f"{request.method.upper()} {request.endpoint}"
    for method, pattern, name in ENDPOINTS:
        if method == request.method and re.fullmatch(pattern, request.endpoint):
            chosen = name(request) if callable(name) else name
            if chosen is None:
                return [f"{where}: no schema for this request (body {str(request.body)[:120]})"]
            if chosen in _SYSTEM_ONLY and request.database not in (None, "_system"):
                return [f"{where} ({chosen}): only the _system database serves it, sent to '{request.database}'"]
            found = sorted(schema(chosen).iter_errors(_as_documented(request)), key=lambda e: list(e.path))
            return [f"{where} ({chosen}.json) at {'/'.join(map(str, e.path)) or '(top)'}: {e.message}"
                    for e in found]
    return [f"{where}: no schema in tests/store/arango/schemas for this endpoint"]


def _parse(data: Any) -> Any:
    if data is None:
        return None
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    if not isinstance(text, str):
        return text  # e.g. a multipart encoder: kept as it is
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        try:  # JSON Lines (the import API's type=documents)
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError:
            return text


class ArangoStub(HTTPClient):
    # every stub made during the session, and the AQL texts they were sent: conftest.py
    # checks violations after each test and that every text of store.arango.aql was sent
    instances: ClassVar[list["ArangoStub"]] = []
    aql_seen: ClassVar[set[str]] = set()
    tests_per_schema: ClassVar[Counter] = Counter()  # endpoint schema → tests that sent it

    def __init__(self, version: str = "3.12.6", database: str = DATABASE):
        self.version, self.database = version, database
        self.requests: list[Recorded] = []
        self.unanswered: list[Recorded] = []
        self.violations: list[str] = []
        ArangoStub.instances.append(self)
        self._routes: list[tuple[str, re.Pattern, Callable[[Recorded], Answer]]] = []
        # what opening a database sends: python-arango's verify (GET /_api/collection) and the version
        self.on("get", "/_api/collection", {"error": False, "code": 200, "result": []})
        self.on("get", "/_api/version", lambda r: {"server": "arango", "version": self.version, "license": "community"})

    # -- set-up -------------------------------------------------------------------------------
    def on(self, method: str, endpoint: str, answer: Answer | Callable[[Recorded], Answer]) -> None:
        """Answer `method` requests whose endpoint fully matches the regex `endpoint`."""
        respond = answer if callable(answer) else (lambda _request: answer)
        self._routes.append((method.lower(), re.compile(endpoint), respond))

    def store(self, url: str = URL, **kwargs) -> ArangoStore:
        """The real ArangoStore, talking to this stub (password from the environment given)."""
        kwargs.setdefault("environ", {"ARANGO_PASSWORD": "secret"})
        return ArangoStore(url, http_client=self, **kwargs)

    # -- what was sent ------------------------------------------------------------------------
    def sent(self, method: str | None = None, endpoint: str | None = None) -> list[Recorded]:
        """The recorded requests, optionally only those matching `method` / the regex `endpoint`."""
        return [r for r in self.requests
                if (method is None or r.method == method.lower())
                and (endpoint is None or re.fullmatch(endpoint, r.endpoint))]

    def queries(self) -> list[str]:
        """The AQL texts of every cursor request, in order."""
        return [r.body["query"] for r in self.sent("post", "/_api/cursor")]

    # -- python-arango's transport ----------------------------------------------------------------
    def create_session(self, host: str) -> Session:
        return Session()  # never used to send: send_request answers itself

    def send_request(self, session: Session, method: str, url: str, headers: MutableMapping[str, str] | None = None,
                     params: MutableMapping[str, str] | None = None, data: Any = None,
                     auth: tuple[str, str] | None = None) -> Response:
        parts = urlsplit(url)
        match = re.match(r"/_db/([^/]+)(/.*)?$", parts.path)
        database, endpoint = (match.group(1), match.group(2) or "/") if match else (None, parts.path)
        query = dict(parse_qsl(parts.query))
        query.update({k: str(v) for k, v in (params or {}).items()})
        request = Recorded(method.lower(), parts.path, database, endpoint, query, _parse(data), dict(headers or {}))
        self.requests.append(request)
        problems = violations_of(request)
        if problems:
            self.violations.extend(problems)
            raise AssertionError("request departs from ArangoDB's HTTP API: " + "; ".join(problems))
        if request.endpoint == "/_api/cursor" and isinstance(request.body, dict):
            ArangoStub.aql_seen.add(request.body["query"])
        for route_method, pattern, respond in reversed(self._routes):
            if route_method == request.method and pattern.fullmatch(endpoint):
                answer = respond(request)
                status, body = answer if isinstance(answer, tuple) else (200, answer)
                return Response(method=request.method, url=url, headers={"content-type": "application/json"},
                                status_code=status, status_text="", raw_body=json.dumps(body))
        self.unanswered.append(request)
        raise AssertionError(f"no route answers {request.method.upper()} {request.path} "
                             f"params={request.params} body={str(request.body)[:300]}")
