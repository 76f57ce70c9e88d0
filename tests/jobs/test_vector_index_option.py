"""`--arangodb-vector-index`: refused up front where the store cannot hold one."""

import pytest

from graphsvc.errors import ConfigError
from graphsvc.store import open_store, require_vector_index
from jobs.embed_movies import EmbedMoviesConfig, embed_movies
from jobs.embed_products import EmbedProductsConfig, embed_products


class _Server:
    """A stand-in for an ArangoStore, for the version check only."""

    url = "arangodb://root@db:8529/shop"

    def __init__(self, version):
        self.version = version

    def server_version(self):
        return self.version

    def supports_vector_index(self):
        return tuple(int(p) for p in self.version.split(".")[:3]) >= (3, 12, 4)

    def create_vector_index(self, *args, **kwargs):  # pragma: no cover - never reached here
        raise AssertionError


def test_embedded_store_is_refused_before_any_work(tmp_path):
    with open_store(str(tmp_path / "s.duckdb"), create=True) as store:
        for job, config in [(embed_products, EmbedProductsConfig(arangodb_vector_index=True)),
                            (embed_movies, EmbedMoviesConfig(arangodb_vector_index=True))]:
            with pytest.raises(ConfigError, match="needs an ArangoDB store"):
                job(store, triton=None, index_dir=tmp_path / "indexes", config=config)
    assert not (tmp_path / "indexes").exists()


def test_old_arangodb_is_named_with_its_version():
    with pytest.raises(ConfigError, match="3.12.4 or later.*runs 3.11.8"):
        require_vector_index(_Server("3.11.8"))
    server = _Server("3.12.4")
    assert require_vector_index(server) is server


def test_publish_drops_before_the_write_back_builds_after_it_and_records_the_index(tmp_path):
    """Issue 13 points 2 and 4: an index of another dimension goes before the write-back
    (its UPDATEs would fail), the new one is built on the written vectors with our own
    index's calibration, and the manifest records it for --explain-aql."""
    import numpy as np
    import pyarrow as pa

    from graphsvc.index.artifacts import load_current
    from graphsvc.index.publish import publish_embeddings
    from graphsvc.runs.timing import PhaseTimer
    from graphsvc.store.arango.vector_index import VectorIndexOutcome
    from graphsvc.store.embedded import EmbeddedStore

    events = []

    class Recording(EmbeddedStore):
        def prepare_vector_index(self, collection, *, dimension, attribute="embedding"):
            events.append(("prepare", collection, dimension))
            return ["dropped 'vector_embedding' (id 68, dimension 128): the new vectors have dimension 8"]

        def update_attributes(self, collection, table):
            events.append(("write_back", collection, table.num_rows))
            return super().update_attributes(collection, table)

        def create_vector_index(self, collection, *, dimension, calibration=None, **kwargs):
            events.append(("create", collection, dimension, dict(calibration)))
            return VectorIndexOutcome(collection, "vector", ("embedding",), "created", "", name="vector_embedding",
                                      n_lists=95, default_n_probe=95, sparse=True, vectors=40,
                                      training_state="ready")

    keys = [f"p{i}" for i in range(40)]
    vectors = np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)
    with Recording(str(tmp_path / "s.duckdb"), create=True) as store:
        store.create_collection("products")
        store.upsert_documents("products", [{"_key": key} for key in keys])
        published = publish_embeddings(store, tmp_path / "indexes", "products", pa.array(keys), vectors,
                                       job="embed-products", model={"name": "m", "version": "1"}, top_k=3,
                                       timer=PhaseTimer(), arangodb_vector_index=True)
    assert events == [("prepare", "products", 8), ("write_back", "products", 40),
                      ("create", "products", 8, {"nlist": None, "nprobe": None})]
    recorded = published.summary()["arangodb_vector_index"]
    assert recorded["status"] == "created" and recorded["defaultNProbe"] == 95 and "dimension 128" in recorded["reason"]
    assert load_current(tmp_path / "indexes", "products").manifest.extra["arangodb_vector_index"] == recorded


def test_movies_without_text_are_refused_up_front_on_a_server_without_sparse_indexes(tmp_path):
    """Issue 13 point 1: on 3.12.4–3.12.5 documents that will get no vector make the
    index unbuildable; embed-movies says so after its pull, naming them, before any
    embedding (no Triton is needed to get there) and before anything is written."""
    from graphsvc.store.embedded import EmbeddedStore

    class OldArango(EmbeddedStore):
        def __init__(self, *args, version, **kwargs):
            super().__init__(*args, **kwargs)
            self.version = version

        def server_version(self):
            return self.version

        def supports_vector_index(self):
            return True

        def supports_sparse_vector_index(self):
            return self.version >= "3.12.6"

        def create_vector_index(self, *args, **kwargs):  # pragma: no cover - never reached here
            raise AssertionError

    path = tmp_path / "s.duckdb"
    with open_store(str(path), create=True) as store:
        store.create_collection("movies")
        store.upsert_documents("movies", [{"_key": "m1", "description": "a haunted house"},
                                          {"_key": "m2", "title": ""}, {"_key": "m3", "description": "  "}])
    with OldArango(path, version="3.12.5") as store:
        with pytest.raises(ConfigError, match=r"2 documents of 'movies' have no 'description' or 'title'.*"
                                              r"e\.g\. m2, m3.*3\.12\.5.*3\.12\.6 or later"):
            embed_movies(store, triton=None, index_dir=tmp_path / "indexes",
                         config=EmbedMoviesConfig(arangodb_vector_index=True))
    assert not (tmp_path / "indexes").exists()
    with OldArango(path, version="3.12.6") as store:  # a sparse index tolerates them: on to Triton
        with pytest.raises(AttributeError, match="wait_ready"):
            embed_movies(store, triton=None, index_dir=tmp_path / "indexes",
                         config=EmbedMoviesConfig(arangodb_vector_index=True))
