"""Great Expectations suites: clean data passes; every kind of bad data is named with its count."""

import re
import time
from pathlib import Path

import polars as pl
import pytest

from railyard import events, features, validation
from railyard.configs import ValidationBounds
from railyard.loaders import RATINGS_SCHEMA

BOUNDS = ValidationBounds(min_rows=20, max_rows=10_000, min_positive_rate=0.1, max_positive_rate=0.9)


@pytest.fixture(params=[None, 37], ids=["whole", "sliced"])
def slice_rows(request, monkeypatch):
    """Both ways GX sees the rows: all at once, and in slices merged afterwards (37 rows each here)."""
    if request.param:
        monkeypatch.setattr(validation, "SLICE_ROWS", request.param)
    return request.param


def _clean(count: int = 200) -> pl.DataFrame:
    rows = [(1 + i % 17, 1 + i % 23, [1.5, 4.0, 3.0, 5.0][i % 4], 1_600_000_000 + i * 60) for i in range(count)]
    return pl.DataFrame(rows, schema=RATINGS_SCHEMA, orient="row")


def _replace_row(frame: pl.DataFrame, index: int, **values) -> pl.DataFrame:
    row = frame.row(index, named=True) | values
    return pl.concat([frame.slice(0, index), pl.DataFrame([row], schema=frame.schema), frame.slice(index + 1)])


def test_clean_ratings_pass_and_get_an_html_report(tmp_path):
    report = validation.validate_ratings(_clean(), BOUNDS, tmp_path)
    assert report.success and report.failures == [] and report.rows == 200
    assert report.evaluated >= 12
    html = report.html_report.read_text()
    assert report.html_report == tmp_path / "raw_ratings.html"
    assert "no duplicate (userId, movieId, timestamp) ratings" in html and "Succeeded" in html
    assert f"{report.evaluated}/{report.evaluated} expectations passed" in report.summary()


def test_gx_never_hashes_the_rows_it_validates(tmp_path, monkeypatch, slice_rows):
    """GX fingerprints every batch under 1 GB by hashing all its rows, for batch markers no one
    reads: 20 s of the two validations at 25M ratings."""
    from great_expectations.execution_engine import pandas_execution_engine

    def refused(frame):
        raise AssertionError(f"GX hashed {len(frame)} rows")

    monkeypatch.setattr(pandas_execution_engine, "hash_pandas_dataframe", refused)
    assert validation.validate_ratings(_clean(), BOUNDS, tmp_path).success


BAD_RATINGS = {
    "rating_out_of_range": (
        lambda f: _replace_row(f, 3, rating=7.0),
        "expect_column_values_to_be_between",
        "rating",
        1,
    ),
    "rating_not_half_star": (
        lambda f: _replace_row(f, 4, rating=3.3),
        "expect_column_values_to_be_in_set",
        "rating",
        1,
    ),
    "null_rating": (lambda f: _replace_row(f, 5, rating=None), "expect_column_values_to_not_be_null", "rating", 1),
    "duplicate_rows": (lambda f: pl.concat([f, f.slice(7, 2)]), "expect_compound_columns_to_be_unique", None, 4),
    "non_positive_user": (lambda f: _replace_row(f, 8, userId=0), "expect_column_values_to_be_between", "userId", 1),
    "future_timestamp": (
        lambda f: _replace_row(f, 9, timestamp=int(time.time()) + 30 * 86_400),
        "expect_column_values_to_be_between",
        "timestamp",
        1,
    ),
    "negative_timestamp": (
        lambda f: _replace_row(f, 6, timestamp=-5),
        "expect_column_values_to_be_between",
        "timestamp",
        1,
    ),
    "too_few_rows": (lambda f: f.head(10), "expect_table_row_count_to_be_between", None, None),
    "extra_column": (
        lambda f: f.with_columns(pl.lit("x").alias("comment")),
        "expect_table_columns_to_match_set",
        None,
        None,
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_RATINGS))
def test_each_kind_of_bad_ratings_is_named_with_its_count(case, tmp_path, slice_rows):
    mutate, expectation, column, unexpected = BAD_RATINGS[case]
    report = validation.validate_ratings(mutate(_clean()), BOUNDS, tmp_path)
    assert not report.success
    matching = [f for f in report.failures if f.expectation == expectation and f.column == column]
    assert len(matching) == 1, report.summary()
    assert matching[0].unexpected_count == unexpected
    assert expectation in report.summary()


