"""A synthetic MovieLens-format data set with structure a recommender can learn.

Every rating comes from a small hidden world: users and movies have latent factors, users have
tastes for genres and a bias, movies have a bias and Zipf-like popularity (which decides how often
they are rated), and a few users rate far more than the rest. A rating is the sum of those parts
plus noise, clipped to 0.5–5.0 and rounded to half stars, so personal taste matters and a
per-movie popularity baseline cannot explain it all.

When and by whom movies are rated follows one of two modes:

- ``sessions`` (the default) behaves like public MovieLens. Users arrive throughout the period
  (user ids increase with arrival) and rate most of their films in one sitting on their arrival
  day, seconds to minutes apart; some come back on later days for a shorter session. Most movies
  exist from day 0, the rest are released throughout the period (movie ids increase with release)
  and are rated only once out. Each day's budget of ratings is split among that day's sessions by
  the users' activity.
- ``stationary``: every day, ratings drawn independently by user activity x movie popularity at
  uniformly random times of day.

``session_statistics`` measures how session-like a ratings table is on a time split.

The output has the MovieLens layout (``ratings.csv`` + ``movies.csv``, as in ``ml-25m``) or
date-partitioned Parquet (``ratings/date=YYYY-MM-DD/part-0.parquet`` + ``movies.csv``). The same
arguments always give byte-identical files. Work is vectorized and written one day at a time, so
the ml-25m scale (25 million ratings) fits in a few minutes and well under 4 GiB.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from railyard import parquet_io
from railyard.features import split_cutoff
from railyard.fsutil import atomic_write_text
from railyard.loaders import MOVIELENS_GENRES, NO_GENRES, RATINGS_SCHEMA

# Rough relative frequencies of the MovieLens genres in ml-25m (Drama and Comedy dominate, IMAX and
# Film-Noir are rare), in the order of MOVIELENS_GENRES.
GENRE_WEIGHTS = dict(
    zip(
        MOVIELENS_GENRES,
        (7.0, 4.5, 2.5, 2.5, 16.0, 5.5, 5.5, 25.0, 2.8, 0.4, 5.5, 0.3, 1.0, 2.6, 9.0, 3.8, 8.5, 1.7, 1.0),
        strict=True,
    )
)

# The hidden world. Spreads are chosen so that personal parts (user bias, taste, genre affinity)
# outweigh the movie bias, and the global mean gives a positive rate (rating >= 3.5) near 55%.
_FACTORS = 8
_FACTOR_SCALE = 0.46  # dot product of two factor vectors: sd ≈ 0.6
_GENRE_TASTE_SD = 0.6
_USER_BIAS_SD = 0.4
_MOVIE_BIAS_SD = 0.3
_NOISE_SD = 0.6
_GLOBAL_MEAN = 3.4
_ZIPF_EXPONENT = 0.9  # popularity of the movie at rank r ∝ r^-0.9
_ACTIVITY_SIGMA = 1.2  # lognormal user activity: a few users rate a lot
_NO_GENRE_SHARE = 0.01
_GENRE_COUNT_P = (0.45, 0.35, 0.20)  # a movie has 1, 2 or 3 genres

# Sessions mode. Gaps between a session's ratings are lognormal (median 15 s, a few seconds to a few
# minutes). A user who arrived k days ago comes back on a given day with probability
# _RETURN_RATE * exp(-k / _RETURN_DECAY_DAYS): about half never return.
_BACK_CATALOGUE_SHARE = 0.8  # movies that exist on day 0; the rest are released later
_MIN_SESSION = 20  # ratings in a session, budget allowing (MovieLens keeps users with 20+ ratings)
_MAX_SESSION = 2_000
_CATALOGUE_SHARE_PER_SESSION = 4  # a session rates at most 1/4 of the released movies
_RETURN_SESSION_SCALE = 0.3  # a returning user's session is about this share of a first one
_RETURN_RATE = 0.1
_RETURN_DECAY_DAYS = 7.0
_GAP_MEDIAN_SECONDS = 15.0
_GAP_SIGMA = 1.2

_SECONDS_PER_DAY = 86_400
_SCORE_CHUNK = 1_000_000  # rows scored at once: bounds the memory of the factor gathers
_MAX_SAMPLING_ROUNDS = 200


@dataclass(frozen=True)
class GenerationSummary:
    out_dir: Path
    n_ratings: int
    n_users: int  # users with at least one rating
    n_movies: int  # movies with at least one rating
    first_ts: int
    last_ts: int
    positive_rate: float  # share of ratings >= 3.5


@dataclass(frozen=True)
class _World:
    user_vectors: np.ndarray  # (users, factors + genres): latent factors, then genre tastes
    user_bias: np.ndarray
    user_p: np.ndarray  # probability that a rating is by this user (sessions: the weight of their sessions)
    movie_vectors: np.ndarray  # (movies, factors + genres): latent factors, then genre shares
    movie_bias: np.ndarray
    movie_p: np.ndarray  # probability that a rating is of this movie
    movies: pl.DataFrame  # movies.csv


@dataclass(frozen=True)
class _Schedule:
    """Sessions mode: who arrives and what is out on each day."""

    arrival_day: np.ndarray  # per user, non-decreasing (user ids follow arrival)
    released: np.ndarray  # per day, movies out by then (movie ids follow release)
    session_cap: np.ndarray  # per day, most ratings in one session


def generate_movielens(
    out_dir: Path,
    *,
    users: int,
    movies: int,
    days: int,
    ratings_per_day: int,
    seed: int,
    start_date: date = date(2026, 1, 1),
    fmt: Literal["csv", "parquet"] = "csv",
    mode: Literal["sessions", "stationary"] = "sessions",
) -> GenerationSummary:
    """Write ``days * ratings_per_day`` ratings over consecutive UTC days from ``start_date``.

    In sessions mode ``users`` is the population arriving over the period. A user rates a movie at
    most once per day, so (userId, movieId, timestamp) is unique. Refuses to overwrite existing
    ratings in ``out_dir``.
    """
    _check_arguments(users=users, movies=movies, days=days, ratings_per_day=ratings_per_day, fmt=fmt, mode=mode)
    out_dir = Path(out_dir)
    for existing in (out_dir / "ratings.csv", out_dir / "ratings"):
        if existing.exists():
            raise FileExistsError(f"{existing} already exists: choose another output folder or delete it")
    out_dir.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    world = _make_world(rng, users, movies)
    schedule = _make_schedule(rng, users, movies, days, ratings_per_day) if mode == "sessions" else None
    atomic_write_text(out_dir / "movies.csv", world.movies.write_csv())

    users_seen = np.zeros(users, dtype=bool)
    movies_seen = np.zeros(movies, dtype=bool)
    positives = 0
    first_ts = last_ts = 0
    target = out_dir / ("ratings.csv" if fmt == "csv" else "ratings")
    with _atomic_output(target) as tmp_target:
        for day in range(days):
            day_date = start_date + timedelta(days=day)
            chunk = _generate_day(rng, world, schedule, day, day_date, ratings_per_day)
            _write_day(chunk, tmp_target, fmt, day_date, first=day == 0)
            users_seen[chunk["userId"].to_numpy() - 1] = True
            movies_seen[chunk["movieId"].to_numpy() - 1] = True
            positives += int((chunk["rating"] >= 3.5).sum())
            if day == 0:
                first_ts = int(chunk["timestamp"][0])
            last_ts = int(chunk["timestamp"][-1])

    n_ratings = days * ratings_per_day
    return GenerationSummary(
        out_dir=out_dir,
        n_ratings=n_ratings,
        n_users=int(users_seen.sum()),
        n_movies=int(movies_seen.sum()),
        first_ts=first_ts,
        last_ts=last_ts,
        positive_rate=positives / n_ratings,
    )


def session_statistics(ratings: pl.DataFrame, holdout_fraction: float) -> dict[str, float]:
    """How session-like ``ratings`` are, on the pipeline's own time split (``split_cutoff``).

    - ``median_user_span_s``: the median over users of their last minus first rating timestamp;
    - ``holdout_new_user_share``: the share of the users rating in the holdout who have no rating
      before the cut-off;
    - ``holdout_rows_with_history_share``: the share of holdout rows with an earlier rating (strictly
      smaller timestamp) by the same user.
    """
    cutoff = split_cutoff(ratings["timestamp"], holdout_fraction)
    users = ratings.group_by("userId").agg(first=pl.col("timestamp").min(), last=pl.col("timestamp").max())
    holdout = ratings.filter(pl.col("timestamp") >= cutoff).join(users, on="userId")
    holdout_users = holdout.unique("userId")
    return {
        "median_user_span_s": float((users["last"] - users["first"]).median()),
        "holdout_new_user_share": float((holdout_users["first"] >= cutoff).mean()),
        "holdout_rows_with_history_share": float((holdout["timestamp"] > holdout["first"]).mean()),
    }


def _write_day(chunk: pl.DataFrame, target: Path, fmt: str, day: date, *, first: bool) -> None:
    if fmt == "csv":
        with open(target, "ab") as handle:
            chunk.write_csv(handle, include_header=first, float_precision=1)
    else:
        partition = target / f"date={day.isoformat()}"
        partition.mkdir(parents=True)
        parquet_io.write(chunk, partition / "part-0.parquet")


def _check_arguments(*, users: int, movies: int, days: int, ratings_per_day: int, fmt: str, mode: str) -> None:
    counts = {"users": users, "movies": movies, "days": days, "ratings_per_day": ratings_per_day}
    for name, value in counts.items():
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if ratings_per_day > users * movies // 2:
        raise ValueError(
            f"ratings_per_day={ratings_per_day:,} is too many for {users:,} users x {movies:,} movies: "
            f"a user rates a movie at most once per day (use at most half of the {users * movies:,} pairs)"
        )
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', not {fmt!r}")
    if mode not in ("sessions", "stationary"):
        raise ValueError(f"mode must be 'sessions' or 'stationary', not {mode!r}")
    if mode == "sessions" and ratings_per_day > users * (_SECONDS_PER_DAY - 1):
        raise ValueError(f"ratings_per_day={ratings_per_day:,} is too many for {users:,} users rating once a second")


def _make_world(rng: np.random.Generator, n_users: int, n_movies: int) -> _World:
    genre_share, genre_names = _assign_genres(rng, n_movies)
    movie_vectors = np.hstack([rng.normal(0.0, _FACTOR_SCALE, (n_movies, _FACTORS)), genre_share]).astype(np.float32)
    user_vectors = np.hstack(
        [
            rng.normal(0.0, _FACTOR_SCALE, (n_users, _FACTORS)),
            rng.normal(0.0, _GENRE_TASTE_SD, (n_users, len(MOVIELENS_GENRES))),
        ]
    ).astype(np.float32)
    # Popularity ranks are shuffled over ids, so movieId says nothing about popularity.
    popularity = rng.permutation(n_movies) + 1.0
    movie_p = popularity**-_ZIPF_EXPONENT
    user_p = rng.lognormal(0.0, _ACTIVITY_SIGMA, n_users)
    years = rng.integers(1920, 2026, n_movies)
    movies = pl.DataFrame(
        {
            "movieId": np.arange(1, n_movies + 1, dtype=np.int64),
            "title": [f"Movie {i} ({year})" for i, year in enumerate(years.tolist(), start=1)],
            "genres": genre_names,
        }
    )
    return _World(
        user_vectors=user_vectors,
        user_bias=rng.normal(0.0, _USER_BIAS_SD, n_users).astype(np.float32),
        user_p=user_p / user_p.sum(),
        movie_vectors=movie_vectors,
        movie_bias=rng.normal(0.0, _MOVIE_BIAS_SD, n_movies).astype(np.float32),
        movie_p=movie_p / movie_p.sum(),
        movies=movies,
    )


def _assign_genres(rng: np.random.Generator, n_movies: int) -> tuple[np.ndarray, list[str]]:
    """1–3 distinct genres per movie (a few have none): each genre's share, and the MovieLens string."""
    weights = np.array(list(GENRE_WEIGHTS.values()))
    counts = rng.choice([1, 2, 3], size=n_movies, p=_GENRE_COUNT_P)
    counts[rng.random(n_movies) < _NO_GENRE_SHARE] = 0
    # Weighted sampling without replacement, all movies at once (Gumbel top-k).
    keys = np.log(weights) + rng.gumbel(size=(n_movies, len(MOVIELENS_GENRES)))
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    member = rank < counts[:, None]
    share = member / np.maximum(counts, 1)[:, None]
    names = ["|".join(MOVIELENS_GENRES[j] for j in np.flatnonzero(row)) or NO_GENRES for row in member]
    return share, names


