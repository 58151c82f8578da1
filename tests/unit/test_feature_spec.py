"""The declarations: the model's input layout, the store's hash fields, refused declarations, the
digest that versions folders, models and the store's keys, and a light import."""

import subprocess
import sys

import numpy as np
import pytest

from railyard import feature_spec as spec
from railyard.feature_spec import GENRES, Aggregate, DeclarationError
from tests.support import REPO_ROOT

G = len(GENRES)


def test_todays_aggregates_keep_their_slots_and_the_new_ones_come_after():
    assert spec.layout("user") == {
        "user_n": slice(0, 1),
        "user_rating_sum": slice(1, 2),
        "user_positives": slice(2, 3),
        "user_genre_n": slice(3, 3 + G),
        "user_genre_pos": slice(3 + G, 3 + 2 * G),
        "user_last_rating": slice(3 + 2 * G, 4 + 2 * G),
        "user_last_ts": slice(4 + 2 * G, 6 + 2 * G),  # a time: (UTC day, second of the day)
    }
    assert spec.layout("movie") == {
        "movie_n": slice(0, 1),
        "movie_rating_sum": slice(1, 2),
        "movie_positives": slice(2, 3),
        "movie_genres": slice(3, 3 + G),  # static, last
    }
    assert (spec.USER_WIDTH, spec.MOVIE_WIDTH) == (6 + 2 * G, 3 + G)
    assert spec.USER_FEATURES == tuple(spec.layout("user")) and spec.MOVIE_FEATURES == tuple(spec.layout("movie"))


def test_hash_fields_come_from_the_names_one_per_genre_for_genre_vectors():
    fields = [field for aggregate in spec.aggregates("user") for field in aggregate.fields]
    assert fields[:4] == ["n", "rating_sum", "positives", "genre_n.0"]
    assert fields[-2:] == ["last_rating", "last_ts"] and len(fields) == len(set(fields)) == 5 + 2 * G


def test_a_time_takes_two_exact_slots_in_the_float32_vector():
    last_ts = spec.layout("user")["user_last_ts"]
    times = np.array([[1_767_225_599], [1_767_225_600 + 86_399], [0]], np.int64)
    part = spec.vector_part(spec.aggregates("user")[-1], times).astype(np.float32)
    assert part.tolist() == [[20453, 86399], [20454, 86399], [0, 0]]
    assert last_ts.stop - last_ts.start == 2
    # float32 of the raw time would be 128 s off: the two slots give it back to the second
    assert float(np.float32(1_767_225_599)) != 1_767_225_599
    assert int(part[0, 0]) * 86_400 + int(part[0, 1]) == 1_767_225_599


@pytest.mark.parametrize(
    "declaration, problem",
    [
        (("rating_sq", "movie", "sum", ("rating", "rating")), "starting with 'movie_'"),
        (("movie_x", "film", "sum", ("one",)), "entity must be one of"),
        (("movie_x", "movie", "max", ("one",)), "kind must be one of"),
        (("movie_x", "movie", "sum", ("weight",)), "factors must be"),
        (("movie_x", "movie", "sum", ()), "factors must be"),
        (("user_x", "user", "sum", ("genres", "genres")), "once"),
        (("user_x", "user", "sum", ("timestamp",)), "only the latest one"),
        (("user_x", "user", "latest", ("timestamp", "rating")), "only the latest one"),
        (("movie_genres", "movie", "sum", ("one",)), "static"),
    ],
)
def test_a_declaration_the_pipeline_cannot_carry_is_refused_naming_why(declaration, problem):
    with pytest.raises(DeclarationError, match=problem):
        Aggregate(*declaration)


def test_a_name_declared_twice_is_refused(monkeypatch):
    monkeypatch.setattr(spec, "MOVIE_AGGREGATES", (*spec.MOVIE_AGGREGATES, spec.MOVIE_AGGREGATES[0]))
    with pytest.raises(DeclarationError, match="unique names"):
        spec.layout("movie")


def test_a_new_declaration_changes_the_layout_and_its_digest(monkeypatch):
    before = spec.layout_digest()
    assert spec.FEATURE_CODE_VERSION == f"{spec.SCHEMA_VERSION}-{before}" and spec.SCHEMA_VERSION == 3
    monkeypatch.setattr(
        spec,
        "MOVIE_AGGREGATES",
        (*spec.MOVIE_AGGREGATES, Aggregate("movie_rating_sq", "movie", "sum", ("rating", "rating"))),
    )
    assert spec.layout_digest() != before
    assert spec.layout("movie")["movie_rating_sq"] == slice(3, 4) and spec.layout("movie")["movie_genres"] == slice(
        4, 4 + G
    )
    assert spec.MOVIE_WIDTH == 4 + G


def test_the_declarations_import_nothing_heavy():
    """The online store's keys, the serving side and the CLI read them."""
    probe = "import sys, railyard.feature_spec; print(sorted({'numpy', 'polars', 'pyarrow'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