def test_a_negative_timestamp_is_called_negative(tmp_path, slice_rows):
    report = validation.validate_ratings(_replace_row(_clean(), 6, timestamp=-5), BOUNDS, tmp_path)
    assert "not negative, not in the future: 1 unexpected rows (data rows 7), e.g. [-5]" in report.summary()


def test_error_message_names_each_failed_expectation_and_the_report(tmp_path, slice_rows):
    bad = _replace_row(pl.concat([_clean(), _clean().slice(0, 1)]), 2, rating=9.5)
    report = validation.validate_ratings(bad, BOUNDS, tmp_path)
    with pytest.raises(validation.DataValidationError) as raised:
        validation.raise_for_failures(report)
    message = str(raised.value)
    assert "no duplicate (userId, movieId, timestamp) ratings: 2 unexpected rows (data rows 1, 201)" in message
    assert "rating within 0.5..5.0: 1 unexpected rows (data rows 3), e.g. [9.5]" in message
    assert str(tmp_path / "raw_ratings.html") in message
    assert raised.value.reports == [report]


def _feature_set() -> features.FeatureSet:
    ratings = _clean(400)
    return features.build_features(ratings, None, holdout_fraction=0.25)


def test_built_features_pass_both_suites(tmp_path, slice_rows):
    built = _feature_set()
    train, holdout = validation.validate_features(built.train, built.holdout, built.cutoff_ts, BOUNDS, tmp_path)
    assert train.success and holdout.success, train.summary() + holdout.summary()
    assert {p.name for p in tmp_path.iterdir()} == {"features_train.html", "features_holdout.html", "index.html"}


def test_label_balance_outside_bounds_fails(tmp_path, slice_rows):
    built = _feature_set()
    skewed = built.train.with_columns(pl.lit(1.0, pl.Float32).alias("label"))
    report, _ = validation.validate_features(skewed, built.holdout, built.cutoff_ts, BOUNDS, tmp_path)
    (failure,) = report.failures
    assert failure.expectation == "expect_column_mean_to_be_between" and failure.observed == 1.0


def test_a_training_row_after_the_cutoff_fails_the_split_check(tmp_path, slice_rows):
    built = _feature_set()
    leaked = built.train.vstack(built.holdout.head(1))
    report, _ = validation.validate_features(leaked, built.holdout, built.cutoff_ts, BOUNDS, tmp_path)
    assert [f.expectation for f in report.failures] == ["expect_column_max_to_be_between"]


def test_genre_vectors_outside_zero_one_fail(tmp_path, slice_rows):
    built = _feature_set()
    width = len(features.GENRES)
    broken = built.holdout.with_columns(pl.lit([2.0] * width, pl.Array(pl.Float32, width)).alias("movie_genres"))
    _, report = validation.validate_features(built.train, broken, built.cutoff_ts, BOUNDS, tmp_path)
    assert {f.column for f in report.failures} == {"movie_genres_min", "movie_genres_max"}
    assert all(f.unexpected_count == len(broken) for f in report.failures)


def test_slices_report_what_the_whole_table_reports(tmp_path, monkeypatch):
    # Duplicates 180 rows apart land in one slice; counts, rows and examples add up over slices.
    bad = pl.concat([_clean(), _clean().slice(10, 1)])
    for row in (20, 60, 150):
        bad = _replace_row(bad, row, rating=9.5)
    bad = _replace_row(bad, 100, rating=None)
    whole = validation.validate_ratings(bad, BOUNDS, tmp_path / "whole")
    monkeypatch.setattr(validation, "SLICE_ROWS", 30)
    sliced = validation.validate_ratings(bad, BOUNDS, tmp_path / "sliced")
    assert [f.line() for f in sliced.failures] == [f.line() for f in whole.failures]  # (a null example is nan)
    assert len(whole.failures) == 4, whole.summary()
    out_of_range = next(f for f in sliced.failures if f.expectation == "expect_column_values_to_be_between")
    assert (out_of_range.unexpected_count, out_of_range.rows, out_of_range.examples) == (3, [21, 61, 151], [9.5] * 3)
    assert "(data rows 11, 201)" in sliced.summary()
    assert sliced.html_report.read_text().count("Failed") == whole.html_report.read_text().count("Failed")


