"""The generated movie catalogue, the graph-aware model trained on one seed and evaluated
on another (`jobs train-movies`, `jobs evaluate movies`), all in this process."""

from __future__ import annotations

import json

import numpy as np
import pytest

from graphsvc.errors import ConfigError
from graphsvc.store import open_store
from jobs.evaluate_movies import CO_PERSON, GRAPH, RANDOM, TEXT, EvaluateMoviesConfig, evaluate_movies
from jobs.synth_movies import GENRES, MovieCatalogueSpec, generate_movie_catalogue
from jobs.train_movies import MovieTrainingConfig, train_movies
from tests.jobs.conftest import restore_movie_catalogue


def test_two_seeds_give_disjoint_catalogues_with_people_leaning_to_their_movies_genres():
    one, again = generate_movie_catalogue(MovieCatalogueSpec(movies=300, seed=1)), \
        generate_movie_catalogue(MovieCatalogueSpec(movies=300, seed=1))
    other = generate_movie_catalogue(MovieCatalogueSpec(movies=300, seed=2))
    assert one.descriptions == again.descriptions and (one.acted_in == again.acted_in).all()
    assert not {one.movie_key(i) for i in range(300)} & {other.movie_key(i) for i in range(300)}
    assert not {one.person_key(i) for i in range(len(one.people_names))} & {
        other.person_key(i) for i in range(len(other.people_names))}
    assert all(1 <= len(g) <= 3 for g in one.genres) and {g for gs in one.genres for g in gs} <= set(range(18))
    # planted: about `lean` (0.8) of the links follow a lean, plus chance agreement
    shared = np.mean([bool(set(one.people_leans[p]) & set(one.genres[m])) for p, m in one.acted_in])
    assert 0.75 < shared < 0.95
    counts = np.bincount(one.acted_in[:, 0])
    assert counts.max() >= 5  # careers span several movies
    assert len(GENRES) == 18


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("movie-graph")
    restore_movie_catalogue(root / "train.duckdb", 250, seed=11)
    with open_store(str(root / "train.duckdb")) as store:
        metrics = train_movies(store, root / "movie_graph.pth.tar", MovieTrainingConfig(epochs=12))
    return root, metrics


def test_trained_on_one_seed_the_graph_model_beats_text_by_5_points_on_another(trained, tmp_path):
    root, metrics = trained
    assert metrics["trained_on"]["movies"] == 250 and metrics["withheld"] == ["has_genre"]
    assert metrics["history"][-1]["loss"] < metrics["history"][0]["loss"]
    restore_movie_catalogue(tmp_path / "eval.duckdb", 250, seed=12)
    with open_store(str(tmp_path / "eval.duckdb")) as store:
        report = evaluate_movies(store, EvaluateMoviesConfig(checkpoint=root / "movie_graph.pth.tar",
                                                             out=tmp_path / "report"))
    precision = {name: row["precision_at_k"] for name, row in report["genre_precision"].items()}
    assert set(precision) == {GRAPH, TEXT, CO_PERSON, RANDOM}
    assert report["held_out"] == {"known": True, "movies_seen_in_training": 0, "training_movies": 250}
    assert report["relations"] == ["directed_by", "acted_in"] and report["withheld"] == ["has_genre"]
    assert precision[RANDOM] < 0.35 < precision[TEXT] < precision[GRAPH]
    assert precision[GRAPH] >= precision[TEXT] + 0.05
    assert report["graph_minus_text_points"] == pytest.approx(100 * (precision[GRAPH] - precision[TEXT]), abs=0.01)
    written = json.loads((tmp_path / "report" / "report.json").read_text())
    assert written["genre_precision"] == report["genre_precision"]
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Genre precision@10" in page and "precision.png" in page and (tmp_path / "report" / "precision.png").exists()


def test_evaluating_on_the_training_catalogue_says_it_is_not_held_out(trained, tmp_path):
    root, _ = trained
    with open_store(str(root / "train.duckdb")) as store:
        report = evaluate_movies(store, EvaluateMoviesConfig(checkpoint=root / "movie_graph.pth.tar",
                                                             out=tmp_path / "report"))
    assert report["held_out"]["movies_seen_in_training"] == 250
    assert any("not a held-out evaluation" in note for note in report["notes"])


def test_training_refuses_the_genre_edges_as_a_relation(trained):
    root, _ = trained
    with open_store(str(root / "train.duckdb")) as store, pytest.raises(ConfigError, match="has_genre"):
        train_movies(store, root / "x.pth.tar", MovieTrainingConfig(relations=("directed_by", "has_genre")))
