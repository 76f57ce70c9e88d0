"""Vector indexes (FAISS), their versioned on-disk artifacts, and the kNN-graph pass.

The names below load on first use, so that `import graphsvc.index.knn` (torch and numpy
only) works on a host without faiss, e.g. a GPU machine with only torch's CUDA build.
"""

from importlib import import_module

_WHERE = {
    "LoadedIndex": "artifacts",
    "Manifest": "artifacts",
    "current_version": "artifacts",
    "list_versions": "artifacts",
    "load_current": "artifacts",
    "load_version": "artifacts",
    "publish": "artifacts",
    "VectorIndex": "faiss_index",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'graphsvc.index' has no attribute {name!r}")
    value = getattr(import_module(f"graphsvc.index.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