@pytest.mark.parametrize(
    "timestamp",
    [
        lambda now: 0,
        lambda now: now,
        lambda now: now + events.MAX_CLOCK_SKEW_S,
        lambda now: now + events.MAX_CLOCK_SKEW_S + 1,
        lambda now: now + 2 * 86_400,
        lambda now: now + 365 * 86_400,
        lambda now: 10**11,
        lambda now: -1,
    ],
    ids=["epoch", "now", "skew", "past_skew", "two_days", "a_year", "1e11", "negative"],
)
def test_the_batch_accepts_exactly_the_timestamps_the_stream_accepts(timestamp, tmp_path):
    """One rule set: what `publish-events` and the ingester let through, the retrain validates."""
    now = int(time.time())
    stamp = timestamp(now)
    rows = _replace_row(_clean(), 9, timestamp=stamp, userId=2**63 - 1)
    batch = validation.run_suite("raw", rows, validation.ratings_expectations(BOUNDS, now_ts=now), tmp_path)
    fields = {"userId": str(2**63 - 1), "movieId": "3", "rating": "4.0", "timestamp": str(stamp)}
    try:
        events.parse_event(fields, now=now)
        stream = True
    except events.MalformedEvent:
        stream = False
    assert batch.success == stream, batch.summary()


def test_the_loader_and_the_validation_number_a_row_alike(tmp_path, slice_rows):
    """One numbering for a row: the data row counted from 1 after the header (data row N is line
    N + 1 of ratings.csv, what `sed -n` shows), in the loader's messages, the validation's and
    publish-events'."""
    from infra.online_store.stream import read_event_file
    from railyard.loaders import DataLoadError, load_dataset

    rows = [f"{1 + i % 17},{1 + i % 23},4.0,{1_600_000_000 + i * 60}" for i in range(40)]
    unparsable, out_of_range = rows.copy(), rows.copy()
    unparsable[16] = "17,17,good,1600000960"  # data row 17, line 18
    out_of_range[16] = "17,17,7.0,1600000960"
    for name, lines in (("unparsable", unparsable), ("out_of_range", out_of_range)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(lines) + "\n")
    assert (tmp_path / "out_of_range" / "ratings.csv").read_text().splitlines()[18 - 1] == "17,17,7.0,1600000960"

    with pytest.raises(DataLoadError, match=r"data row 17 \(line 18\) holds 'good'"):
        load_dataset(tmp_path / "unparsable")
    report = validation.validate_ratings(load_dataset(tmp_path / "out_of_range").ratings, BOUNDS, tmp_path / "reports")
    (failure,) = [f for f in report.failures if f.expectation == "expect_column_values_to_be_between"]
    assert failure.rows == [17]
    assert "rating within 0.5..5.0: 1 unexpected rows (data rows 17), e.g. [7.0]" in report.summary()
    with pytest.raises(DataLoadError, match="ratings.csv: data row 17: rating_out_of_range"):
        read_event_file(tmp_path / "out_of_range" / "ratings.csv")


def _assets(html: str) -> list[str]:
    """What a browser loads to show the page: style sheets, scripts, images, icons."""
    tags = re.findall(r"<(?:link|script|img)\b[^>]*>", html)
    return [url for tag in tags for url in re.findall(r'(?:src|href)="([^"]*)"', tag)]


