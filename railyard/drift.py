"""Drift between training windows: the statistics of a window of ratings, kept with every version,
and the check of a new window against production's (TFX's data validation drift comparator, in
the small).

**The statistics** (plain JSON, schema ``SCHEMA``, docs/architecture.md "Data statistics") describe
the run's data in two parts:

- ``window``: all of it: rows, first and last day, and the events per UTC day (the newest
  ``KEPT_DAYS`` days);
- ``span``: its newest ``span_days`` UTC days (what the run adds to the data production learned
  from), with everything before them as history: row count, label rate, the share of events by
  users and on movies with no earlier event (new-user and new-movie shares), per raw column
  (``rating``: count, missing, mean, std, a histogram over the half stars; ``userId`` and
  ``movieId``: count, distinct values, the top values and their shares; ``genres``, when the
  movies are known: every genre's share of the events), and per declared aggregate of
  ``railyard.feature_spec`` over the span's entities (their totals over the span: count, mean,
  std and a histogram over fixed powers of two; a per-genre aggregate as its shares over the
  genres; times are left out: a window's times say when, not what).

They are put together from parts that each hold whole users (``user_part``) or whole movies
(``movie_part``): one part each over all the ratings on one machine (``statistics``), one per
partition of the Dask build (``PartitionedStatistics``, the build's per-key hook), merged the
same way (``merged``), so both engines give the same numbers.

**The check** (``compare``) measures, per feature, a distance suited to it: Jensen-Shannon
distance (base 2, 0 to 1) between histograms; L-infinity between top-value shares (as TFDV does
for categories); the absolute difference of a rate or share; for events per day, the largest
relative change of a day after the reference's window against the reference span's mean. Each
has a ``warn`` and a ``block`` threshold (``DriftThresholds``: the settings' defaults per feature,
and per kind of feature for the declared aggregates); ``Verdict`` names what crossed which.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from railyard import feature_spec as spec
from railyard import features as F
from railyard.configs import DriftThresholds
from railyard.errors import Refused

SCHEMA = "railyard.data-statistics/1"
STATISTICS_FILE = "assets.extra/railyard_data_statistics.json"  # in the version, under its manifest
DAY_S = spec.DAY_S
KEPT_DAYS = 400  # events per day kept for the window: the newest days only (kilobytes, not a history)
TOP_VALUES = 20  # top ids kept per id column
RATING_VALUES = tuple(x / 2 for x in range(1, 11))  # the half stars a rating may take (railyard.events)
# Fixed histogram edges for the declared aggregates (counts and sums, all >= 0): 0, then powers of
# two, so two windows' histograms always share their bins.
AGGREGATE_EDGES = (0.0, *(2.0**k for k in range(-1, 25)))
LEVELS = ("pass", "warn", "block")
# New: a user whose first event is in the span; a movie whose first event is at most a week
# before it (a film is rated for weeks after its release, a user mostly on the day they arrive).
NEW_WITHIN_DAYS = {"user": 0, "movie": 7}


# -- the statistics ------------------------------------------------------------------------------


def day_of(ts: int) -> str:
    return datetime.fromtimestamp(ts - ts % DAY_S, UTC).date().isoformat()


def span_start(newest_ts: int, span_days: int) -> int:
    """The first second of the span: the newest ``span_days`` UTC days of the data."""
    return (newest_ts // DAY_S - span_days + 1) * DAY_S


def events_per_day(timestamps: pl.Series) -> Counter:
    """UTC day number -> events."""
    return Counter(dict((timestamps // DAY_S).value_counts().iter_rows()))


def statistics(ratings: pl.DataFrame, movies: pl.DataFrame | None, span_days: int) -> dict:
    """The statistics of ``ratings`` (distinct events, as the loaders give them) on one machine."""
    genres = genre_table(movies)
    days = events_per_day(ratings.get_column("timestamp"))
    start = span_start(max(days) * DAY_S, span_days)
    return merged([user_part(ratings, genres, start)], [movie_part(ratings, genres, start)], days, start)


def genre_table(movies: pl.DataFrame | None) -> pl.DataFrame | None:
    """The movies' genre flags (``features.movie_genres``), or None when the movies are unknown."""
    return F.movie_genres(movies) if movies is not None else None


