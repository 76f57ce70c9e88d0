"""Vector indexes and what is built from them: the FAISS index and recall against exact
search (`faiss_index`), every item's top k at once (`knn`), the `similar` lists
(`similar`), versioned on-disk artifacts published atomically (`artifacts`), and the
embed jobs' shared tail — index, lists, write-back, publish (`publish`).

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