def test_a_report_page_needs_no_network_and_says_which_run_it_belongs_to(tmp_path):
    """Data Docs load Bootstrap, jQuery and the logo from CDNs; Railyard's pages carry them."""
    report_dir = tmp_path / "reports" / "flow-run-42"
    page = validation.validate_ratings(
        _replace_row(_clean(), 3, rating=7.0), BOUNDS, report_dir
    ).html_report.read_text()
    assert [url for url in _assets(page) if not url.startswith("data:")] == []
    assert "Bootstrap v4" in page and "jQuery v3" in page  # inline, in the page itself
    assert ".fa-check-circle::before" in page  # the pass/fail icons without Font Awesome's font
    assert "__none__" not in page
    run_name = re.search(r"Run Name</div></td><td[^>]*><div[^>]*>([^<]*)<", page).group(1)
    run_time = re.search(r"Run Time</div></td><td[^>]*><div[^>]*>([^<]*)<", page).group(1)
    assert run_name == "flow-run-42" and run_time.startswith(time.strftime("%Y-%m-%dT", time.gmtime()))


def test_home_leads_to_an_index_of_the_runs_reports(tmp_path):
    built = _feature_set()
    validation.validate_ratings(_clean(), BOUNDS, tmp_path)
    validation.validate_features(built.train, built.holdout, built.cutoff_ts, BOUNDS, tmp_path)
    for page in ("raw_ratings.html", "features_train.html"):
        links = re.findall(r'<a [^>]*href="([^"#]+)"', (tmp_path / page).read_text())
        local = [link for link in links if not link.startswith("https://")]
        assert "index.html" in local and all((tmp_path / link).exists() for link in local), (page, local)
    index = (tmp_path / "index.html").read_text()
    links = re.findall(r'<a href="([^"]*)"', index)
    assert sorted(links) == ["features_holdout.html", "features_train.html", "raw_ratings.html"]
    assert all(Path(tmp_path, link).exists() for link in links)
    assert [url for url in _assets(index) if not url.startswith("data:")] == []


def _partitions(root: Path, days: list[pl.DataFrame]) -> Path:
    for day, frame in enumerate(days):
        folder = root / "ratings" / f"date=2020-09-{day + 13:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(folder / "part-0.parquet")
    return root


def test_partitions_that_passed_before_unchanged_are_not_checked_row_by_row_again(tmp_path, slice_rows):
    """A data set of date partitions grows by a day: the new day is checked row by row (a bad
    row there is found, numbered in the whole table); a changed old partition, another suite or
    a failed run means every row from there is checked again."""
    from railyard.loaders import load_dataset

    clean = _clean(300)
    days = [clean.slice(0, 100), clean.slice(100, 100), clean.slice(200, 100)]
    record = tmp_path / "validation" / "raw_ratings.json"

    def validate(data: Path, bounds: ValidationBounds = BOUNDS) -> validation.ValidationReport:
        dataset = load_dataset(data)
        return validation.validate_new_ratings(dataset.ratings, dataset.file_rows, bounds, tmp_path / "r", record)

    first = validate(_partitions(tmp_path / "d", days[:2]))
    assert first.success and first.passed_before == 0 and record.is_file()
    grown = validate(_partitions(tmp_path / "d", days))
    assert grown.success and grown.passed_before == 200 and grown.rows == 300
    assert "row by row on the last 100" in grown.summary()

    # A bad row in the new day is found, at its row of the whole table; the record stays as it was.
    bad_day = _replace_row(days[2], 5, rating=7.0)
    failed = validate(_partitions(tmp_path / "d", [*days[:2], bad_day]))
    assert not failed.success and failed.passed_before == 200
    assert "rating within 0.5..5.0: 1 unexpected rows (data rows 206), e.g. [7.0]" in failed.summary()
    assert all(failure.column == "rating" for failure in failed.failures)

    # A bad row written into an old day after it passed: its file's bytes changed, so it is checked.
    changed = validate(_partitions(tmp_path / "e", [_replace_row(days[0], 7, rating=9.0), *days[1:]]))
    assert not changed.success and changed.passed_before == 0
    assert validate(_partitions(tmp_path / "f", days)).passed_before == 300  # all three passed last: none checked again
    # Another suite (other bounds) checks every row.
    other = ValidationBounds(min_rows=10, max_rows=10_000, min_positive_rate=0.1, max_positive_rate=0.9)
    assert validate(tmp_path / "f", other).passed_before == 0
