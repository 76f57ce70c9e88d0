"""The ArangoDB backend's pure parts, without a server: URL and password handling, the
AQL texts, index definitions, versions, Arrow conversion and error translation."""

import pyarrow as pa
import pytest
from arango.exceptions import AQLQueryExecuteError, ServerConnectionError
from arango.request import Request
from arango.response import Response

from graphsvc.errors import ArangoError, CollectionNotFound, ConfigError, DocumentNotFound, StoreError
from graphsvc.store import aql, is_server_url, open_store
from graphsvc.store.arangodb import (
    default_n_lists,
    edge_rows_to_record_batch,
    index_request,
    last_rows,
    marker_document_key,
    parse_store_url,
    parse_version,
    rows_to_record_batch,
    similarity_query,
    state_document_key,
    supports_vector_index,
    table_to_documents,
    translate_error,
)
from graphsvc.store.base import IndexOutcome

NO_ENV: dict[str, str] = {}


# -- store URLs and passwords ------------------------------------------------------------------
def test_arangodb_url_gives_http_host_database_and_user():
    settings = parse_store_url("arangodb://alice@db.example:8530/shop", environ=NO_ENV)
    assert settings.hosts == ("http://db.example:8530",)
    assert settings.database == "shop"
    assert settings.username == "alice"
    assert settings.password == ""
    assert not settings.tls


def test_url_defaults_are_root_port_8529_and_system_database():
    settings = parse_store_url("arangodb://localhost", environ=NO_ENV)
    assert settings.hosts == ("http://localhost:8529",)
    assert (settings.username, settings.database) == ("root", "_system")


def test_several_coordinators_in_one_url():
    settings = parse_store_url("arangodb://u@h1:8529,h2,[::1]:9000/db", environ=NO_ENV)
    assert settings.hosts == ("http://h1:8529", "http://h2:8529", "http://[::1]:9000")


def test_arangodbs_uses_https_and_verifies_certificates_by_default():
    settings = parse_store_url("arangodbs://u@db.example/shop", environ=NO_ENV)
    assert settings.hosts == ("https://db.example:8529",)
    assert settings.tls and settings.verify is True


def test_certificate_verification_is_off_only_when_asked_for(tmp_path):
    assert parse_store_url("arangodbs://u@h/db?verify=false", environ=NO_ENV).verify is False
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert parse_store_url("arangodbs://u@h/db", environ={"GRAPHSVC_ARANGO_CA_FILE": str(ca)}).verify == str(ca)
    with pytest.raises(ConfigError, match="no such file"):
        parse_store_url("arangodbs://u@h/db", environ={"GRAPHSVC_ARANGO_CA_FILE": str(tmp_path / "absent.pem")})
    with pytest.raises(ConfigError, match="arangodbs"):
        parse_store_url("arangodb://u@h/db?verify=false", environ=NO_ENV)
    with pytest.raises(ConfigError, match="verify=true or verify=false"):
        parse_store_url("arangodbs://u@h/db?verify=maybe", environ=NO_ENV)


def test_password_in_url_is_refused_without_echoing_it():
    with pytest.raises(ConfigError, match="ARANGO_PASSWORD or pass --password-file") as raised:
        parse_store_url("arangodb://root:s3cret@localhost:8529/db", environ=NO_ENV)
    assert "s3cret" not in str(raised.value)


def test_open_store_refuses_a_password_in_the_url_before_connecting():
    with pytest.raises(ConfigError, match="contains a password") as raised:
        open_store("arangodbs://root:s3cret@localhost:8529/db")
    assert "s3cret" not in str(raised.value)


def test_password_comes_from_arango_password_or_a_password_file(tmp_path):
    assert parse_store_url("arangodb://u@h/db", environ={"ARANGO_PASSWORD": "from-env"}).password == "from-env"
    secret = tmp_path / "password"
    secret.write_text("from file with spaces \n")
    settings = parse_store_url("arangodb://u@h/db", password_file=secret, environ={"ARANGO_PASSWORD": "from-env"})
    assert settings.password == "from file with spaces "
    assert "from file" not in repr(settings)
    with pytest.raises(ConfigError, match="cannot read the password file"):
        parse_store_url("arangodb://u@h/db", password_file=tmp_path / "absent", environ=NO_ENV)