def user_part(ratings: pl.DataFrame, genres: pl.DataFrame | None, start: int) -> dict:
    """The row-level sums of the span's events and their users' (``ratings`` holds whole users)."""
    span = ratings.filter(pl.col("timestamp") >= start)
    rating = span.get_column("rating").cast(pl.Float64)
    part = {
        "rows": span.height,
        "missing": {column: span.get_column(column).null_count() for column in ("userId", "movieId", "rating")},
        "positives": int((rating >= spec.POSITIVE_RATING).sum()),
        "rating_sum": float(rating.sum()),
        "rating_squares": float((rating**2).sum()),
        "rating_counts": _counts_at(rating, RATING_VALUES),
    } | _entity_part(ratings, span, "user", genres, start)
    if genres is not None:
        flags = span.select("movieId").join(genres, on="movieId", how="left").drop("movieId").fill_null(0)
        part["genre_events"] = flags.sum().row(0)
    return part


def movie_part(ratings: pl.DataFrame, genres: pl.DataFrame | None, start: int) -> dict:
    """The span's movies' sums (``ratings`` holds whole movies)."""
    return _entity_part(ratings, ratings.filter(pl.col("timestamp") >= start), "movie", genres, start)


def _entity_part(ratings: pl.DataFrame, span: pl.DataFrame, entity: str, genres, start: int) -> dict:
    key = spec.ENTITIES[entity]
    first = ratings.group_by(key).agg(pl.col("timestamp").min().alias("first"))
    per_key = span.group_by(key).agg(pl.len().alias("events")).join(first, on=key)
    new = per_key.filter(pl.col("first") >= start - NEW_WITHIN_DAYS[entity] * DAY_S)
    top = per_key.sort(["events", key], descending=[True, False]).head(TOP_VALUES)
    totals = _totals(span, entity, genres)
    return {
        entity: {
            "distinct": per_key.height,
            "new": new.height,
            "new_events": int(new.get_column("events").sum()),
            "top": [[int(k), int(n)] for k, n in top.select(key, "events").iter_rows()],
            "aggregates": {name: _aggregate_sums(totals.get_column(name)) for name in totals.columns if name != key},
        }
    }


def _totals(span: pl.DataFrame, entity: str, genres) -> pl.DataFrame:
    """Each of the span's entities' declared aggregates over the span (times left out)."""
    genre_table = genres if genres is not None else F.movie_genres(None)
    rows = F.labelled(span)
    totals = (F.user_totals if entity == "user" else F.movie_totals)(rows, genre_table)
    keep = [a.name for a in spec.aggregates(entity) if not a.is_time and (genres is not None or not a.per_genre)]
    return totals.select(spec.ENTITIES[entity], *keep)


def _aggregate_sums(values: pl.Series) -> dict:
    """Mergeable sums of one aggregate over entities: a per-genre one as its totals per genre."""
    if isinstance(values.dtype, pl.Array):
        matrix = values.to_numpy().astype(np.float64).reshape(len(values), -1)
        return {"per_genre": matrix.sum(axis=0).tolist()}
    x = values.cast(pl.Float64).to_numpy()
    counts = np.histogram(x, bins=[*AGGREGATE_EDGES, math.inf])[0] if len(x) else np.zeros(len(AGGREGATE_EDGES))
    return {"count": len(x), "sum": float(x.sum()), "squares": float((x * x).sum()), "histogram": counts.tolist()}


def _counts_at(values: pl.Series, points: Sequence[float]) -> list[int]:
    counts = dict(values.value_counts().iter_rows())
    return [int(counts.get(point, 0)) for point in points]


