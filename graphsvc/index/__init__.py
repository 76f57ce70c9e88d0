"""Vector indexes (FAISS) and their versioned on-disk artifacts."""

from graphsvc.index.artifacts import (
    LoadedIndex,
    Manifest,
    current_version,
    list_versions,
    load_current,
    load_version,
    publish,
)
from graphsvc.index.faiss_index import VectorIndex

__all__ = [
    "LoadedIndex",
    "Manifest",
    "VectorIndex",
    "current_version",
    "list_versions",
    "load_current",
    "load_version",
    "publish",
]
