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
or a function of the `Recorded` request returning either. A request no route answers is
recorded in `unanswered` and fails the test: the harness never guesses an answer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, MutableMapping
from urllib.parse import parse_qsl, urlsplit

from arango.http import HTTPClient
from arango.response import Response
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
    def __init__(self, version: str = "3.12.6", database: str = DATABASE):
        self.version, self.database = version, database
        self.requests: list[Recorded] = []
        self.unanswered: list[Recorded] = []
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
        for route_method, pattern, respond in reversed(self._routes):
            if route_method == request.method and pattern.fullmatch(endpoint):
                answer = respond(request)
                status, body = answer if isinstance(answer, tuple) else (200, answer)
                return Response(method=request.method, url=url, headers={"content-type": "application/json"},
                                status_code=status, status_text="", raw_body=json.dumps(body))
        self.unanswered.append(request)
        raise AssertionError(f"no route answers {request.method.upper()} {request.path} "
                             f"params={request.params} body={str(request.body)[:300]}")
