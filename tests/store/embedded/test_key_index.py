"""Key lookups in the embedded store go through its `_key` index."""

import duckdb
import pyarrow as pa

from graphsvc.store.embedded import EmbeddedStore


def _plan(store: EmbeddedStore, table: str, keys: list[str]) -> str:
    return store._db.sql(f"EXPLAIN ANALYZE SELECT * FROM {table} WHERE _key = ANY($keys)",
                         params={"keys": keys}).fetchall()[0][1]


def test_lookups_probe_the_key_index_of_both_tables_after_a_reopen(path):
    with EmbeddedStore(path, create=False, read_only=True) as store:
        for table in ("docs_products", "attrs_products"):
            plan = _plan(store, table, ["P00007", "P02999"])
            assert "Index Scan" in plan and "Sequential Scan" not in plan
        indexes = store._run("SELECT index_name FROM duckdb_indexes() ORDER BY 1")
        assert indexes == [("attrs_products__key",), ("docs_products__key",)]


def test_lookups_merge_written_attributes_and_give_none_for_missing_keys(path, odd_keys):
    with EmbeddedStore(path, create=False, read_only=True) as store:
        p7, odd, missing = store.get_documents("products", ["P00007", "a'b", "P99999"])
        assert (p7["title"], p7["rank"], odd["title"], odd["rank"], missing) == ("T7", 7, "T3000", 1, None)
        found = store.get_documents("products", odd_keys)
        assert [d["_key"] for d in found] == odd_keys


def test_lookups_of_some_attributes_keep_only_those(path):
    with EmbeddedStore(path) as store:
        store.upsert_documents("products", [{"_key": "P00008", "title": "eight", "size": "large"}])
        store.upsert_documents("products", [{"_key": "P00009", "title": "nine", "size": 3}])  # size: overflow JSON
        p7, p8, p9 = store.get_documents("products", ["P00007", "P00008", "P00009"], attributes=["rank", "size"])
    assert {k: v for k, v in p7.items() if not k.startswith("_")} == {"rank": 7}
    assert {k: v for k, v in p8.items() if not k.startswith("_")} == {"size": "large"}
    assert {k: v for k, v in p9.items() if not k.startswith("_")} == {"size": 3}


def test_lookups_see_updates_and_re_restores(path):
    with EmbeddedStore(path) as store:
        store.update_attributes("products", pa.table({"_key": [f"P{i:05d}" for i in range(3000)],
                                                      "rank": list(range(3000))}))  # attrs rebuilt
        store.upsert_table("products", pa.table({"_key": ["P00007", "new"], "title": ["seven", "N"]}))
        store.update_attributes("products", pa.table({"_key": ["P00009"], "rank": [1.5]}))  # widened: index rebuilt
    with EmbeddedStore(path, create=False, read_only=True) as store:
        p7, p8, p9, new = store.get_documents("products", ["P00007", "P00008", "P00009", "new"])
        assert (p7["title"], "rank" not in p7, p8["rank"], p9["rank"], new["title"]) == ("seven", True, 8, 1.5, "N")
        assert "Index Scan" in _plan(store, "attrs_products", ["P00009"])


def test_a_store_written_before_the_key_index_gets_it_when_opened_to_write(path):
    db = duckdb.connect(str(path))
    db.execute('DROP INDEX "docs_products__key"')
    db.close()
    with EmbeddedStore(path) as store:
        assert "Index Scan" in _plan(store, "docs_products", ["P00001"])
