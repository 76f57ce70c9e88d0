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