def _make_schedule(rng: np.random.Generator, n_users: int, n_movies: int, days: int, per_day: int) -> _Schedule:
    back_catalogue = max(1, round(n_movies * _BACK_CATALOGUE_SHARE))
    release_day = np.sort(rng.integers(1, max(days, 2), n_movies - back_catalogue))
    released = back_catalogue + np.searchsorted(release_day, np.arange(days), side="right")
    # Well below the catalogue, unless the users are too few to fill a day otherwise.
    cap = np.maximum(np.minimum(_MAX_SESSION, released // _CATALOGUE_SHARE_PER_SESSION), -(-per_day // n_users))
    cap = np.minimum(cap, released)
    arrival_day = np.sort(rng.integers(0, days, n_users))
    # Enough users must have arrived by each day to fill its budget: bring arrivals forward.
    needed = -(-per_day // cap)
    deadline = np.full(n_users, days)
    for day in range(days - 1, -1, -1):
        deadline[: needed[day]] = day
    return _Schedule(arrival_day=np.minimum(arrival_day, deadline), released=released, session_cap=cap)


def _generate_day(
    rng: np.random.Generator, world: _World, schedule: _Schedule | None, day: int, day_date: date, n: int
) -> pl.DataFrame:
    if schedule is None:
        user_idx, movie_idx = _sample_distinct_pairs(rng, world.user_p, world.movie_p, n)
        seconds = rng.integers(0, _SECONDS_PER_DAY, n)
    else:
        user_idx, movie_idx, seconds = _session_day(rng, world, schedule, day, n)
    day_start = int(datetime.combine(day_date, datetime.min.time(), tzinfo=UTC).timestamp())
    timestamps = day_start + seconds
    ratings = np.concatenate(
        [
            _rate(rng, world, user_idx[start : start + _SCORE_CHUNK], movie_idx[start : start + _SCORE_CHUNK])
            for start in range(0, n, _SCORE_CHUNK)
        ]
    )
    order = np.lexsort((movie_idx, user_idx, timestamps))
    return pl.DataFrame(
        {
            "userId": user_idx[order] + 1,
            "movieId": movie_idx[order] + 1,
            "rating": ratings[order].astype(np.float64),
            "timestamp": timestamps[order],
        },
        schema=RATINGS_SCHEMA,
    )


def _sample_distinct_pairs(
    rng: np.random.Generator, user_p: np.ndarray, movie_p: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` distinct (user, movie) index pairs drawn by activity x popularity (rejection sampling)."""
    n_movies = len(movie_p)
    keys = np.empty(0, dtype=np.int64)
    for _ in range(_MAX_SAMPLING_ROUNDS):
        missing = n - len(keys)
        if missing == 0:
            return keys // n_movies, keys % n_movies
        draws = missing + missing // 4 + 16  # a little extra: some draws repeat a pair
        candidates = rng.choice(len(user_p), draws, p=user_p) * n_movies + rng.choice(n_movies, draws, p=movie_p)
        keys = np.concatenate([keys, candidates])
        _, first = np.unique(keys, return_index=True)
        keys = keys[np.sort(first)][:n]  # keep the first draw of each pair, in draw order
    raise ValueError(
        f"could not draw {n:,} distinct (user, movie) pairs for one day: "
        "the most active users and most popular movies are saturated; lower ratings_per_day"
    )


def _session_day(
    rng: np.random.Generator, world: _World, schedule: _Schedule, day: int, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The day's sessions: first ones of the users arriving today, and returns of earlier users."""
    arrival = schedule.arrival_day
    first_new, end_new = np.searchsorted(arrival, [day, day + 1])
    since_arrival = day - arrival[:first_new]
    back = np.flatnonzero(rng.random(first_new) < _RETURN_RATE * np.exp(-since_arrival / _RETURN_DECAY_DAYS))
    cap = int(schedule.session_cap[day])
    short = -(-n // cap) - (end_new - first_new) - len(back)
    if short > 0:  # too few sessions to hold the budget: more earlier users come back
        idle = np.setdiff1d(np.arange(first_new), back)
        weight = world.user_p[idle]
        back = np.sort(np.concatenate([back, rng.choice(idle, short, replace=False, p=weight / weight.sum())]))
    users = np.concatenate([back, np.arange(first_new, end_new)])
    weight = world.user_p[users] * np.where(users < first_new, _RETURN_SESSION_SCALE, 1.0)
    counts = _split_budget(rng, n, weight, min(_MIN_SESSION, n // len(users)), cap)
    user_idx = np.repeat(users, counts)
    released_p = world.movie_p[: schedule.released[day]]
    movie_idx = _distinct_movies(rng, user_idx, released_p / released_p.sum())
    return user_idx, movie_idx, _session_seconds(rng, counts[counts > 0])


def _split_budget(rng: np.random.Generator, total: int, weight: np.ndarray, floor: int, cap: int) -> np.ndarray:
    """``total`` split into counts in [floor, cap] in proportion to ``weight`` (a multinomial draw)."""
    counts = np.full(len(weight), floor)
    left = total - counts.sum()
    while left > 0:  # what went over a cap is drawn again among the sessions with room
        room = weight * (counts < cap)
        counts += rng.multinomial(left, room / room.sum())
        left = int(np.maximum(counts - cap, 0).sum())
        counts = np.minimum(counts, cap)
    return counts


def _distinct_movies(rng: np.random.Generator, user_idx: np.ndarray, movie_p: np.ndarray) -> np.ndarray:
    """A movie per row drawn by popularity, distinct within each user (repeats are drawn again)."""
    n_movies = len(movie_p)
    movie_idx = rng.choice(n_movies, len(user_idx), p=movie_p)
    for _ in range(_MAX_SAMPLING_ROUNDS):
        repeat = np.ones(len(user_idx), dtype=bool)
        repeat[np.unique(user_idx * n_movies + movie_idx, return_index=True)[1]] = False
        if not repeat.any():
            return movie_idx
        movie_idx[repeat] = rng.choice(n_movies, int(repeat.sum()), p=movie_p)
    raise ValueError("could not draw distinct movies for every session: lower ratings_per_day")


def _session_seconds(rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
    """Seconds into the day of each session's ratings, strictly increasing within a session."""
    starts = np.cumsum(counts) - counts
    gaps = np.maximum(1, np.rint(rng.lognormal(np.log(_GAP_MEDIAN_SECONDS), _GAP_SIGMA, counts.sum()))).astype(np.int64)
    gaps[starts] = 0
    session = np.repeat(np.arange(len(counts)), counts)
    duration = np.bincount(session, gaps, minlength=len(counts)).astype(np.int64)
    longest = _SECONDS_PER_DAY - 1
    too_long = duration > longest
    if too_long.any():  # squeeze the gaps above 1 s so the session fits in the day
        squeeze = np.where(too_long, (longest - (counts - 1)) / np.maximum(duration - (counts - 1), 1), 1.0)
        gaps = np.where(gaps > 0, 1 + np.floor((gaps - 1) * squeeze[session]), 0).astype(np.int64)
        duration = np.bincount(session, gaps, minlength=len(counts)).astype(np.int64)
    elapsed = np.cumsum(gaps)
    elapsed -= np.repeat(elapsed[starts], counts)
    return np.repeat(rng.integers(0, _SECONDS_PER_DAY - duration), counts) + elapsed


def _rate(rng: np.random.Generator, world: _World, user_idx: np.ndarray, movie_idx: np.ndarray) -> np.ndarray:
    affinity = np.einsum("ij,ij->i", world.user_vectors[user_idx], world.movie_vectors[movie_idx])
    score = (
        _GLOBAL_MEAN
        + world.user_bias[user_idx]
        + world.movie_bias[movie_idx]
        + affinity
        + rng.normal(0.0, _NOISE_SD, len(user_idx)).astype(np.float32)
    )
    return np.clip(np.round(score * 2) / 2, 0.5, 5.0)


@contextlib.contextmanager
def _atomic_output(target: Path) -> Iterator[Path]:
    """Yield a temp path next to ``target`` and rename it into place only on success.

    Readers (and ``railyard run``, which generates data when ``ratings.csv`` is missing) never see
    half a data set.
    """
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        else:
            tmp.unlink(missing_ok=True)