def merged(user_parts: Sequence[dict], movie_parts: Sequence[dict], days: Counter, start: int) -> dict:
    """The statistics from the parts (user parts hold the row-level sums) and the events per day."""
    rows = sum(part["rows"] for part in user_parts)
    users, movies = _merge_entity([p["user"] for p in user_parts]), _merge_entity([p["movie"] for p in movie_parts])
    ratings = sum(np.asarray(p["rating_counts"], np.int64) for p in user_parts)
    rating_sum = sum(p["rating_sum"] for p in user_parts)
    mean = rating_sum / rows if rows else None
    squares = sum(p["rating_squares"] for p in user_parts)
    newest = max(days)
    kept = sorted(day for day in days if day > newest - KEPT_DAYS)
    columns = {
        "rating": {
            "kind": "numeric",
            "count": rows,
            "missing": sum(p["missing"]["rating"] for p in user_parts),
            "mean": mean,
            "std": _std(rows, rating_sum, squares),
            "histogram": {"values": list(RATING_VALUES), "counts": ratings.tolist()},
        },
        "userId": _id_column(users, rows, sum(p["missing"]["userId"] for p in user_parts)),
        "movieId": _id_column(movies, rows, sum(p["missing"]["movieId"] for p in user_parts)),
    }
    genre_events = [p["genre_events"] for p in user_parts if "genre_events" in p]
    if genre_events:
        totals = np.sum(genre_events, axis=0)
        columns["genres"] = {"kind": "categorical", "count": rows, "top": _shares(spec.GENRES, totals, rows)}
    return {
        "schema": SCHEMA,
        "window": {
            "rows": sum(days.values()),
            "first_day": day_of(min(days) * DAY_S),
            "last_day": day_of(newest * DAY_S),
            "events_per_day": {day_of(day * DAY_S): days[day] for day in kept},
        },
        "span": {
            "first_day": day_of(start),
            "last_day": day_of(newest * DAY_S),
            "days": newest - start // DAY_S + 1,
            "rows": rows,
            "label_rate": sum(p["positives"] for p in user_parts) / rows if rows else None,
            "new_user_share": users["new_events"] / rows if rows else None,
            "new_movie_share": movies["new_events"] / rows if rows else None,
            "users": users["distinct"],
            "new_users": users["new"],
            "movies": movies["distinct"],
            "new_movies": movies["new"],
            "columns": columns,
            "features": {
                name: _feature(sums, count)
                for entity, count in ((users, users["distinct"]), (movies, movies["distinct"]))
                for name, sums in entity["aggregates"].items()
            },
        },
    }


def _merge_entity(parts: Sequence[dict]) -> dict:
    top = sorted((pair for part in parts for pair in part["top"]), key=lambda pair: (-pair[1], pair[0]))[:TOP_VALUES]
    aggregates: dict[str, dict] = {}
    for part in parts:
        for name, sums in part["aggregates"].items():
            into = aggregates.setdefault(name, {})
            for key, value in sums.items():
                into[key] = (np.asarray(into[key]) + np.asarray(value)).tolist() if key in into else value
    return {key: sum(part[key] for part in parts) for key in ("distinct", "new", "new_events")} | {
        "top": top,
        "aggregates": aggregates,
    }


def _id_column(entity: dict, rows: int, missing: int) -> dict:
    return {
        "kind": "categorical",
        "count": rows,
        "missing": missing,
        "distinct": entity["distinct"],
        "top": [[value, events / rows] for value, events in entity["top"]] if rows else [],
    }


def _feature(sums: dict, entities: int) -> dict:
    if "per_genre" in sums:
        total = float(np.sum(sums["per_genre"]))
        return {"kind": "categorical", "count": entities, "top": _shares(spec.GENRES, sums["per_genre"], total)}
    count = sums["count"]
    return {
        "kind": "numeric",
        "count": count,
        "missing": 0,
        "mean": sums["sum"] / count if count else None,
        "std": _std(count, sums["sum"], sums["squares"]),
        "histogram": {"edges": list(AGGREGATE_EDGES), "counts": [int(c) for c in sums["histogram"]]},
    }


