"""Opening a database, and creating it with --create-database, through the harness."""

import pytest

from graphsvc.errors import ArangoError
from tests.store.arango.harness import ArangoStub, error_body

OK_LISTING = {"error": False, "code": 200, "result": []}


def _server(first_answer, existing):
    """The database `graphsvc` answers `first_answer` until it is created; _system lists
    `existing` (GET /_api/database) and creates databases (POST /_api/database)
    (https://docs.arangodb.com/3.12/develop/http-api/databases/)."""
    server = ArangoStub()
    created = []

    def verify(request):
        if request.database == "graphsvc" and not created and "graphsvc" not in existing:
            return first_answer
        if request.database == "graphsvc" and "graphsvc" in existing:
            return first_answer
        return OK_LISTING

    def create(request):
        created.append(request.body["name"])
        return 201, {"error": False, "code": 201, "result": True}

    server.on("get", "/_api/collection", verify)
    server.on("get", "/_api/database", {"error": False, "code": 200, "result": ["_system", *existing]})
    server.on("post", "/_api/database", create)
    return server


def test_create_database_also_reacts_to_401_error_11_for_a_database_that_does_not_exist():
    """Issue 13, point 5: with authentication on, the server answers 401 / errorNum 11
    for a database that does not exist; --create-database asks _system and creates it."""
    server = _server(error_body(401, 11, "not authorized to execute this request"), existing=[])
    server.store(create=True)
    assert [(r.method, r.path) for r in server.requests] == [
        ("get", "/_db/graphsvc/_api/collection"),
        ("get", "/_db/_system/_api/database"),
        ("post", "/_db/_system/_api/database"),
        ("get", "/_db/graphsvc/_api/collection"),
    ]
    assert server.sent("post", "/_api/database")[0].body["name"] == "graphsvc"


def test_create_database_after_1228_creates_it_too():
    server = _server(error_body(404, 1228, "database not found"), existing=[])
    server.store(create=True)
    assert [r.body["name"] for r in server.sent("post", "/_api/database")] == ["graphsvc"]


def test_a_401_for_a_database_that_exists_is_a_refused_login_and_nothing_is_created():
    server = _server(error_body(401, 11, "not authorized to execute this request"), existing=["graphsvc"])
    with pytest.raises(ArangoError, match="refused") as raised:
        server.store(create=True)
    assert raised.value.http_status == 401 and raised.value.error_code == 11
    assert server.sent("post", "/_api/database") == []


def test_without_create_database_a_401_says_the_database_may_be_missing():
    server = _server(error_body(401, 11, "not authorized to execute this request"), existing=[])
    with pytest.raises(ArangoError) as raised:
        server.store()
    assert "--create-database" in str(raised.value) and "ARANGO_PASSWORD" in str(raised.value)
    assert [r.database for r in server.requests] == ["graphsvc"]
