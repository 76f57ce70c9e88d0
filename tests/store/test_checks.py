"""Checks every backend applies before writing."""

import pyarrow as pa

from graphsvc.store.checks import last_rows


def test_repeated_keys_keep_their_last_row_and_keyless_rows_stay():
    assert last_rows(pa.array(["a", "b", "a", None, None, "b"])).tolist() == [2, 3, 4, 5]
    assert last_rows(pa.chunked_array([["a"], ["b"]])) is None


# -- issue 13, point 9: a trailing newline is not part of a valid name or key ------------------------
import pytest  # noqa: E402

from graphsvc.errors import DumpFormatError, StoreError  # noqa: E402
from graphsvc.store.checks import check_keys, check_new_collection, is_document_id, is_document_key  # noqa: E402
from graphsvc.store.dumps.operations import parse_line  # noqa: E402


@pytest.mark.parametrize("bad", ["a\n", "a\nb", "\na"])
def test_keys_ids_and_collection_names_with_a_newline_are_refused(bad):
    assert is_document_key("a") and not is_document_key(bad)
    assert is_document_id("products/a") and not is_document_id("products/" + bad)
    with pytest.raises(StoreError, match="invalid collection name"):
        check_new_collection("products" + bad, "document")
    with pytest.raises(StoreError, match="invalid _key"):
        check_keys("products", pa.array(["a", bad]))


def test_a_dump_line_whose_key_ends_in_a_newline_is_a_format_error(tmp_path):
    line = b'{"type": 2300, "data": {"_key": "a\\n", "title": "x"}}'
    with pytest.raises(DumpFormatError, match="invalid _key"):
        parse_line(line, tmp_path / "p.data.json", 1, "document")
    edge = b'{"type": 2300, "data": {"_key": "e", "_from": "p/a\\n", "_to": "p/b"}}'
    with pytest.raises(DumpFormatError, match="_from"):
        parse_line(edge, tmp_path / "e.data.json", 1, "edge")


def test_the_embedded_store_refuses_a_key_or_collection_name_with_a_trailing_newline(tmp_path):
    from graphsvc.store.embedded import EmbeddedStore

    with EmbeddedStore(tmp_path / "s.duckdb") as store:
        with pytest.raises(StoreError, match="invalid collection name"):
            store.create_collection("products\n")
        store.create_collection("products")
        with pytest.raises(StoreError, match="_key"):
            store.upsert_documents("products", [{"_key": "a\n"}])
        with pytest.raises(StoreError, match="_key"):
            store.upsert_table("products", pa.table({"_key": ["a\n"]}))
        assert store.collection("products").count == 0