def _shares(names: Sequence[str], totals, whole: float) -> list:
    return [[name, float(total) / whole if whole else 0.0] for name, total in zip(names, totals)]


def _std(count: int, total: float, squares: float) -> float | None:
    if not count:
        return None
    return math.sqrt(max(squares / count - (total / count) ** 2, 0.0))


@dataclass(frozen=True)
class PartitionedStatistics:
    """The statistics on the Dask build's partitions (``railyard.partitioned.PerKey``):
    ``planned`` fixes the span once the driver knows the events per day."""

    genres: pl.DataFrame | None
    span_days: int
    days: Counter = field(default_factory=Counter)
    start: int = 0

    def planned(self, days: Counter) -> PartitionedStatistics:
        return PartitionedStatistics(self.genres, self.span_days, days, span_start(max(days) * DAY_S, self.span_days))

    def users(self, ratings: pl.DataFrame) -> dict:
        return user_part(ratings, self.genres, self.start)

    def movies(self, ratings: pl.DataFrame) -> dict:
        return movie_part(ratings, self.genres, self.start)

    def merged(self, users: list, movies: list) -> dict:
        return merged(users, movies, self.days, self.start)


# -- the check -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measure:
    feature: str
    distance: float
    kind: str  # "js" | "linf" | "difference" | "day_change"
    warn: float
    block: float
    worst: str = ""  # what moved most (a value, a genre, a day)

    @property
    def level(self) -> str:
        return "block" if self.distance > self.block else "warn" if self.distance > self.warn else "pass"

    def line(self) -> str:
        where = f" ({self.worst})" if self.worst else ""
        return f"{self.feature}: {self.kind} {self.distance:.3f}{where} > {self.level} {self.threshold:g}"

    @property
    def threshold(self) -> float:
        return self.block if self.level == "block" else self.warn


@dataclass(frozen=True)
class Verdict:
    """The check's result: every feature's distance and thresholds, worst first."""

    measures: tuple[Measure, ...]
    reference: str  # what the window was compared with, e.g. "production version 3"
    override: str = ""  # the recorded reason a block was overridden

    @property
    def level(self) -> str:
        return max((m.level for m in self.measures), key=LEVELS.index, default="pass")

    def crossed(self) -> list[Measure]:
        """The features past their warn or block threshold, worst first."""
        return [m for m in self.measures if m.level != "pass"]

    def summary(self) -> str:
        if self.level == "pass":
            return f"no drift against {self.reference}"
        lines = "; ".join(m.line() for m in self.crossed())
        return f"drift against {self.reference}: {lines}"

    def as_dict(self) -> dict:
        return {
            "level": self.level,
            "reference": self.reference,
            "override": self.override,
            "features": [
                {
                    "feature": m.feature,
                    "distance": m.distance,
                    "kind": m.kind,
                    "warn": m.warn,
                    "block": m.block,
                    "level": m.level,
                    "worst": m.worst,
                }
                for m in self.measures
            ],
        }


def verdict_lineage(verdict: Verdict | None) -> dict[str, str]:
    """What a version's lineage records of the drift check (an override and its reason included)."""
    if verdict is None:
        return {"drift": "unchecked"}
    return {"drift": verdict.level} | ({"drift_override": verdict.override} if verdict.override else {})


