"""Server versions that have vector indexes, and the default IVF cell count."""

import pytest

from graphsvc.errors import StoreError
from graphsvc.store.arango.vector_index import default_n_lists, parse_version, supports_vector_index


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