@pytest.mark.parametrize(
    "url, message",
    [
        ("mysql://h/db", "not an ArangoDB URL"),
        ("arangodb://u@/db", "no host"),
        ("arangodb://u@h:99999/db", "bad host"),
        ("arangodb://u@h/db/extra", "more than a database"),
        ("arangodb://u@h/db?timeout=3", "unknown option"),
    ],
)
def test_malformed_urls_are_config_errors(url, message):
    with pytest.raises(ConfigError, match=message):
        parse_store_url(url, environ=NO_ENV)


def test_server_urls_are_told_apart_from_embedded_paths():
    assert is_server_url("arangodb://root@localhost:8529/db")
    assert is_server_url("ARANGODBS://h/db")
    assert not is_server_url("/data/store.duckdb")
    assert not is_server_url("duckdb:///data/store.duckdb")


# -- AQL texts ----------------------------------------------------------------------------------
def test_every_aql_text_takes_values_only_as_bind_parameters():
    assert len(aql.QUERIES) >= 14
    for name, text in aql.QUERIES.items():
        assert aql.unsafe_parts(text) == [], name
        assert "@collection" in aql.bind_parameter_names(text), name


@pytest.mark.parametrize("conditions", [0, 1, 3])
def test_select_keys_query_numbers_its_placeholders(conditions):
    text = aql.select_keys_query(conditions)
    assert aql.unsafe_parts(text) == []
    expected = {"@collection"} | {f"attr_{n}" for n in range(conditions)} | {f"value_{n}" for n in range(conditions)}
    assert aql.bind_parameter_names(text) == expected
    assert text.count("FILTER d[@attr_") == conditions


def test_unsafe_parts_finds_data_spliced_into_a_query():
    assert aql.unsafe_parts('FOR d IN c FILTER d.name == "@name" RETURN d')
    assert aql.unsafe_parts("FOR d IN c FILTER d.name == 'x' || true || '' RETURN d")
    assert aql.unsafe_parts("FOR d IN {collection} RETURN d")
    assert aql.unsafe_parts("FILTER d.x == %s")
    assert aql.unsafe_parts('OPTIONS { overwriteMode: "replace" }') == []


def test_bind_parameter_names_ignore_text_inside_literals():
    assert aql.bind_parameter_names('FOR d IN @@c FILTER d.x == @v RETURN "@not"') == {"@c", "v"}


def test_vector_query_binds_collection_attribute_k_and_vector():
    query = similarity_query("products", 10, [0.5, 1])
    assert "APPROX_NEAR_COSINE(d[@attribute], @query_vector)" in str(query)
    assert query.bind_vars == {"@collection": "products", "attribute": "embedding", "k": 10, "query_vector": [0.5, 1.0]}
    assert aql.bind_parameter_names(query.text) == set(query.bind_vars)


# -- index definitions ---------------------------------------------------------------------------
def test_hash_and_skiplist_become_persistent_without_server_assigned_attributes():
    body = index_request(
        "products",
        {"id": "products/123", "type": "hash", "fields": ["sku"], "unique": True, "sparse": False,
         "selectivityEstimate": 1, "name": "idx_sku"},
    )
    assert body == {"type": "persistent", "fields": ["sku"], "unique": True, "sparse": False, "name": "idx_sku"}
    assert index_request("p", {"type": "skiplist", "fields": ["a"]})["type"] == "persistent"


def test_primary_and_edge_indexes_exist_already():
    primary = index_request("p", {"type": "primary", "fields": ["_key"]})
    assert primary == IndexOutcome("p", "primary", ("_key",), "exists")
    assert index_request("e", {"type": "edge", "fields": ["_from", "_to"]}).status == "exists"


