"""`jobs train-movies`: train the graph-aware movie model (`graphsvc.models.movie_graph`)
self-supervised on a catalogue's own edges.

Recipe: pull the movies' texts and the relations' edges (people: `directed_by`,
`acted_in`; never `has_genre`, the measure of `jobs evaluate movies`) → sentence-encoder
vectors in this process → each epoch: hide a random share of the movie–person links,
build the relation means without them, embed every movie (full batch: a catalogue of
thousands fits), and ask each movie with a hidden link to pick its person — the mean of
the person's *remaining* movies — among the other hidden links' people (InfoNCE, in-batch
negatives) → checkpoint + metrics JSON beside it (which catalogue it saw, hashed keys so
evaluation can tell a held-out catalogue from the training one).

Why link prediction: people lean to genres, so a model that can tell which person made
a movie from its text and its other links has learnt what the neighbourhood says about
the movie — without ever being shown a genre.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from graphsvc.errors import ConfigError
from graphsvc.graph.datasets import load_memberships, load_texts
from graphsvc.graph.relations import Memberships, two_hop_mean, via_mean
from graphsvc.incremental.hashes import text_hashes
from graphsvc.inference.texts import encode_texts_in_process
from graphsvc.models.checkpoints import write_metrics
from graphsvc.models.movie_graph import DEFAULT_RELATIONS, MovieGraphModel, save_movie_checkpoint
from graphsvc.store.base import GraphStore

#: above this many training movies the metrics keep no key hashes (evaluation then cannot
#: check that its catalogue is a held-out one, and says so)
KEY_HASHES_LIMIT = 200_000


@dataclass(frozen=True)
class MovieTrainingConfig:
    collection: str = "movies"
    text: str = "description"
    fallback_text: str = "title"
    relations: tuple[str, ...] = DEFAULT_RELATIONS
    hidden: int = 384
    num_layers: int = 2
    epochs: int = 60
    learning_rate: float = 1e-3
    temperature: float = 0.5  # InfoNCE; 0.1 learnt person identity over genre in trials
    hide: float = 0.2  # share of links hidden per epoch (the link-prediction targets)
    pairs: int = 1024  # hidden links scored per relation per epoch
    seed: int = 0


@dataclass(frozen=True)
class MovieTrainingData:
    keys: list[str]
    vectors: np.ndarray  # [N, 384] sentence-encoder unit vectors
    memberships: dict[str, Memberships]


def pull_training_data(store: GraphStore, config: MovieTrainingConfig,
                       on_progress: Callable[[int], None] | None = None) -> MovieTrainingData:
    if "has_genre" in config.relations:
        raise ConfigError("--relation has_genre would teach the model the genres 'jobs evaluate movies' measures; "
                          "leave it out")
    keys, texts, _ = load_texts(store, config.collection, config.text, config.fallback_text)
    memberships = load_memberships(store, config.collection, keys, config.relations)
    if not any(len(m.movies) for m in memberships.values()):
        raise ConfigError(f"'{config.collection}' has no edges in {', '.join(config.relations)} — "
                          "a graph-aware model needs them (jobs synth movie-catalogue writes a catalogue with people)")
    vectors = encode_texts_in_process(texts, on_progress=on_progress)
    return MovieTrainingData(keys.to_pylist(), vectors, memberships)


def train_model(data: MovieTrainingData, config: MovieTrainingConfig,
                on_epoch: Callable[[dict], None] | None = None) -> tuple[MovieGraphModel, list[dict]]:
    """The trained model and its loss per epoch."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    n = len(data.keys)
    model = MovieGraphModel(data.vectors.shape[1], config.hidden, config.num_layers, config.relations)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    x = torch.from_numpy(data.vectors)
    empty = Memberships(np.zeros(0, np.int64), np.zeros(0, np.int64))
    memberships = {name: data.memberships.get(name, empty) for name in config.relations}
    history = []
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        hidden, kept = {}, {}
        for name, links in memberships.items():
            hide = np.flatnonzero(rng.random(len(links.movies)) < config.hide)
            hidden[name] = (links.movies[hide], links.vias[hide])
            kept[name] = links.without(hide)
        model.train()
        z = model.forward_full(x, [two_hop_mean(kept[name], n).torch() for name in config.relations])
        loss = torch.zeros(())
        for name in config.relations:
            movies, vias = hidden[name]
            if not len(movies):
                continue
            num_vias = int(memberships[name].vias.max()) + 1
            person = via_mean(kept[name], num_vias, n)
            has_others = np.diff(person.indptr)[vias] > 0  # a person with no other movie says nothing
            movies, vias = movies[has_others], vias[has_others]
            if len(movies) < 2:
                continue
            pick = rng.choice(len(movies), size=min(config.pairs, len(movies)), replace=False)
            movies, vias = torch.from_numpy(movies[pick]), torch.from_numpy(vias[pick])
            people = torch.nn.functional.normalize(torch.sparse.mm(person.torch(), z)[vias], dim=1)
            logits = z[movies] @ people.T / config.temperature
            same_person = (vias[:, None] == vias[None, :]) & ~torch.eye(len(vias), dtype=torch.bool)
            logits = logits.masked_fill(same_person, float("-inf"))  # not a negative of itself
            loss = loss + torch.nn.functional.cross_entropy(logits, torch.arange(len(vias)))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        record = {"epoch": epoch, "loss": round(float(loss.detach()), 5),
                  "seconds": round(time.perf_counter() - started, 3)}
        history.append(record)
        if on_epoch:
            on_epoch(record)
    return model.eval(), history


def train_movies(store: GraphStore, out: Path, config: MovieTrainingConfig = MovieTrainingConfig(),
                 on_epoch: Callable[[dict], None] | None = None,
                 on_progress: Callable[[int], None] | None = None) -> dict:
    started = time.perf_counter()
    data = pull_training_data(store, config, on_progress)
    encoded = time.perf_counter()
    model, history = train_model(data, config, on_epoch)
    save_movie_checkpoint(out, model, epoch=config.epochs)
    key_hashes = text_hashes(data.keys) if len(data.keys) <= KEY_HASHES_LIMIT else None
    metrics = {
        "model": "movie_graph",
        "config": {**asdict(config), "relations": list(config.relations)},
        "trained_on": {"collection": config.collection, "movies": len(data.keys),
                       "links": {name: int(len(m.movies)) for name, m in data.memberships.items()},
                       "key_hashes": [format(int(h), "016x") for h in np.sort(key_hashes)]
                       if key_hashes is not None else None},
        "withheld": ["has_genre"],
        "history": history,
        "seconds": {"pull_and_encode": round(encoded - started, 2),
                    "train": round(time.perf_counter() - encoded, 2)},
    }
    write_metrics(out, metrics)
    return metrics
