"""Recommendations for one user, from the published `<users>.recommendations` artifact
(`graphsvc.recommend.artifact`): the user's vector searched in the movie index (inner
product, k + the user's ratings fetched so that k remain after leaving out what the user
rated), filtered like every other query (`SimilarityQueries._allowed`), fields from the
movies' documents. A user with no rating the model knows — or one added to the store
since the artifact was made — gets the most popular movies, marked `"source":
"popular"`; a user the store does not hold is NotFound. The artifact is whatever the
service's reloader (or the CLI's `load_current`) gives, so a newly published version is
answered from at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from graphsvc.errors import IndexNotFound
from graphsvc.recommend.artifact import POPULAR, Recommendations, artifact_name, recommendations_of
from graphsvc.recommend.ranking import most_popular
from graphsvc.service.errors import NotFound, Unavailable
from graphsvc.service.filters import filter_object, parse_filter
from graphsvc.service.top_k import Ranked, top_k

if TYPE_CHECKING:
    from graphsvc.service.queries import Hit, ShortFields, SimilarityQueries


class UnknownUser(NotFound):
    def __init__(self, users: str, key: str):
        super().__init__(f"user '{users}/{key}' does not exist")
        self.users, self.key = users, key


@dataclass(frozen=True)
class Recommendation:
    users: str
    key: str
    movies: str  # the collection the hits are documents of
    index_version: int
    source: str  # "model", or "popular" for a user without ratings the model knows
    query: dict[str, Any]
    hits: list[Hit]
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"collection": self.users, "key": self.key, "movies": self.movies, "index_version": self.index_version,
                "source": self.source, "query": self.query, "hits": [h.to_dict() for h in self.hits],
                **({"note": self.note} if self.note else {})}


def recommend(queries: SimilarityQueries, users: str, key: str, k: int = 10,
              fields: Sequence[str] | ShortFields | None = None, filter: Any = None) -> Recommendation:
    queries._check_k(k)
    try:
        loaded = queries.index_of(artifact_name(users))
    except (NotFound, IndexNotFound):
        raise NotFound(f"no recommendations for '{users}' are published — run 'jobs recommend-users --users {users}'"
                       ) from None
    data = recommendations_of(loaded)
    filter = filter_object(filter)
    conditions = parse_filter(filter)
    allowed = queries._allowed(data.movie_collection, loaded, conditions)
    query = {"key": key, "k": k} | ({"filter": filter} if conditions else {})
    row = data.row(key)
    note = None
    if row is None:
        _require_user(queries, users, key, loaded.version)
        note = (f"'{users}/{key}' is newer than recommendations version {loaded.version}: "
                "rerun 'jobs recommend-users' for a list of its own")
    vector = data.vector(row) if row is not None else None
    if vector is None:
        ranked = _popular(data, k, allowed)
        source = POPULAR
    else:
        rated = data.rated(row)
        found = top_k(loaded, vector[None, :], k + len(rated), allowed=allowed)[0]
        seen = set(loaded.keys_at(rated)) if len(rated) else set()
        kept = [(m, s) for m, s in zip(found.keys, found.scores) if m not in seen][:k]
        ranked = Ranked([m for m, _ in kept], [s for _, s in kept])
        source = data.source(row)
    hits = queries._hits(data.movie_collection, [ranked], fields, keep_missing=True)[0]
    return Recommendation(users, key, data.movie_collection, loaded.version, source, query, hits, note)


def _popular(data: Recommendations, k: int, allowed) -> Ranked:
    order = most_popular(data.popularity, len(data.popularity))
    if allowed is not None:
        order = order[np.isin(order, allowed.ids)]
    order = order[:k]
    return Ranked(data.loaded.keys_at(order), data.popularity[order].astype(float).tolist())


def _require_user(queries: SimilarityQueries, users: str, key: str, version: int) -> None:
    """UnknownUser unless the store holds the user (without a store: NotFound naming the version)."""
    try:
        with queries.open_store() as store:
            exists = store.get_documents(users, [key], attributes=[])[0] is not None
    except Unavailable:
        raise NotFound(f"'{users}/{key}' is not in recommendations version {version}") from None
    if not exists:
        raise UnknownUser(users, key)