def test_other_index_types_pass_through_and_unknown_ones_are_skipped():
    for kind, extra in [
        ("ttl", {"expireAfter": 3600}),
        ("fulltext", {"minLength": 3}),
        ("geo", {"geoJson": True}),
        ("mdi", {"fieldValueTypes": "double"}),
        ("zkd", {"fieldValueTypes": "double"}),
        ("vector", {"params": {"metric": "cosine", "dimension": 8, "nLists": 2}}),
    ]:
        body = index_request("p", {"type": kind, "fields": ["a"], **extra})
        assert body == {"type": kind, "fields": ["a"], **extra}
    assert index_request("p", {"type": "geo2", "fields": ["lat", "lon"]})["type"] == "geo"
    skipped = index_request("p", {"type": "bogus", "fields": ["a"]})
    assert skipped.status == "skipped" and "bogus" in skipped.reason
    assert index_request("p", {"type": "persistent", "fields": []}).status == "skipped"


def test_inverted_index_fields_are_reported_by_name():
    body = index_request("p", {"type": "inverted", "fields": [{"name": "title", "analyzer": "text_en"}, "genre"]})
    assert body["fields"] == [{"name": "title", "analyzer": "text_en"}, "genre"]
    assert index_request("p", {"type": "bogus", "fields": [{"name": "title"}]}).fields == ("title",)


# -- versions --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "version, supported",
    [("3.11.14", False), ("3.12.3", False), ("3.12.4", True), ("3.12.4-1", True), ("3.12.5-devel", True),
     ("3.13.0", True), ("4.0", True), ("3.9.12", False)],
)
def test_vector_indexes_need_arangodb_3_12_4(version, supported):
    assert supports_vector_index(version) is supported


def test_version_text_that_is_not_a_version_is_a_store_error():
    assert parse_version("3.12.4-rc.1") == (3, 12, 4)
    with pytest.raises(StoreError, match="cannot read the ArangoDB version"):
        parse_version("devel")


def test_default_n_lists_is_15_sqrt_n_but_at_most_n():
    assert default_n_lists(1_000_000) == 15_000
    assert default_n_lists(100) == 100
    assert default_n_lists(10_000) == 1_500
    assert default_n_lists(0) == 1


# -- Arrow conversion --------------------------------------------------------------------------------
def test_cursor_rows_become_a_typed_record_batch_with_nulls_for_missing_values():
    schema = pa.schema(
        [("_key", pa.string()), ("features", pa.list_(pa.float32())), ("category", pa.int64()), ("title", pa.string())]
    )
    rows = [
        {"_key": "a", "features": [1, 2.5], "category": 3, "title": "Dune"},
        {"_key": "b", "category": 4.0},
        {"_key": "c", "features": "not a list", "category": "7", "title": 1984},
    ]
    batch = rows_to_record_batch(rows, schema)
    assert batch.schema == schema
    assert batch.to_pylist() == [
        {"_key": "a", "features": [1.0, 2.5], "category": 3, "title": "Dune"},
        {"_key": "b", "features": None, "category": 4, "title": None},
        {"_key": "c", "features": None, "category": 7, "title": "1984"},
    ]


def test_edge_rows_become_from_and_to_columns():
    batch = edge_rows_to_record_batch([["p/a", "p/b"], ["p/b", "p/c"]])
    assert batch.schema == pa.schema([("_from", pa.string()), ("_to", pa.string())])
    assert batch.column(1).to_pylist() == ["p/b", "p/c"]


