"""python-arango's server errors translated into StoreErrors a user can act on."""

from arango.exceptions import AQLQueryExecuteError, ServerConnectionError
from arango.request import Request
from arango.response import Response

from graphsvc.errors import ArangoError, CollectionNotFound, DocumentNotFound
from graphsvc.store.arango.errors import translate_error
from graphsvc.store.arango.store_url import parse_store_url

NO_ENV: dict[str, str] = {}


def _server_error(exception_class, status: int, error_num: int, message: str):
    request = Request(method="post", endpoint="/_api/cursor")
    response = Response(method="post", url="http://h:8529/_db/shop/_api/cursor", headers={},
                        status_code=status, status_text="", raw_body="")
    response.body = {"error": True, "errorNum": error_num, "errorMessage": message}
    response.error_code, response.error_message = error_num, message
    return exception_class(response, request)


SETTINGS = parse_store_url("arangodb://alice@h:8529/shop", environ=NO_ENV)


def test_missing_collection_and_document_errors_name_them():
    missing_collection = _server_error(AQLQueryExecuteError, 404, 1203, "collection or view not found: products")
    error = translate_error(missing_collection, SETTINGS, "arangodb://alice@h:8529/shop", "products")
    assert isinstance(error, CollectionNotFound) and error.collection == "products"
    missing_document = _server_error(AQLQueryExecuteError, 404, 1202, "document not found")
    error = translate_error(missing_document, SETTINGS, "", "products", "a")
    assert isinstance(error, DocumentNotFound) and error.key == "a"


def test_other_server_errors_carry_the_error_number_and_the_request():
    conflict = _server_error(AQLQueryExecuteError, 409, 1210, "unique constraint violated")
    error = translate_error(conflict, SETTINGS, "", "products")
    assert isinstance(error, ArangoError)
    assert (error.error_code, error.http_status, error.request) == (1210, 409, "POST /_api/cursor")
    assert "unique constraint violated" in str(error) and "'products'" in str(error)


def test_refused_login_and_missing_database_say_what_to_do():
    # the server's answer to a refused login: HTTP 401 with errorNum 11 (ERROR_FORBIDDEN), not 401
    unauthorized = _server_error(ServerConnectionError, 401, 11, "not authorized to execute this request")
    refused = translate_error(unauthorized, SETTINGS, "")
    assert "ARANGO_PASSWORD or --password-file" in str(refused) and "alice" in str(refused)
    no_database = translate_error(_server_error(ServerConnectionError, 404, 1228, "database not found"), SETTINGS, "")
    assert "database 'shop' does not exist" in str(no_database) and "--create-database" in str(no_database)
    assert no_database.error_code == 1228