class DataDrift(Refused):
    """The new window's data drifted past a block threshold: nothing was trained or published."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(f"training refused, the data drifted past its block thresholds: {verdict.summary()}")
        self.verdict = verdict
        self.next_step = (
            "inspect the new data (the run's drift/ artifacts in MLflow name each feature); if the change is real, "
            "re-run with RAILYARD_DRIFT_OVERRIDE='why' (recorded in the version's lineage and its review request)"
        )


def compare(new: dict, reference: dict, thresholds: DriftThresholds, reference_name: str) -> Verdict:
    """The new statistics' span against the reference's, feature by feature, worst first."""
    for stats in (new, reference):
        if stats.get("schema") != SCHEMA:
            raise ValueError(f"statistics of schema {stats.get('schema')!r}, expected {SCHEMA!r}")
    a, b = new["span"], reference["span"]
    measures = [
        _difference("label_rate", a, b, thresholds),
        _difference("new_user_share", a, b, thresholds),
        _difference("new_movie_share", a, b, thresholds),
        _day_change(new["window"], reference, thresholds),
    ]
    for group in ("columns", "features"):
        for name, stats in a[group].items():
            if name in b[group]:
                measures.append(_distance(name, stats, b[group][name], thresholds))
    measures = [m for m in measures if m is not None]
    order = sorted(measures, key=lambda m: (-LEVELS.index(m.level), -m.distance / max(m.block, 1e-12)))
    return Verdict(tuple(order), reference_name)


def _difference(name: str, a: dict, b: dict, thresholds: DriftThresholds) -> Measure | None:
    if a.get(name) is None or b.get(name) is None:
        return None
    warn, block = thresholds.of(name, "difference")
    return Measure(name, abs(a[name] - b[name]), "difference", warn, block, f"{b[name]:.3f} -> {a[name]:.3f}")


def _day_change(window: dict, reference: dict, thresholds: DriftThresholds) -> Measure | None:
    """The days after the reference's window (a day with no events counts as 0) against the
    reference span's mean events per day: the largest relative change."""
    span = reference["span"]
    if not span["rows"]:
        return None
    mean = span["rows"] / span["days"]
    after = datetime.fromisoformat(reference["window"]["last_day"]).date()
    last = datetime.fromisoformat(window["last_day"]).date()
    counts = window["events_per_day"]
    changes = [
        (abs(counts.get(day.isoformat(), 0) - mean) / mean, day.isoformat())
        for day in (after.fromordinal(n) for n in range(after.toordinal() + 1, last.toordinal() + 1))
    ]
    distance, worst = max(changes, default=(0.0, ""))
    warn, block = thresholds.of("events_per_day", "day_change")
    return Measure("events_per_day", distance, "day_change", warn, block, worst and f"{worst}: {counts.get(worst, 0)}")


def _distance(name: str, a: dict, b: dict, thresholds: DriftThresholds) -> Measure:
    if a["kind"] == "numeric":
        p, q = np.asarray(a["histogram"]["counts"], float), np.asarray(b["histogram"]["counts"], float)
        warn, block = thresholds.of(name, "js")
        distance, bin_ = js_distance(p, q)
        bins = a["histogram"].get("values") or a["histogram"]["edges"]
        return Measure(name, distance, "js", warn, block, f"bin {bins[bin_]:g}" if bin_ is not None else "")
    warn, block = thresholds.of(name, "linf")
    distance, worst = linf_distance(dict(map(tuple, a["top"])), dict(map(tuple, b["top"])))
    return Measure(name, distance, "linf", warn, block, str(worst) if worst is not None else "")


def js_distance(p: np.ndarray, q: np.ndarray) -> tuple[float, int | None]:
    """Jensen-Shannon distance (base 2: 0 equal, 1 disjoint) of two histograms' counts, and the
    bin whose share moved most. An empty histogram is at distance 0 from anything."""
    if p.sum() == 0 or q.sum() == 0:
        return 0.0, None
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        inside = x > 0
        return float(np.sum(x[inside] * np.log2(x[inside] / m[inside])))

    return math.sqrt(max((kl(p) + kl(q)) / 2, 0.0)), int(np.argmax(np.abs(p - q)))


def linf_distance(a: Mapping, b: Mapping) -> tuple[float, object]:
    """L-infinity between two top-value share lists (a value absent from one has share 0 there)."""
    changes = [(abs(a.get(value, 0.0) - b.get(value, 0.0)), value) for value in {*a, *b}]
    return max(changes, key=lambda change: (change[0], str(change[1])), default=(0.0, None))