def test_table_rows_become_json_documents_without_null_attributes():
    table = pa.table(
        {
            "_key": ["a", "b", "c"],
            "embedding": pa.array([[0.1, 0.2], None, [0.3]], pa.list_(pa.float32())),
            "score": pa.array([0.1, None, 2.0], pa.float32()),
            "genre": pa.array(["x", "y", None]).dictionary_encode(),
            "pair": pa.array([[1, 2], [3, 4], [5, 6]], pa.list_(pa.int64(), 2)),
        }
    )
    assert table_to_documents(table) == [
        {"_key": "a", "embedding": [0.1, 0.2], "score": 0.1, "genre": "x", "pair": [1, 2]},
        {"_key": "b", "genre": "y", "pair": [3, 4]},
        {"_key": "c", "embedding": [0.3], "score": 2.0, "pair": [5, 6]},
    ]
    # a slice (what to_batches gives) converts only its own rows
    assert [d["_key"] for d in table_to_documents(table.slice(1, 2))] == ["b", "c"]
    assert table_to_documents(table.slice(2, 1).to_batches()[0])[0]["embedding"] == [0.3]


def test_repeated_keys_keep_their_last_row_and_keyless_rows_stay():
    assert last_rows(pa.array(["a", "b", "a", None, None, "b"])).tolist() == [2, 3, 4, 5]
    assert last_rows(pa.chunked_array([["a"], ["b"]])) is None


def test_state_and_marker_document_keys_never_collide():
    assert state_document_key("restore.products") == "k:restore.products"
    hashed = state_document_key("restore/products in dump 2")
    assert hashed.startswith("h:") and len(hashed) == 66
    assert state_document_key('x" || true || "') != state_document_key("' OR 1=1 --")
    assert marker_document_key("products") == "m:products"


# -- error translation -------------------------------------------------------------------------------
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
    refused = translate_error(_server_error(ServerConnectionError, 401, 401, "not authorized"), SETTINGS, "")
    assert "ARANGO_PASSWORD or --password-file" in str(refused) and "alice" in str(refused)
    no_database = translate_error(_server_error(ServerConnectionError, 404, 1228, "database not found"), SETTINGS, "")
    assert "database 'shop' does not exist" in str(no_database) and "--create-database" in str(no_database)
    assert no_database.error_code == 1228


# -- structured filters and --explain-aql ----------------------------------------------------------------
def test_filter_queries_bind_every_attribute_name_and_value():
    from graphsvc.store.arangodb import filter_keys_query
    from graphsvc.store.base import FILTER_OPERATORS, Condition

    conditions = [Condition(f"attr {op}", op, [1, 2] if op == "in" else 1) for op in FILTER_OPERATORS]
    query = filter_keys_query("products", conditions)
    assert aql.unsafe_parts(query.text) == []
    assert aql.bind_parameter_names(query.text) == set(query.bind_vars)
    assert query.bind_vars["attr_0"] == "attr eq" and query.bind_vars["value_6"] == [1, 2]
    assert query.text.count("FILTER") == len(FILTER_OPERATORS)
    assert "TYPENAME(d[@attr_2]) == TYPENAME(@value_2) && d[@attr_2] < @value_2" in query.text


def test_unknown_filter_operators_are_refused_before_any_query():
    from graphsvc.store.arangodb import filter_keys_query
    from graphsvc.store.base import Condition

    with pytest.raises(StoreError, match="'price': unknown operator 'like'"):
        filter_keys_query("products", [Condition("price", "like", "%")])


def test_explained_similarity_query_drops_the_document_itself_and_keeps_filters():
    from graphsvc.store.arangodb import similarity_query
    from graphsvc.store.base import Condition

    query = similarity_query("products", 10, [0.5, 1], [Condition("category", "in", ["Books"])], excluding_key="P1")
    assert aql.unsafe_parts(query.text) == []
    assert aql.bind_parameter_names(query.text) == set(query.bind_vars)
    assert query.bind_vars["limit"] == 11 and query.bind_vars["key"] == "P1"
    assert "APPROX_NEAR_COSINE(d[@attribute], @query_vector)" in query.text
    assert "FILTER d[@attr_0] IN @value_0" in query.text and "FILTER hit._key != @key" in query.text
    plain = similarity_query("products", 5)
    assert aql.bind_parameter_names(plain.text) == set(plain.bind_vars) | {"query_vector"}
