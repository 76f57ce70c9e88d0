"""The artifact the service recommends from, published as `<users>.recommendations`:

    index.faiss    the movie vectors (inner product: user · movie is the model's score)
    keys.arrow     the movies' `_key`s (row i = faiss id i) in the manifest's `movies` collection
    users.arrow    per user: `_key`, `source` ("model" or "popular": no rating the model
                   knows), `vector` (the tower's output, null for popular), `rated` (faiss
                   ids to leave out), `input_hash` (what the vector was made from: the next
                   run recomputes only users whose hash changed) and `recommended` as
                   written back
    movies.arrow   `popularity`: ratings per movie in training (the popular answer)

published with `graphsvc.index.artifacts.publish` (written aside, checksummed, renamed,
CURRENT swapped), so the service's reloader swaps it in like any index.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from graphsvc.errors import IndexCorrupt
from graphsvc.index.artifacts import LoadedIndex, Manifest, publish
from graphsvc.index.faiss_index import VectorIndex

USERS_FILE = "users.arrow"
MOVIES_FILE = "movies.arrow"
SUFFIX = ".recommendations"
MODEL, POPULAR = "model", "popular"

RECOMMENDED_TYPE = pa.list_(pa.struct([("_key", pa.string()), ("_id", pa.string()), ("score", pa.float32())]))


def artifact_name(users: str) -> str:
    """Where the recommendations of the users collection `users` are published."""
    return f"{users}{SUFFIX}"


def users_of(artifact: str) -> str | None:
    return artifact[: -len(SUFFIX)] if artifact.endswith(SUFFIX) else None


def _write_table(table: pa.Table):
    def write(path: Path) -> None:
        with pa.OSFile(os.fspath(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)

    return write


def _read_table(path: Path, expected: str | None) -> pa.Table:
    if not path.is_file():
        raise IndexCorrupt(f"{path}: {path.name} is missing")
    if expected is not None and hashlib.sha256(path.read_bytes()).hexdigest() != expected:
        raise IndexCorrupt(f"{path}: {path.name} checksum mismatch")
    with pa.OSFile(os.fspath(path), "rb") as source:
        return pa.ipc.open_file(source).read_all()


def publish_recommendations(index_dir: Path, users: str, movie_vectors: np.ndarray, movie_keys: pa.Array,
                            popularity: np.ndarray, user_table: pa.Table, *, model: dict, extra: dict,
                            keep: int = 3) -> Manifest:
    index = VectorIndex.build(movie_vectors, metric="ip", kind="flat")
    return publish(index_dir, artifact_name(users), index, movie_keys, model=model, extra=extra, keep=keep,
                   files={USERS_FILE: _write_table(user_table),
                          MOVIES_FILE: _write_table(pa.table({"popularity": pa.array(popularity, pa.int64())}))})


@dataclass
class Recommendations:
    """A loaded artifact's user side, beside its movie index (`loaded`)."""

    loaded: LoadedIndex
    users: pa.Table
    popularity: np.ndarray
    _positions: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def movie_collection(self) -> str:
        return self.loaded.manifest.extra["movies"]

    def row(self, key: str) -> int | None:
        return self._positions.get(key)

    def vector(self, row: int) -> np.ndarray | None:
        value = self.users.column("vector")[row]
        return None if not value.is_valid else np.asarray(value.values.to_numpy(zero_copy_only=False), np.float32)

    def rated(self, row: int) -> np.ndarray:
        return np.asarray(self.users.column("rated")[row].values.to_numpy(zero_copy_only=False), np.int64)

    def source(self, row: int) -> str:
        return self.users.column("source")[row].as_py()


_cache: dict[Path, Recommendations] = {}
_cache_lock = threading.Lock()


def recommendations_of(loaded: LoadedIndex) -> Recommendations:
    """The user side of a loaded artifact, read (and checked) once per version directory:
    when the reloader swaps in a new version, the next query reads that one's."""
    with _cache_lock:
        found = _cache.get(loaded.directory)
        if found is not None and found.loaded is loaded:
            return found
        checksums = loaded.manifest.checksums
        users = _read_table(loaded.directory / USERS_FILE, checksums.get(USERS_FILE))
        movies = _read_table(loaded.directory / MOVIES_FILE, checksums.get(MOVIES_FILE))
        if movies.num_rows != len(loaded):
            raise IndexCorrupt(f"{loaded.directory / MOVIES_FILE}: {movies.num_rows} rows for {len(loaded)} movies")
        found = Recommendations(loaded, users, movies.column("popularity").to_numpy().astype(np.int64),
                                {k: i for i, k in enumerate(users.column("_key").to_pylist())})
        for stale in [d for d in _cache if d.parent == loaded.directory.parent]:
            del _cache[stale]  # one version per artifact is enough
        _cache[loaded.directory] = found
        return found


def previous_users(loaded: LoadedIndex) -> pa.Table:
    return recommendations_of(loaded).users
