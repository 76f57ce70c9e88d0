"""Errors a user can act on.

Every error raised on purpose by graphsvc derives from `GraphsvcError`; the CLIs print
its message on one line and exit non-zero, without a traceback.
"""

from __future__ import annotations


class GraphsvcError(Exception):
    """Base of all errors that carry a message meant for the user."""

    exit_code = 1


class ConfigError(GraphsvcError):
    """A setting (flag or GRAPHSVC_* variable) is missing or malformed."""


class StoreError(GraphsvcError):
    """The store cannot be opened or a store operation failed."""


class CollectionNotFound(StoreError):
    def __init__(self, collection: str, store_url: str = ""):
        where = f" in {store_url}" if store_url else ""
        super().__init__(f"collection '{collection}' does not exist{where} — restore it with 'jobs restore-dumps'")
        self.collection = collection


class DocumentNotFound(StoreError):
    def __init__(self, collection: str, key: str):
        super().__init__(f"document '{collection}/{key}' does not exist")
        self.collection = collection
        self.key = key


class DumpFormatError(GraphsvcError):
    """An arangodump directory or file is malformed; names the file and, where known, the line."""

    def __init__(self, path: str, message: str, line: int | None = None):
        where = f"{path} line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


class TritonUnavailable(GraphsvcError):
    """The Triton server cannot be reached or is not ready."""

    def __init__(self, url: str, detail: str = ""):
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"Triton is not reachable at {url}{extra} — start it with 'graphsvc triton serve'"
        )
        self.url = url


class TritonInferenceError(GraphsvcError):
    """Triton answered, but the inference request failed."""


class ModelRepositoryError(GraphsvcError):
    """The model repository or a model's config.pbtxt is missing or invalid."""


class IndexNotFound(GraphsvcError):
    def __init__(self, collection: str, index_dir: str):
        super().__init__(
            f"no published index for '{collection}' under {index_dir} — run 'jobs embed-{collection}' first"
        )
        self.collection = collection


class IndexCorrupt(GraphsvcError):
    """A published index artifact fails its checksum or is incomplete."""


class ArangoError(StoreError):
    """ArangoDB answered a request with an error. Carries the server's error number
    (`error_code`, e.g. 1210 for a unique constraint), the HTTP status and the request
    (`"POST /_api/import"`), like python-arango's exceptions, plus the collection."""

    def __init__(
        self,
        message: str,
        error_code: int | None = None,
        http_status: int | None = None,
        request: str = "",
        collection: str = "",
    ):
        parts = [f"ArangoDB error {error_code}" if error_code is not None else "ArangoDB error"]
        if http_status is not None:
            parts.append(f"(HTTP {http_status})")
        if request:
            parts.append(f"on {request}")
        where = f" for collection '{collection}'" if collection else ""
        super().__init__(f"{' '.join(parts)}{where}: {message}")
        self.error_code = error_code
        self.http_status = http_status
        self.request = request
        self.collection = collection


class DatasetFormatError(GraphsvcError):
    """A dataset directory (e.g. an OGB download) is incomplete or a file in it is
    malformed; names the file and, where known, the line."""

    def __init__(self, path: str, message: str, line: int | None = None):
        where = f"{path} line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line
