"""A seeded movie catalogue with a real graph, written as an arangodump directory.

What is planted, exactly (everything else is uniform noise):

- **Genres**: 18, with skewed popularity (Drama and Comedy common, Western and Musical
  rare). Each movie has 1, 2 or 3 of them (probabilities 0.5, 0.35, 0.15).
- **People** (`people`): directors (one per `directors_share` movies) and actors (one per
  `actors_share` movies), each *leaning* to 1 or 2 genres, with a career weight drawn from
  a heavy-tailed (lognormal) distribution so some people make many movies. A movie's
  director is, with probability `lean`, drawn (by career weight) among the directors who
  lean to one of the movie's genres, else among all directors; each of its 3–6 actors
  likewise, with probability `lean`. So people carry genre signal only as a tendency.
- **Descriptions**: three sentences from templates whose slots take words from word
  lists: per slot a word of one of the movie's own genres with probability
  `genre_words`, of a random *other* genre with probability `other_words`, else a
  genre-neutral word. With the defaults the text alone ranks neighbours that share a
  genre about 70 % of the time (genre precision@10 of the sentence encoder's vectors),
  which is the text-only level of a real catalogue, not the ~100 % of a toy.
- **Users** (optional, `users`): each leans to 1–3 genres and rates 10–40 movies, a share
  `lean` of them from their genres; ratings 1–5, higher for liked genres.

Edges: `directed_by` (movies → people), `acted_in` (people → movies), `has_genre`
(movies → genres), and `rated` (users → movies, with `rating`) when there are users.
Keys carry the seed (`m<seed>-00042`, `p<seed>-0007`, `u<seed>-0003`), so two seeds give
two disjoint catalogues (only the 18 genres are shared): one to train a model, one held
out to evaluate it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphsvc.store.base import EdgeDefinition, GraphInfo
from graphsvc.store.dumps import write_dump

#: genre → words that carry it (nouns and short phrases a description would use)
GENRE_WORDS: dict[str, tuple[str, ...]] = {
    "Action": ("explosion", "car chase", "commando", "firefight", "mercenary", "hostage rescue", "martial arts",
               "bomb", "helicopter", "shootout", "ambush", "special forces"),
    "Adventure": ("expedition", "treasure map", "jungle", "lost temple", "voyage", "mountain pass", "pirate ship",
                  "ancient ruins", "uncharted island", "caravan", "quest", "river journey"),
    "Animation": ("talking animals", "cartoon", "animated", "toy", "enchanted forest creatures", "puppet",
                  "little robot", "colourful critters", "sketchbook", "clay figures", "animated fox",
                  "drawn adventure"),
    "Comedy": ("prank", "mix-up", "hilarious", "wedding disaster", "slapstick", "awkward date", "sitcom",
               "clumsy", "practical joke", "stand-up comedian", "farce", "goofy"),
    "Crime": ("heist", "mob boss", "detective", "robbery", "gangster", "drug cartel", "con artist", "smuggling",
              "police precinct", "bank job", "racketeer", "getaway driver"),
    "Documentary": ("archival footage", "interviews", "true story", "filmmaker", "real events", "investigation",
                    "eyewitness accounts", "field recordings", "chronicle", "documentary crew", "testimony",
                    "history of"),
    "Drama": ("grief", "family secrets", "illness", "divorce", "redemption", "estranged father", "addiction",
              "inheritance", "regret", "struggle", "confession", "reconciliation"),
    "Family": ("children", "holiday", "puppy", "grandparents", "summer camp", "kids", "school play",
               "birthday party", "family road trip", "babysitter", "siblings", "pet dog"),
    "Fantasy": ("dragon", "wizard", "sorcery", "elves", "enchanted sword", "kingdom", "prophecy", "magic",
                "dark lord", "fairy", "spellbook", "cursed crown"),
    "Horror": ("haunted house", "demon", "ghost", "slasher", "possession", "zombie", "cursed", "blood",
               "nightmare", "creature in the dark", "exorcism", "screams"),
    "Musical": ("song", "dance number", "broadway", "choir", "singer", "musical", "ballet", "jazz band",
                "audition", "chorus line", "opera", "show tune"),
    "Mystery": ("whodunit", "clue", "missing heiress", "locked room", "secret diary", "riddle", "amateur sleuth",
                "disappearance", "puzzle", "suspect", "hidden letter", "unsolved case"),
    "Romance": ("love affair", "first kiss", "wedding", "sweetheart", "passion", "romance", "heartbreak",
                "soulmate", "love letter", "courtship", "lovers", "proposal"),
    "Science Fiction": ("spaceship", "alien", "time travel", "android", "galaxy", "cyborg", "space station",
                        "laser", "distant planet", "artificial intelligence", "teleporter", "starship"),
    "Thriller": ("conspiracy", "stalker", "assassin", "paranoia", "kidnapping", "countdown", "blackmail",
                 "double agent", "cover-up", "deadly pursuit", "hunted witness", "ransom"),
    "War": ("battlefield", "soldiers", "platoon", "trenches", "invasion", "general", "bombing raid",
            "resistance fighters", "frontline", "army", "prisoner of war", "regiment"),
    "Western": ("sheriff", "outlaw", "saloon", "frontier", "cattle ranch", "gunslinger", "stagecoach", "prairie",
                "posse", "bounty hunter", "homestead", "desert town"),
    "Sport": ("championship", "coach", "boxing ring", "football team", "tournament", "underdog athlete",
              "marathon", "baseball", "training montage", "final match", "league", "racing"),
}
GENRES: tuple[str, ...] = tuple(GENRE_WORDS)
#: words that say nothing about a genre
NEUTRAL_WORDS = ("neighbour", "old friend", "stranger", "small town", "big city", "letter", "promise", "journey",
                 "decision", "summer", "winter", "brother", "sister", "job", "apartment", "secret", "night",
                 "morning", "office", "road", "village", "house", "teacher", "doctor", "student", "lawyer",
                 "photograph", "phone call", "market", "train", "harbour", "factory", "café", "hotel", "choice",
                 "past", "future", "mistake", "chance meeting", "new life")
FIRST_NAMES = ("Ada", "Ben", "Clara", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonah", "Kira", "Leo",
               "Mara", "Nils", "Olga", "Paul", "Quinn", "Rosa", "Sami", "Tess", "Ugo", "Vera", "Wes", "Yara", "Zane")
LAST_NAMES = ("Abbott", "Brandt", "Castillo", "Doyle", "Eriksen", "Fontaine", "Greer", "Hale", "Ivanova", "Jensen",
              "Kowalski", "Lindqvist", "Moreau", "Nakamura", "Okafor", "Pryce", "Quint", "Rossi", "Sato", "Thorne")
TEMPLATES = (
    "A story of {w}, {w} and {w}.",
    "A tale of {w} and {w}, with a {w}.",
    "It follows a {w}, a {w} and a {w}.",
    "Expect {w}, {w} and a {w}.",
)
#: genre popularity before normalising: Drama and Comedy common, Western and Musical rare
GENRE_WEIGHTS = np.array([1.2, 0.9, 0.4, 1.6, 1.0, 0.3, 2.0, 0.6, 0.7, 0.8, 0.3, 0.7, 1.1, 0.8, 1.2, 0.4, 0.3, 0.4])

MOVIES_GRAPH_EDGES = (
    EdgeDefinition("directed_by", ("movies",), ("people",)),
    EdgeDefinition("acted_in", ("people",), ("movies",)),
    EdgeDefinition("has_genre", ("movies",), ("genres",)),
)


@dataclass(frozen=True)
class MovieCatalogueSpec:
    movies: int = 3000
    seed: int = 1
    directors_share: int = 6  # one director per this many movies
    actors_share: float = 1.5  # one actor per this many movies
    lean: float = 0.8  # chance a person (or a user's rating) follows a genre lean
    genre_words: float = 0.5  # chance a description slot takes a word of the movie's genres
    other_words: float = 0.1  # … of another genre (misleading)
    users: int = 0
    min_cast: int = 3
    max_cast: int = 6


@dataclass(frozen=True)
class MovieCatalogue:
    """The catalogue as arrays; `write_movie_catalogue_dump` writes it."""

    spec: MovieCatalogueSpec
    titles: list[str]
    descriptions: list[str]
    years: np.ndarray
    genres: list[list[int]]  # genre numbers per movie
    people_leans: list[list[int]]
    people_names: list[str]
    directed_by: np.ndarray  # [movies] person number
    acted_in: np.ndarray  # [E, 2] (person, movie)
    rated: np.ndarray  # [R, 3] (user, movie, rating)

    def movie_key(self, i: int) -> str:
        return f"m{self.spec.seed}-{i:05d}"

    def person_key(self, i: int) -> str:
        return f"p{self.spec.seed}-{i:05d}"

    def user_key(self, i: int) -> str:
        return f"u{self.spec.seed}-{i:05d}"


def genre_key(genre: str) -> str:
    return genre.lower().replace(" ", "-")


def generate_movie_catalogue(spec: MovieCatalogueSpec = MovieCatalogueSpec()) -> MovieCatalogue:
    rng = np.random.default_rng(spec.seed)
    n, g = spec.movies, len(GENRES)
    popularity = GENRE_WEIGHTS / GENRE_WEIGHTS.sum()
    counts = rng.choice([1, 2, 3], size=n, p=[0.5, 0.35, 0.15])
    genres = [sorted(rng.choice(g, size=c, replace=False, p=popularity).tolist()) for c in counts]

    num_directors = max(1, n // spec.directors_share)
    num_actors = max(1, int(n / spec.actors_share))
    num_people = num_directors + num_actors
    leans = [sorted(rng.choice(g, size=rng.integers(1, 3), replace=False, p=popularity).tolist())
             for _ in range(num_people)]
    career = rng.lognormal(0.0, 0.8, size=num_people)
    by_genre = [np.zeros(num_people, bool) for _ in range(g)]
    for person, person_leans in enumerate(leans):
        for genre in person_leans:
            by_genre[genre][person] = True
    directors, actors = np.arange(num_directors), np.arange(num_directors, num_people)

    def pick(pool: np.ndarray, movie_genres: list[int], size: int) -> np.ndarray:
        chosen: list[int] = []
        while len(chosen) < size:
            candidates = pool
            if rng.random() < spec.lean:
                leaning = pool[np.any([by_genre[k][pool] for k in movie_genres], axis=0)]
                candidates = leaning if len(leaning) else pool
            weights = career[candidates] / career[candidates].sum()
            person = int(rng.choice(candidates, p=weights))
            if person not in chosen:
                chosen.append(person)
        return np.array(chosen)

    directed_by = np.array([pick(directors, genres[m], 1)[0] for m in range(n)])
    cast = [pick(actors, genres[m], int(rng.integers(spec.min_cast, spec.max_cast + 1))) for m in range(n)]
    acted_in = np.array([(p, m) for m in range(n) for p in cast[m]], np.int64).reshape(-1, 2)

    names = [f"{FIRST_NAMES[rng.integers(len(FIRST_NAMES))]} {LAST_NAMES[rng.integers(len(LAST_NAMES))]}"
             for _ in range(num_people)]
    descriptions = [_description(rng, genres[m], spec) for m in range(n)]
    titles = [f"The {_word(rng, genres[m], spec).title()} of {LAST_NAMES[rng.integers(len(LAST_NAMES))]}"
              for m in range(n)]
    rated = _ratings(rng, spec, genres, popularity)
    return MovieCatalogue(spec, titles, descriptions, rng.integers(1950, 2025, size=n), genres, leans, names,
                          directed_by, acted_in, rated)


def _word(rng: np.random.Generator, movie_genres: list[int], spec: MovieCatalogueSpec) -> str:
    draw = rng.random()
    if draw < spec.genre_words:
        genre = GENRES[movie_genres[rng.integers(len(movie_genres))]]
    elif draw < spec.genre_words + spec.other_words:
        genre = GENRES[rng.integers(len(GENRES))]
    else:
        return NEUTRAL_WORDS[rng.integers(len(NEUTRAL_WORDS))]
    words = GENRE_WORDS[genre]
    return words[rng.integers(len(words))]


def _description(rng: np.random.Generator, movie_genres: list[int], spec: MovieCatalogueSpec) -> str:
    sentences = []
    for template in rng.choice(len(TEMPLATES), size=2, replace=False):
        text = TEMPLATES[template]
        text = text.replace("{name}", FIRST_NAMES[rng.integers(len(FIRST_NAMES))])
        text = text.replace("{n}", "\0").replace("{w}", "\1")
        out = []
        for char in text:
            if char == "\0":
                out.append(NEUTRAL_WORDS[rng.integers(len(NEUTRAL_WORDS))])
            elif char == "\1":
                out.append(_word(rng, movie_genres, spec))
            else:
                out.append(char)
        sentences.append("".join(out))
    return " ".join(sentences)


def _ratings(rng: np.random.Generator, spec: MovieCatalogueSpec, genres: list[list[int]],
             popularity: np.ndarray) -> np.ndarray:
    if spec.users <= 0:
        return np.zeros((0, 3), np.int64)
    by_genre = [np.array([m for m, gs in enumerate(genres) if k in gs], np.int64) for k in range(len(GENRES))]
    rows = []
    for user in range(spec.users):
        liked = rng.choice(len(GENRES), size=rng.integers(1, 4), replace=False, p=popularity)
        seen: set[int] = set()
        for _ in range(int(rng.integers(10, 41))):
            pool = by_genre[liked[rng.integers(len(liked))]] if rng.random() < spec.lean else None
            movie = int(rng.choice(pool)) if pool is not None and len(pool) else int(rng.integers(spec.movies))
            if movie in seen:
                continue
            seen.add(movie)
            fan = any(k in liked for k in genres[movie])
            rating = int(np.clip(round(rng.normal(4.2 if fan else 2.6, 0.8)), 1, 5))
            rows.append((user, movie, rating))
    return np.array(rows, np.int64).reshape(-1, 3)


def write_movie_catalogue_dump(out: Path, spec: MovieCatalogueSpec = MovieCatalogueSpec()) -> dict:
    """The catalogue of `spec` as an arangodump directory at `out`; returns the counts."""
    cat = generate_movie_catalogue(spec)
    movies = [{"_key": cat.movie_key(m), "title": cat.titles[m], "year": int(cat.years[m]),
               "genres": [GENRES[k] for k in cat.genres[m]], "description": cat.descriptions[m]}
              for m in range(spec.movies)]
    directors = set(cat.directed_by.tolist())
    people = [{"_key": cat.person_key(p), "name": cat.people_names[p],
               "role": "director" if p in directors else "actor"} for p in range(len(cat.people_names))]
    genres = [{"_key": genre_key(name), "name": name} for name in GENRES]
    has_genre = [{"_key": f"{cat.movie_key(m)}-{genre_key(GENRES[k])}", "_from": f"movies/{cat.movie_key(m)}",
                  "_to": f"genres/{genre_key(GENRES[k])}"} for m in range(spec.movies) for k in cat.genres[m]]
    directed_by = [{"_key": cat.movie_key(m), "_from": f"movies/{cat.movie_key(m)}",
                    "_to": f"people/{cat.person_key(int(p))}"} for m, p in enumerate(cat.directed_by)]
    acted_in = [{"_key": f"{cat.person_key(int(p))}-{cat.movie_key(int(m))}",
                 "_from": f"people/{cat.person_key(int(p))}", "_to": f"movies/{cat.movie_key(int(m))}"}
                for p, m in cat.acted_in]
    collections = [("movies", "document", movies), ("people", "document", people), ("genres", "document", genres),
                   ("directed_by", "edge", directed_by), ("acted_in", "edge", acted_in),
                   ("has_genre", "edge", has_genre)]
    edges = list(MOVIES_GRAPH_EDGES)
    counts = {"movies": len(movies), "people": len(people), "genres": len(genres), "directed_by": len(directed_by),
              "acted_in": len(acted_in), "has_genre": len(has_genre)}
    if spec.users:
        users = [{"_key": cat.user_key(u), "name": f"user {u}"} for u in range(spec.users)]
        rated = [{"_key": f"{cat.user_key(int(u))}-{cat.movie_key(int(m))}", "_from": f"users/{cat.user_key(int(u))}",
                  "_to": f"movies/{cat.movie_key(int(m))}", "rating": int(r)} for u, m, r in cat.rated]
        collections += [("users", "document", users), ("rated", "edge", rated)]
        edges.append(EdgeDefinition("rated", ("users",), ("movies",)))
        counts.update(users=len(users), rated=len(rated))
    write_dump(out, database="movies", collections=collections, graphs=[GraphInfo("movies_graph", tuple(edges))])
    return {"seed": spec.seed, **counts}
