"""`jobs evaluate movies`: is the graph-aware `similar` better than the text-only one?

Recipe: the movie checkpoint and its training metrics → the store's movies (texts), the
model's relations (people) and, apart, the genres (`has_genre`: the measure, never an
input — a checkpoint whose relations include it is refused) → whether this catalogue is
held out (none of its keys among the training catalogue's hashed keys) → sentence-encoder
vectors in this process → four rankings in the same run: random, text only, text plus the
mean of the co-person neighbours (no training), the graph-aware model → genre
precision@k of each (the share of a movie's k most similar other movies sharing a genre
with it), and of the written-back `similar` lists when every movie has one → report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from graphsvc.errors import ConfigError
from graphsvc.evaluation.ranking import label_precision_at_k, label_precision_of_lists
from graphsvc.evaluation.report import precision_figure, render_movies_html, write_report
from graphsvc.graph.datasets import load_memberships, load_texts
from graphsvc.graph.relations import Memberships, MovieRelations, two_hop_mean
from graphsvc.incremental.hashes import text_hashes
from graphsvc.index.faiss_index import l2_normalise
from graphsvc.inference.relational import embed_movies_in_process
from graphsvc.inference.texts import encode_texts_in_process
from graphsvc.models.checkpoints import read_metrics
from graphsvc.models.movie_graph import load_movie_checkpoint
from graphsvc.runs.timing import PhaseTimer
from graphsvc.store.base import GraphStore

GRAPH, TEXT, CO_PERSON, RANDOM, SERVED = ("graph-aware", "text only", "text + co-person mean (no training)",
                                          "random", "served similar")


@dataclass(frozen=True)
class EvaluateMoviesConfig:
    collection: str = "movies"
    text: str = "description"
    fallback_text: str = "title"
    genre_edges: str = "has_genre"
    checkpoint: Path = Path("checkpoints/movie_graph.pth.tar")
    out: Path = Path("var/evaluation/movies")
    k: int = 10
    seed: int = 0


def evaluate_movies(store: GraphStore, config: EvaluateMoviesConfig = EvaluateMoviesConfig(),
                    on_progress=None) -> dict:
    timer = PhaseTimer()
    model, _ = load_movie_checkpoint(config.checkpoint)
    if config.genre_edges in model.relations:
        raise ConfigError(f"{config.checkpoint} uses '{config.genre_edges}' as a relation: it has seen the genres "
                          "this evaluation measures — train one without it ('jobs train-movies')")
    notes: list[str] = []
    with timer("pull"):
        keys, texts, _ = load_texts(store, config.collection, config.text, config.fallback_text)
        memberships = load_memberships(store, config.collection, keys, [*model.relations, config.genre_edges])
        genres = memberships.pop(config.genre_edges, None)
        if genres is None or not len(genres.movies):
            raise ConfigError(f"'{config.genre_edges}' links no movie of '{config.collection}' to a genre: "
                              "nothing to measure")
        labels = np.zeros((len(keys), int(genres.vias.max()) + 1), bool)
        labels[genres.movies, genres.vias] = True
    held_out = _held_out(keys, read_metrics(config.checkpoint), notes)
    with timer("text"):
        text = encode_texts_in_process(texts, on_progress=on_progress)
    with timer("graph"):
        relations = MovieRelations.build(model.relations, memberships, len(keys))
        graph = embed_movies_in_process(model, relations, text)
        co_person = two_hop_mean(_union(memberships), len(keys))
        reference = l2_normalise(text + co_person.times(text))
    with timer("precision"):
        rng = np.random.default_rng(config.seed)
        rankings = {
            GRAPH: label_precision_at_k(graph, labels, config.k),
            TEXT: label_precision_at_k(text, labels, config.k),
            CO_PERSON: label_precision_at_k(reference, labels, config.k),
            RANDOM: label_precision_at_k(rng.normal(size=text.shape).astype(np.float32), labels, config.k),
        }
        served = _served(store, config, keys, labels)
        if served is not None:
            rankings[SERVED] = served
    gain = rankings[GRAPH]["precision_at_k"] - rankings[TEXT]["precision_at_k"]
    report = {
        "nodes": config.collection,
        "kind": "movies",
        "checkpoint": str(config.checkpoint),
        "relations": list(model.relations),
        "withheld": [config.genre_edges],
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "num_nodes": len(keys),
        "links": {name: int(len(m.movies)) for name, m in memberships.items()},
        "movies_with_genre": int(labels.any(axis=1).sum()),
        "genres": int(labels.shape[1]),
        "k": config.k,
        "held_out": held_out,
        "genre_precision": rankings,
        "graph_minus_text_points": round(100 * gain, 2),
        "note": (f"Genre precision@{config.k}: for each movie with a genre, the share of its {config.k} most similar "
                 f"other movies (exact cosine search) sharing a genre with it. The genres ('{config.genre_edges}') "
                 f"are withheld from every ranking; the graph-aware model sees only {', '.join(model.relations)}."),
        "notes": notes,
        "seconds": timer.summary(),
    }
    config.out.mkdir(parents=True, exist_ok=True)
    report["figures"] = {"precision": {"file": precision_figure(rankings, config.k, config.out / "precision.png"),
                                       "title": f"Genre precision@{config.k} of similar movies"}}
    written = write_report(config.out, report, render=render_movies_html)
    report["files"] = {name: str(path) for name, path in written.items()}
    return report


def _union(memberships: dict[str, Memberships]) -> Memberships:
    """Every relation's links as one: a movie's co-person neighbours, whatever the role."""
    offset, movies, vias = 0, [], []
    for links in memberships.values():
        movies.append(links.movies)
        vias.append(links.vias + offset)
        offset += int(links.vias.max()) + 1 if len(links.vias) else 0
    return Memberships(np.concatenate(movies) if movies else np.zeros(0, np.int64),
                       np.concatenate(vias) if vias else np.zeros(0, np.int64))


def _held_out(keys: pa.Array, training: dict | None, notes: list[str]) -> dict:
    trained = ((training or {}).get("trained_on") or {})
    hashes = trained.get("key_hashes")
    if hashes is None:
        notes.append("the checkpoint's training metrics list no training keys: whether this catalogue was held out "
                     "of training is not known")
        return {"known": False}
    seen = np.isin(text_hashes(keys.to_pylist()), np.array([int(h, 16) for h in hashes], np.uint64))
    if seen.any():
        notes.append(f"{int(seen.sum())} of these {len(keys)} movies were in the training catalogue: this is not a "
                     "held-out evaluation — evaluate on another seed ('jobs synth movie-catalogue --seed')")
    return {"known": True, "movies_seen_in_training": int(seen.sum()), "training_movies": trained.get("movies")}


def _served(store: GraphStore, config: EvaluateMoviesConfig, keys: pa.Array, labels: np.ndarray) -> dict | None:
    """Genre precision of the written-back `similar` lists, when every movie has one."""
    names = keys.to_pylist()
    position = {key: i for i, key in enumerate(names)}
    documents = store.get_documents(config.collection, names, attributes=["similar"])
    if any(doc is None or not doc.get("similar") for doc in documents):
        return None
    lists = [np.array([position[entry["_key"]] for entry in doc["similar"] if entry["_key"] in position], np.int64)
             for doc in documents]
    return label_precision_of_lists(lists, labels, config.k)