def table_markdown(verdict: Verdict, limit: int = 12) -> str:
    """The drift table: the largest distances (every crossed one), for the review and the gate."""
    shown = verdict.crossed()
    shown += [m for m in verdict.measures if m.level == "pass"][: max(limit - len(shown), 0)]
    lines = ["| feature | distance | measure | warn | block | level | moved most |", "|---|---|---|---|---|---|---|"]
    lines += [
        f"| {m.feature} | {m.distance:.3f} | {m.kind} | {m.warn:g} | {m.block:g} | "
        f"{m.level if m.level == 'pass' else '**' + m.level + '**'} | {m.worst} |"
        for m in shown
    ]
    return "\n".join(lines)


def distributions(feature: str, new: dict, reference: dict, limit: int = 12) -> tuple[list[str], list, list]:
    """A feature's two distributions as (labels, new shares, reference shares), for the picture."""
    a, b = new["span"], reference["span"]
    if feature == "events_per_day":
        days = list(new["window"]["events_per_day"].items())[-limit:]
        mean = b["rows"] / b["days"] if b["days"] else 0
        return [day for day, _ in days], [count for _, count in days], [mean] * len(days)
    if feature not in a["columns"] and feature not in a["features"]:
        return [feature], [a[feature]], [b[feature]]  # a rate or a share
    x = a["columns"].get(feature) or a["features"][feature]
    y = b["columns"].get(feature) or b["features"][feature]
    if x["kind"] == "numeric":
        labels = [f"{v:g}" for v in (x["histogram"].get("values") or x["histogram"]["edges"])]
        p, q = (np.asarray(s["histogram"]["counts"], float) for s in (x, y))
        used = np.flatnonzero((p > 0) | (q > 0))
        used = range(used.min(), used.max() + 1) if len(used) else range(0)
        return [labels[i] for i in used], [p[i] / max(p.sum(), 1) for i in used], [q[i] / max(q.sum(), 1) for i in used]
    shares_a, shares_b = dict(map(tuple, x["top"])), dict(map(tuple, y["top"]))
    values = sorted({*shares_a, *shares_b}, key=lambda v: -max(shares_a.get(v, 0), shares_b.get(v, 0)))[:limit]
    return [str(v) for v in values], [shares_a.get(v, 0.0) for v in values], [shares_b.get(v, 0.0) for v in values]


def plot(verdict: Verdict, new: dict, reference: dict, path: Path, limit: int = 10) -> Path:
    """One picture: the largest distances against their thresholds, and the worst feature's two
    distributions (new window and reference)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers and CI
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    shown = list(verdict.measures[:limit])[::-1]
    colours = {"pass": "tab:green", "warn": "tab:orange", "block": "tab:red"}
    rows = range(len(shown))
    left.barh(rows, [m.distance for m in shown], color=[colours[m.level] for m in shown])
    left.scatter([m.warn for m in shown], rows, marker="|", s=200, color="tab:orange", label="warn")
    left.scatter([m.block for m in shown], rows, marker="|", s=200, color="tab:red", label="block")
    left.set_yticks(list(rows), [f"{m.feature} ({m.kind})" for m in shown])
    left.set(xlabel="distance", title=f"drift against {verdict.reference}: {verdict.level}")
    left.legend(loc="lower right")
    if verdict.measures:
        worst = verdict.measures[0]
        labels, p, q = distributions(worst.feature, new, reference)
        at = np.arange(len(labels))
        right.bar(at - 0.2, q, width=0.4, label=f"reference ({reference['span']['last_day']})")
        right.bar(at + 0.2, p, width=0.4, label=f"new ({new['span']['last_day']})")
        right.set_xticks(at, labels, rotation=60, ha="right", fontsize=8)
        unit = "events" if worst.feature == "events_per_day" else "share"
        right.set(title=f"{worst.feature}: {worst.kind} {worst.distance:.3f}", ylabel=unit)
        right.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def write_statistics(statistics: dict, version_dir: Path) -> None:
    """The statistics into a version's folder before it is published (its manifest covers them)."""
    target = Path(version_dir) / STATISTICS_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(statistics, indent=1, sort_keys=True))
