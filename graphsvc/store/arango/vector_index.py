"""Vector indexes in ArangoDB (3.12.4 or later), so that AQL's APPROX_NEAR_COSINE works
in the database: the server version rules, the index's parameters (cells and probes, set
as graphsvc's own index searches), and building it: sparse where the server can, dropped
and trained again after every write-back of the vectors, in the background and polled.
Not part of the port.

Version rules (https://docs.arangodb.com/3.12/indexes-and-search/indexing/working-with-indexes/vector-indexes/,
https://docs.arangodb.com/3.12/release-notes/version-3.12/api-changes-in-3-12/):
- 3.12.4: vector indexes (`--experimental-vector-index`, later `--vector-index`);
- 3.12.6: `sparse` (documents without the vector are left out), the `innerProduct` metric,
  and one FILTER between FOR and SORT applied during the lookup (before: error 1554);
- 3.12.9: `trainingState` / `errorMessage` in the index description; up to 3.12.9 a failed
  training fails the create call but leaves the index behind, "unusable";
- 3.12.10: a failed training no longer fails the create call (201, "unusable").
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import requests
from arango import errno as arango_errno

from graphsvc.errors import ArangoError, StoreError
from graphsvc.store.arango import aql
from graphsvc.store.arango.catalog import ArangoCatalog
from graphsvc.store.base import IndexOutcome

VECTOR_INDEX_MIN_VERSION = (3, 12, 4)
SPARSE_MIN_VERSION = (3, 12, 6)
FILTERED_SEARCH_MIN_VERSION = (3, 12, 6)
INNER_PRODUCT_MIN_VERSION = (3, 12, 6)
#: ERROR_QUERY_VECTOR_INDEX_NOT_READY (3.12.9+): what a create call up to 3.12.9 answers
#: when the training fails (python-arango's errno list predates it)
VECTOR_INDEX_NOT_READY = 1555
#: how long a build may take on the server before the job gives up waiting (not the
#: build: the server goes on), and how often it asks meanwhile
BUILD_TIMEOUT = 3 * 3600.0
POLL_INTERVAL = 10.0
#: share of the cells searched when no calibration of our own is given (our FAISS
#: index's default nprobe is nlist/16)
UNCALIBRATED_SHARE = 1 / 16
EXAMPLES = 5


def parse_version(text: str) -> tuple[int, int, int]:
    """`"3.12.4"`, `"3.12.4-1"`, `"3.12.5-devel"` → (3, 12, 4) / (3, 12, 5)."""
    match = re.match(r"\s*v?(\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        raise StoreError(f"cannot read the ArangoDB version '{text}'")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def version_text(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def supports_vector_index(version: str) -> bool:
    return parse_version(version) >= VECTOR_INDEX_MIN_VERSION


def vector_index_name(attribute: str) -> str:
    return f"vector_{attribute}"


def default_n_lists(vectors: int) -> int:
    """ArangoDB's suggestion for the IVF cell count, 15·√N, never more than N; N counts
    the documents that hold a vector, the only ones a sparse index trains on."""
    return max(1, min(vectors, round(15 * math.sqrt(max(vectors, 1)))))


def scaled_n_probe(n_lists: int, cells: int | None, probes: int | None) -> int:
    """The `nProbe` for an ArangoDB index of `n_lists` cells that searches the same share
    of the vectors as graphsvc's own index, which searches `probes` of its `cells` cells
    (calibrated to recall@k 0.97: `VectorIndex.calibrate_nprobe`, or the kNN pass's
    probes). ArangoDB's 15·√N cells are about 15 times finer than our √N, so its nProbe is
    ceil(probes · n_lists / cells): the same share of the collection compared per query,
    which on finer cells finds at least as many of the true neighbours. Our index is exact
    below 50,000 vectors (`cells` None): then every cell is searched, and ArangoDB answers
    exactly as we do. Without a calibration (`probes` None) 1/16 of the cells."""
    if n_lists < 1:
        raise StoreError(f"nLists must be at least 1, got {n_lists}")
    if cells is None:
        return n_lists
    share = UNCALIBRATED_SHARE if probes is None else probes / max(cells, 1)
    return max(1, min(n_lists, math.ceil(share * n_lists - 1e-9)))


@dataclass(frozen=True)
class VectorCounts:
    """What the collection holds for a vector index on `attribute`."""

    documents: int
    vectors: int  # documents whose attribute is not null
    other_dimension: int  # of those, ones that are not `dimension` numbers

    @property
    def missing(self) -> int:
        return self.documents - self.vectors


@dataclass(frozen=True)
class VectorIndexOutcome(IndexOutcome):
    """What became of the vector index: `status` "created" (also when an older one was
    replaced, named in `reason`), and the parameters it was built with."""

    name: str = ""
    n_lists: int = 0
    default_n_probe: int = 0
    sparse: bool = False
    vectors: int = 0
    training_state: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The job summary's `arangodb_vector_index` (and the manifest's record)."""
        return {"status": self.status, "name": self.name, "nLists": self.n_lists,
                "defaultNProbe": self.default_n_probe, "sparse": self.sparse, "vectors": self.vectors,
                "trainingState": self.training_state, "reason": self.reason}


