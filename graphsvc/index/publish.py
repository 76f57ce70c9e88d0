"""The embed jobs' tail: index the embeddings and find each one's top-k similar → write
back `embedding`, `similar` (and the job's own columns) → optionally an ArangoDB vector
index → publish the FAISS index as the collection's next version."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import pyarrow as pa

from graphsvc.index.artifacts import Manifest, publish
from graphsvc.index.similar import Indexed, embedding_array, index_with_neighbours, similar_array
from graphsvc.runs.timing import PhaseTimer

if TYPE_CHECKING:
    from graphsvc.store.base import GraphStore


@dataclass(frozen=True)
class PublishedEmbeddings:
    dimension: int
    indexed: Indexed
    manifest: Manifest
    vector_index: dict | None  # the ArangoDB vector index as built (status, nLists, defaultNProbe, …), when asked for

    def summary(self) -> dict[str, Any]:
        """The job summary's part about the index, the similar lists and the version."""
        return {
            "dimension": self.dimension,
            "index_version": self.manifest.version,
            "index_kind": self.indexed.index.kind,
            "index_recall_at_k": self.indexed.calibration["recall_at_k"],
            "similar": self.indexed.report,  # how the similar lists were found, and their measured recall@k
            "arangodb_vector_index": self.vector_index,
        }


def publish_embeddings(store: GraphStore, index_dir: Path, collection: str, keys: pa.Array, embeddings: np.ndarray,
                       *, job: str, model: dict[str, Any], top_k: int, timer: PhaseTimer,
                       columns: Mapping[str, pa.Array] | None = None, manifest: Mapping[str, Any] | None = None,
                       keep: int = 3, arangodb_vector_index: bool = False,
                       index: Callable[..., Indexed] = index_with_neighbours,
                       write_back: Callable[[GraphStore, str, Indexed], None] | None = None) -> PublishedEmbeddings:
    """Index `embeddings` (a row per key), write them back with each key's top-k similar
    and `columns`, and publish the index, timing the phases `index`, `write_back`,
    `vector_index` and `publish`. The manifest records `job`, `model` (name, version),
    `top_k`, the index's calibration and `manifest`'s entries. With
    `arangodb_vector_index` ArangoDB's vector index is built again on the written vectors
    (one of another dimension dropped before the write-back, as it would refuse them),
    searching as widely as our index; the manifest records it too.

    `index` (index_with_neighbours' signature) and `write_back` (store, collection,
    indexed: writes `embedding`, `similar` and `columns` its own way) are where the Ray
    executor (`graphsvc.distributed`) plugs in; by default one table is written here."""
    with timer("index"):
        indexed = index(embeddings, top_k)
        similar = similar_array(keys, indexed.ids, indexed.scores) if write_back is None else None

    dimension = int(embeddings.shape[1])
    dropped: list[str] = []
    if arangodb_vector_index:
        with timer("vector_index"):
            # an index of another dimension would refuse every UPDATE of the write-back
            dropped = store.prepare_vector_index(collection, dimension=dimension)

    with timer("write_back"):
        if write_back is not None:
            write_back(store, collection, indexed)
        else:
            store.update_attributes(collection, pa.table(
                {"_key": keys, "embedding": embedding_array(embeddings), "similar": similar, **(columns or {})}))

    vector_index = None
    if arangodb_vector_index:
        with timer("vector_index"):
            # trained on the vectors just written (IVF training is not incremental: an older
            # index is dropped and built again), searching as widely as our own index does
            built = store.create_vector_index(collection, dimension=dimension, calibration=indexed.index.params)
            vector_index = built.to_dict()
            vector_index["reason"] = "; ".join([*dropped, *filter(None, [vector_index["reason"]])])

    with timer("publish"):
        published = publish(index_dir, collection, indexed.index, keys, model=model,
                            extra={"job": job, "top_k": top_k, "calibration": indexed.calibration,
                                   **({"arangodb_vector_index": vector_index} if vector_index else {}),
                                   **(manifest or {})},
                            keep=keep)
    return PublishedEmbeddings(dimension, indexed, published, vector_index)
