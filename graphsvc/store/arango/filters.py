"""Structured filters (`Condition`s) as AQL with every attribute name and value a bind
parameter: the keys query the store runs, and the APPROX_NEAR_COSINE query that
`graphsvc similar/search --explain-aql` prints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from graphsvc.errors import StoreError
from graphsvc.store.arango import aql
from graphsvc.store.base import FILTER_OPERATORS, Condition


@dataclass(frozen=True)
class AqlQuery:
    """An AQL text with the bind parameters it needs (python-arango's `bind_vars`)."""

    text: str
    bind_vars: dict[str, Any]

    def __str__(self) -> str:
        return self.text.strip()


def _condition_bind_vars(conditions: Sequence[Condition]) -> dict[str, Any]:
    bind_vars: dict[str, Any] = {}
    for n, condition in enumerate(conditions):
        if condition.op not in FILTER_OPERATORS:
            raise StoreError(f"filter on '{condition.attribute}': unknown operator '{condition.op}'")
        value = condition.value
        if condition.op == "in" and not isinstance(value, (list, tuple)):
            raise StoreError(f"filter on '{condition.attribute}': 'in' needs a list of values")
        bind_vars[f"attr_{n}"] = condition.attribute
        bind_vars[f"value_{n}"] = list(value) if condition.op == "in" else value
    return bind_vars


def filter_keys_query(collection: str, conditions: Sequence[Condition]) -> AqlQuery:
    """The keys of `collection` matching `conditions`, every value a bind parameter."""
    bind_vars = {"@collection": collection, **_condition_bind_vars(conditions)}
    return AqlQuery(aql.filter_keys_query([c.op for c in conditions]), bind_vars)


def similarity_query(
    collection: str,
    k: int,
    query_vector: Sequence[float] | None = None,
    conditions: Sequence[Condition] = (),
    excluding_key: str | None = None,
    attribute: str = "embedding",
    n_probe: int | None = None,
    server_version: str | None = None,
) -> AqlQuery:
    """The APPROX_NEAR_COSINE query (ArangoDB >= 3.12.4 with a vector index on
    `attribute`) for the question graphsvc answers from its own index; what
    `graphsvc similar/search --explain-aql` prints. `n_probe`: cells searched (the
    function's `nProbe` option; default: the index's `defaultNProbe`). With conditions it
    needs 3.12.6 or later: given a `server_version` below that, it is refused here rather
    than by the server (error 1554)."""
    if conditions and server_version is not None:
        from graphsvc.store.arango.vector_index import FILTERED_SEARCH_MIN_VERSION, parse_version, version_text

        if parse_version(server_version) < FILTERED_SEARCH_MIN_VERSION:
            raise StoreError(
                f"ArangoDB {server_version} cannot filter inside a vector search on '{collection}' (error 1554 there): "
                f"filtered APPROX_NEAR_COSINE needs {version_text(FILTERED_SEARCH_MIN_VERSION)} or later — "
                "upgrade the server, or ask without --filter"
            )
    if n_probe is not None and int(n_probe) < 1:
        raise StoreError(f"nProbe must be at least 1, got {n_probe}")
    bind_vars: dict[str, Any] = {"@collection": collection, "attribute": attribute, "k": int(k)}
    bind_vars.update(_condition_bind_vars(conditions))
    if excluding_key is not None:
        bind_vars["key"] = excluding_key
        bind_vars["limit"] = int(k) + 1
    if query_vector is not None:
        bind_vars["query_vector"] = [float(x) for x in query_vector]
    if n_probe is not None:
        bind_vars["n_probe"] = int(n_probe)
    text = aql.approx_near_cosine_filtered_query([c.op for c in conditions], excluding_key is not None,
                                                 n_probe=n_probe is not None)
    return AqlQuery(text, bind_vars)