def _training_state(index: Mapping[str, Any]) -> str | None:
    """The server's `trainingState` (3.12.9+), as the create call answers it or as
    python-arango's index listing renames it."""
    return index.get("training_state", index.get("trainingState"))


def _error_message(index: Mapping[str, Any]) -> str:
    return str(index.get("error_message") or index.get("errorMessage") or "")


def _describe(index: Mapping[str, Any]) -> str:
    params = index.get("params") or {}
    state = _training_state(index)
    return (f"'{index.get('name')}' (id {index.get('id')}, dimension {params.get('dimension')}, "
            f"nLists {params.get('nLists')}{', ' + state if state else ''})")


class ArangoVectorIndex(ArangoCatalog):
    """Vector search on the server (ArangoDB >= 3.12.4)."""

    def server_version(self) -> str:
        with self._errors(action="asking the server version"):
            return str(self._db.version())

    def supports_sparse_vector_index(self) -> bool:
        """Whether documents without a vector may sit beside an index (`sparse`, 3.12.6)."""
        return parse_version(self.server_version()) >= SPARSE_MIN_VERSION

    def supports_vector_index(self) -> bool:
        return supports_vector_index(self.server_version())

    # -- what is there ---------------------------------------------------------------------
    def vector_indexes(self, collection: str, attribute: str = "embedding", *,
                       with_hidden: bool = False) -> list[dict]:
        """The vector indexes on `attribute` (GET /_api/index?collection=…), as python-arango
        describes them (`training_state`, `error_message`, `params`); `with_hidden` adds
        those still being built in the background."""
        with self._errors(collection, action="listing indexes"):
            listing = self._db.collection(collection).indexes(with_hidden=with_hidden)
        return [i for i in listing if i.get("type") == "vector" and list(i.get("fields") or ()) == [attribute]]

    def vector_counts(self, collection: str, attribute: str, dimension: int) -> VectorCounts:
        rows = self._all(aql.VECTOR_COUNTS, {"@collection": collection, "attribute": attribute,
                                             "dimension": int(dimension)}, collection)
        row = rows[0] if rows else {}
        return VectorCounts(int(row.get("documents") or 0), int(row.get("vectors") or 0), int(row.get("other") or 0))

    def _problem_keys(self, collection: str, attribute: str, dimension: int, missing: bool) -> list[str]:
        return self._all(aql.VECTOR_PROBLEM_KEYS, {"@collection": collection, "attribute": attribute,
                                                   "dimension": int(dimension), "missing": missing,
                                                   "examples": EXAMPLES}, collection)

    # -- dropping ------------------------------------------------------------------------------
    def drop_vector_index(self, collection: str, index: Mapping[str, Any]) -> None:
        """DELETE /_api/index/<collection>/<id>; one already gone is fine."""
        with self._errors(collection, action=f"dropping vector index {index.get('name')}"):
            self._db.collection(collection).delete_index(str(index["id"]), ignore_missing=True)

    def prepare_vector_index(self, collection: str, *, dimension: int, attribute: str = "embedding") -> list[str]:
        """Before writing `dimension`-number vectors into `attribute`: drop a vector index
        built for another dimension, which would refuse every write-back UPDATE. Returns
        what was dropped (`create_vector_index` builds the new one after the write-back)."""
        if not self.supports_vector_index():
            return []
        dropped = []
        for index in self.vector_indexes(collection, attribute, with_hidden=True):
            if (index.get("params") or {}).get("dimension") != int(dimension):
                self.drop_vector_index(collection, index)
                dropped.append(f"dropped {_describe(index)}: the new vectors have dimension {dimension}")
        return dropped

    # -- building ------------------------------------------------------------------------------
    def create_vector_index(
        self,
        collection: str,
        *,
        dimension: int,
        attribute: str = "embedding",
        metric: str = "cosine",
        n_lists: int | None = None,
        default_n_probe: int | None = None,
        calibration: Mapping[str, Any] | None = None,
        timeout: float = BUILD_TIMEOUT,
        poll_interval: float = POLL_INTERVAL,
    ) -> VectorIndexOutcome:
        """Build the vector index `vector_<attribute>` on the vectors now in `collection`,
        so that AQL's APPROX_NEAR_COSINE works in the database.

        IVF training is not incremental: an index already there (trained on earlier
        vectors, or left "unusable" by a failed training) is dropped and the index built
        again. Sparse from 3.12.6 (documents without a vector are left out); on 3.12.4–3.12.5
        a document without one is refused here, by key, before any index request.
        `n_lists` defaults to 15·√(documents with a vector); `default_n_probe` to the share
        of cells graphsvc's own index searches (`calibration`: its {"nlist", "nprobe"},
        see `scaled_n_probe`). Built in the background; the job polls until the index is
        trained, up to `timeout` seconds."""
        version = self.server_version()
        parsed = parse_version(version)
        if parsed < VECTOR_INDEX_MIN_VERSION:
            raise StoreError(
                f"ArangoDB {version} at {self._where()} has no vector indexes: APPROX_NEAR_COSINE needs "
                f"{version_text(VECTOR_INDEX_MIN_VERSION)} or later — upgrade the server, "
                "or answer similarity queries with graphsvc's own index"
            )
        if metric not in ("cosine", "l2", "innerProduct"):
            raise StoreError(f"unknown vector index metric '{metric}' (cosine, l2 or innerProduct)")
        if metric == "innerProduct" and parsed < INNER_PRODUCT_MIN_VERSION:
            raise StoreError(f"ArangoDB {version} has no innerProduct vector indexes "
                             f"({version_text(INNER_PRODUCT_MIN_VERSION)} or later) — use cosine")
        if dimension < 1:
            raise StoreError(f"vector index dimension must be positive, got {dimension}")
        name = vector_index_name(attribute)
        sparse = parsed >= SPARSE_MIN_VERSION
        counts = self._check_vectors(collection, attribute, dimension, version, sparse)

        replaced = [self._drop_for_rebuild(collection, index)
                    for index in self.vector_indexes(collection, attribute, with_hidden=True)]
        lists = int(n_lists or default_n_lists(counts.vectors))
        if default_n_probe is None:  # the server's own default is 1 cell of 15·√N
            cells, probed = (calibration.get("nlist"), calibration.get("nprobe")) if calibration else (lists, None)
            default_n_probe = scaled_n_probe(lists, cells, probed)
        probes = max(1, min(int(default_n_probe), lists))
        body: dict[str, Any] = {
            "type": "vector",
            "name": name,
            "fields": [attribute],
            "inBackground": True,  # the collection stays writable while it trains
            "params": {"metric": metric, "dimension": int(dimension), "nLists": lists,
                       "defaultNProbe": probes},
        }
        if sparse:  # an attribute 3.12.4–3.12.5 do not know
            body["sparse"] = True
        created = self._post_vector_index(collection, body, version, timeout, poll_interval)
        state = _training_state(created)
        if state in ("training", "ingesting") or (state is None and created.get("isBuilding")):
            created = self._wait_until_trained(collection, name, created.get("id"), timeout, poll_interval)
            state = _training_state(created)
        if state == "unusable":
            self._drop_unusable(collection, created, version)
        reason = "; ".join(replaced)
        return VectorIndexOutcome(collection, "vector", (attribute,), "created", reason, name=name, n_lists=lists,
                                  default_n_probe=probes, sparse=sparse, vectors=counts.vectors,
                                  training_state=state or "ready")

    def _check_vectors(self, collection: str, attribute: str, dimension: int, version: str,
                       sparse: bool) -> VectorCounts:
        counts = self.vector_counts(collection, attribute, dimension)
        if counts.vectors == 0:
            raise StoreError(
                f"no document of '{collection}' holds '{attribute}': write the vectors first, "
                "ArangoDB trains the vector index on them"
            )
        if counts.other_dimension:
            examples = self._problem_keys(collection, attribute, dimension, missing=False)
            raise StoreError(
                f"{counts.other_dimension} documents of '{collection}' hold an '{attribute}' that is not "
                f"{dimension} numbers (e.g. {', '.join(examples)}); the vector index would refuse them — "
                f"rewrite them (rerun the embed job over the whole collection) or remove '{attribute}' from them"
            )
        if counts.missing and not sparse:
            examples = self._problem_keys(collection, attribute, dimension, missing=True)
            raise StoreError(
                f"{counts.missing} documents of '{collection}' have no '{attribute}' (e.g. {', '.join(examples)}) "
                f"and ArangoDB {version} has no sparse vector indexes "
                f"({version_text(SPARSE_MIN_VERSION)} or later): its index would not build — give them a vector, "
                "remove them, or upgrade the server"
            )
        return counts

    def _drop_for_rebuild(self, collection: str, index: Mapping[str, Any]) -> str:
        if _training_state(index) == "unusable":
            why = f"its training failed ({_error_message(index) or 'no reason given'})"
        else:
            why = "IVF training is not incremental: it was trained on the vectors before this write-back"
        self.drop_vector_index(collection, index)
        return f"replaced {_describe(index)}: {why}"

    def _post_vector_index(self, collection: str, body: dict, version: str, timeout: float,
                           poll_interval: float) -> dict:
        """POST /_api/index?collection=…; a request that times out while the server builds
        is followed by polling, not reported as an unreachable server."""
        name = body["name"]
        try:
            with self._errors(collection, action="creating a vector index"):
                return self._db.collection(collection).add_index(body)
        except ArangoError as exc:
            if exc.error_code == arango_errno.DUPLICATE_IDENTIFIER:  # 1005: the name is taken by another definition
                raise StoreError(
                    f"another index named '{name}' on '{collection}' has a different definition (ArangoDB error 1005, "
                    f"e.g. another job built it meanwhile) — drop it (DELETE /_api/index/{collection}/<id>) and rerun"
                ) from exc
            # up to 3.12.9 a failed training fails the call and leaves an "unusable" index behind
            for leftover in self.vector_indexes(collection, body["fields"][0], with_hidden=True):
                if leftover.get("name") == name:
                    self.drop_vector_index(collection, leftover)
                    raise StoreError(
                        f"ArangoDB {version} could not train vector index '{name}' on '{collection}': {exc} — "
                        "the unusable index was dropped; check that the documents hold the vectors, then rerun"
                    ) from exc
            if exc.http_status in (400, 501):
                raise StoreError(
                    f"{exc} — is the server started with --experimental-vector-index (3.12.4) / --vector-index?"
                ) from exc
            raise
        except StoreError as exc:
            if not isinstance(exc.__cause__, requests.exceptions.Timeout):
                raise
        # the request timed out: the server may well be building it still
        return self._wait_until_trained(collection, name, None, timeout, poll_interval)

    def _indexes(self, collection: str, with_hidden: bool = False) -> list[dict]:
        with self._errors(collection, action="listing indexes"):
            return list(self._db.collection(collection).indexes(with_hidden=with_hidden))

    def _index_state(self, collection: str, name: str, index_id: str | None) -> dict | None:
        """The index by id (GET /_api/index/<collection>/<id>), or by name from the listing,
        which leaves out indexes still built in the background; None when not there."""
        if index_id:
            try:
                with self._errors(collection, action=f"reading vector index {name}"):
                    return self._db.collection(collection).get_index(str(index_id).split("/")[-1])
            except ArangoError as exc:
                if exc.error_code == arango_errno.INDEX_NOT_FOUND:
                    return None
                raise
        return next((i for i in self._indexes(collection) if i.get("name") == name), None)

    def _wait_until_trained(self, collection: str, name: str, index_id: str | None, timeout: float,
                            poll_interval: float) -> dict:
        """Poll until the index is there and trained ("ready"; no trainingState before
        3.12.9) or its training failed ("unusable"). Past `timeout` the server is still
        building: said so, with where to look, rather than "not reachable"."""
        deadline = time.monotonic() + timeout
        while True:
            index = self._index_state(collection, name, index_id)
            if index is not None and _training_state(index) in (None, "ready", "unusable"):
                return index
            if time.monotonic() >= deadline:
                break
            time.sleep(poll_interval)
        if index is None:  # hidden while built in the background
            index = next((i for i in self._indexes(collection, with_hidden=True) if i.get("name") == name), None)
        if index is None:
            raise StoreError(
                f"the server holds no vector index '{name}' on '{collection}' after the request building it "
                "timed out: it gave the build up — check the server's log and rerun"
            )
        raise StoreError(
            f"vector index '{name}' on '{collection}' is still building on the server after {timeout:.0f} s "
            f"({_training_state(index) or 'building'}); the server goes on — check "
            f"GET /_api/index?collection={collection}&withHidden=true later, or rerun to build it again"
        )

    def _drop_unusable(self, collection: str, index: Mapping[str, Any], version: str) -> None:
        self.drop_vector_index(collection, index)
        raise StoreError(
            f"vector index '{index.get('name')}' on '{collection}' could not be trained on ArangoDB {version}: "
            f"{_error_message(index) or 'trainingState unusable'} — "
            "it was dropped, queries would fail on it (error 1555); check the vectors and nLists, then rerun"
        )

    # -- searching --------------------------------------------------------------------------------
    def vector_search(self, collection: str, query_vector: Sequence[float], k: int, conditions: Sequence = (),
                      *, excluding_key: str | None = None, attribute: str = "embedding",
                      n_probe: int | None = None) -> list[tuple[str, float]]:
        """APPROX_NEAR_COSINE top-k on the server: (key, score) best first. Filtered searches
        need 3.12.6 and are refused below. At most k hits: only `n_probe` cells are searched
        (the index's defaultNProbe without it), so a selective filter may leave fewer."""
        from graphsvc.store.arango.filters import similarity_query

        version = self.server_version()
        query = similarity_query(collection, k, query_vector, conditions, excluding_key, attribute,
                                 n_probe=n_probe, server_version=version)
        try:
            rows = self._all(query.text, query.bind_vars, collection)
        except ArangoError as exc:
            if exc.error_code == arango_errno.QUERY_VECTOR_SEARCH_NOT_APPLIED:
                raise StoreError(
                    f"ArangoDB {version} did not use a vector index for APPROX_NEAR_COSINE on '{collection}' "
                    f"(error 1554): build one on '{attribute}' with metric cosine (--arangodb-vector-index)"
                ) from exc
            if exc.error_code == VECTOR_INDEX_NOT_READY:
                raise StoreError(
                    f"vector index '{vector_index_name(attribute)}' on '{collection}' is not trained yet "
                    "(error 1555) — wait for it, or rebuild it with --arangodb-vector-index"
                ) from exc
            raise
        return [(row["_key"], float(row["score"])) for row in rows]
