"""Great Expectations 1.x suites on the raw ratings and on the built features.

Each suite runs in an ephemeral GX context (no project folder to manage) and yields a
`ValidationReport`: what failed, with its unexpected count and examples, plus an HTML report
rendered by GX's own renderer. `raise_for_failures` turns failed reports into one readable error.

The HTML report is a Data Docs validation page that works offline and on its own (as an MLflow
artifact too): GX's templates load Bootstrap, jQuery and more from CDNs, so the page carries
Bootstrap 4 and jQuery inline instead (from the `bootstrap-flask` package), its logo as a data
URI, plain-character icons for Font Awesome's; it names the run (its report folder) and the time;
Home is the folder's `index.html`, which lists the folder's reports.

Array feature columns are checked through per-row min/max columns derived first, because GX's
pandas engine compares scalars only.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import html
import json
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib.util import find_spec
from pathlib import Path

import polars as pl

from railyard import events as rules
from railyard.configs import ValidationBounds
from railyard.errors import Refused
from railyard.fsutil import atomic_write_text, sha256_file

_EXAMPLES = 5
SLICE_ROWS = 2_000_000  # rows GX's pandas engine holds at a time
_STATISTICS = ("evaluated_expectations", "successful_expectations", "unsuccessful_expectations", "success_percent")


@dataclass(frozen=True)
class ExpectationFailure:
    expectation: str  # GX expectation type, e.g. expect_column_values_to_be_between
    description: str  # what was expected, in words
    column: str | None
    unexpected_count: int | None  # rows that broke it (None for table-level expectations)
    observed: object  # the observed value for aggregate expectations (mean, row count, ...)
    examples: list = field(default_factory=list)
    # The first unexpected rows, as data rows counted from 1 (a CSV's first row after its header
    # is data row 1, on line 2): the numbering the loader's messages use.
    rows: list[int] = field(default_factory=list)

    def line(self) -> str:
        target = f"(column={self.column})" if self.column else ""
        if self.unexpected_count is not None:
            outcome = f"{self.unexpected_count} unexpected rows"
            if self.rows:
                outcome += f" (data rows {', '.join(map(str, self.rows))})"
            if self.examples:
                outcome += f", e.g. {self.examples}"
        else:
            outcome = f"observed {self.observed!r}"
        return f"{self.expectation}{target}: {self.description}: {outcome}"


@dataclass(frozen=True)
class ValidationReport:
    suite: str
    success: bool
    evaluated: int  # expectations run
    rows: int
    failures: list[ExpectationFailure]
    html_report: Path
    passed_before: int = 0  # the first rows, which passed the row-level expectations in an earlier run

    def summary(self) -> str:
        head = f"suite {self.suite}: {self.evaluated - len(self.failures)}/{self.evaluated} expectations passed on {self.rows} rows"
        if self.passed_before:
            head += (
                f" (row by row on the last {self.rows - self.passed_before}: the first {self.passed_before}, "
                "from files unchanged since, passed in an earlier run)"
            )
        return "\n".join([head, *(f"  FAILED {failure.line()}" for failure in self.failures)])


class DataValidationError(Refused, ValueError):
    """One or more suites failed: the message names every failed expectation."""

    next_step = "read the HTML report under RAILYARD_HOME/reports, fix or accept the data, start again"

    def __init__(self, reports: list[ValidationReport]):
        self.reports = reports
        failed = [report for report in reports if not report.success]
        lines = [f"data validation failed in {len(failed)} suite(s):"]
        for report in failed:
            lines.append(report.summary())
            lines.append(f"  HTML report: {report.html_report}")
        super().__init__("\n".join(lines))


def raise_for_failures(*reports: ValidationReport) -> None:
    if not all(report.success for report in reports):
        raise DataValidationError(list(reports))


def ratings_expectations(bounds: ValidationBounds, now_ts: int) -> list:
    """The raw ratings' suite: the event rules (``railyard.events``, which the event stream
    applies too) for every row, and the data set's bounds."""
    import great_expectations.expectations as gxe

    columns = ["userId", "movieId", "rating", "timestamp"]
    return [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=columns, exact_match=True, description="exactly the rating columns"
        ),
        gxe.ExpectTableRowCountToBeBetween(
            min_value=bounds.min_rows,
            max_value=bounds.max_rows,
            description=f"between {bounds.min_rows} and {bounds.max_rows} ratings",
        ),
        *(gxe.ExpectColumnValuesToNotBeNull(column=c, description="no missing values") for c in columns),
        *(
            gxe.ExpectColumnValuesToBeInTypeList(column=c, type_list=["int64", "Int64"], description="integer values")
            for c in ("userId", "movieId", "timestamp")
        ),
        gxe.ExpectColumnValuesToBeInTypeList(
            column="rating", type_list=["float64", "Float64"], description="numeric ratings"
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="rating",
            min_value=rules.MIN_RATING,
            max_value=rules.MAX_RATING,
            description=f"rating within {rules.MIN_RATING}..{rules.MAX_RATING}",
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="rating", value_set=rules.RATING_VALUES, description="rating in half-star steps"
        ),
        *(
            gxe.ExpectColumnValuesToBeBetween(
                column=c, min_value=rules.MIN_ID, max_value=rules.MAX_ID, description="positive ids"
            )
            for c in ("userId", "movieId")
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="timestamp",
            min_value=rules.MIN_TIMESTAMP,
            max_value=rules.max_timestamp(now_ts),
            description=f"timestamp from 1970 (0) up to now (+{rules.MAX_CLOCK_SKEW_S} s of clock skew), "
            "not negative, not in the future",
        ),
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["userId", "movieId", "timestamp"],
            description="no duplicate (userId, movieId, timestamp) ratings",
        ),
    ]


def feature_expectations(bounds: ValidationBounds, side: str, cutoff_ts: int) -> list:
    import great_expectations.expectations as gxe

    scalars = tuple(f"{entity}_{name}" for entity in ("user", "movie") for name in ("n", "rating_sum", "positives"))
    counts = (*scalars, "user_genre_n_min", "user_genre_pos_min")
    if side == "train":
        split = gxe.ExpectColumnMaxToBeBetween(
            column="timestamp", max_value=cutoff_ts - 1, description=f"training rows before the cut-off {cutoff_ts}"
        )
    else:
        split = gxe.ExpectColumnMinToBeBetween(
            column="timestamp", min_value=cutoff_ts, description=f"holdout rows at or after the cut-off {cutoff_ts}"
        )
    return [
        gxe.ExpectTableRowCountToBeBetween(
            min_value=1, max_value=bounds.max_rows, description=f"a non-empty {side} split"
        ),
        split,
        *(gxe.ExpectColumnValuesToNotBeNull(column=c, description="no missing values") for c in ("label", *scalars)),
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=[0.0, 1.0], description="binary label"),
        gxe.ExpectColumnMeanToBeBetween(
            column="label",
            min_value=bounds.min_positive_rate,
            max_value=bounds.max_positive_rate,
            description=f"label balance between {bounds.min_positive_rate} and {bounds.max_positive_rate}",
        ),
        *(gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, description="aggregates >= 0") for c in counts),
        *(
            gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=1, description="genre flags in [0, 1]")
            for c in ("movie_genres_min", "movie_genres_max")
        ),
    ]


def validate_ratings(
    ratings: pl.DataFrame, bounds: ValidationBounds, report_dir: Path, passed_before: int = 0
) -> ValidationReport:
    """The raw ratings' suite over ``ratings``; the first ``passed_before`` rows passed it in an
    earlier run, so only the whole-table expectations read them."""
    expectations = ratings_expectations(bounds, now_ts=int(time.time()))
    return run_suite("raw_ratings", ratings, expectations, report_dir, passed_before=passed_before)


def validate_new_ratings(
    ratings: pl.DataFrame,
    file_rows: Sequence[tuple[Path, int]],
    bounds: ValidationBounds,
    report_dir: Path,
    record: Path,
) -> ValidationReport:
    """``validate_ratings``, row by row only from the first file (in ``file_rows``: the files
    the rows came from, in order, with their row counts) that ``record`` does not list as passed
    with the same bytes, under the same suite: date partitions that grow by a new day get the
    new day checked, as a data set validated batch by batch is. Every row when the files are
    not known (``file_rows`` empty). A passing suite records the files as passed."""
    files = [(sha256_file(path), rows) for path, rows in file_rows]
    suite = raw_suite_key(bounds)
    known = _read_record(record)
    passed_before = 0
    if known.get("suite") == suite:
        for file, passed in zip(files, known.get("files", [])):
            if list(file) != passed:
                break
            passed_before += file[1]
    report = validate_ratings(ratings, bounds, report_dir, passed_before)
    if report.success and files:
        record.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(record, json.dumps({"suite": suite, "files": files}))
    return report


def raw_suite_key(bounds: ValidationBounds) -> str:
    """The raw ratings' suite as a digest (the present time aside): rows that passed another
    suite, or another Great Expectations, are checked again."""
    import great_expectations as gx

    described = [(type(e).__name__, e.json()) for e in ratings_expectations(bounds, now_ts=0)]  # GX: pydantic v1
    return hashlib.sha256(json.dumps([gx.__version__, described]).encode()).hexdigest()


def _read_record(record: Path) -> dict:
    """The files that last passed (``validate_new_ratings``); nothing when missing or unreadable."""
    try:
        known = json.loads(Path(record).read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def validate_features(
    train: pl.DataFrame, holdout: pl.DataFrame, cutoff_ts: int, bounds: ValidationBounds, report_dir: Path
) -> tuple[ValidationReport, ValidationReport]:
    return tuple(
        run_suite(
            f"features_{side}", frame, feature_expectations(bounds, side, cutoff_ts), report_dir, view=scalar_view
        )
        for side, frame in (("train", train), ("holdout", holdout))
    )


def scalar_view(frame: pl.DataFrame) -> pl.DataFrame:
    """Array features replaced by their per-row min and max, which GX can check; Float32 widened
    to Float64 (exactly), because GX's pandas engine compares only int64/float64 columns
    vectorized and every other dtype one Python call per row
    (great_expectations/expectations/metrics/column_map_metrics/column_values_between.py).
    The label stays Float32: it has no range check, and GX's HTML renderer cannot print a
    float64 column mean (render/util.py num_to_str uses repr(np.float64))."""
    arrays = [name for name, dtype in frame.schema.items() if isinstance(dtype, pl.Array)]
    return (
        frame.with_columns(
            *(pl.col(name).arr.min().alias(f"{name}_min") for name in arrays),
            *(pl.col(name).arr.max().alias(f"{name}_max") for name in arrays),
        )
        .drop(arrays)
        .with_columns(pl.col(pl.Float32).exclude("label").cast(pl.Float64))
    )


def run_suite(
    name: str,
    frame: pl.DataFrame,
    expectations: list,
    report_dir: Path,
    view=lambda frame: frame,
    first_row: int = 1,
    run_name: str | None = None,
    passed_before: int = 0,
) -> ValidationReport:
    """Every expectation over every row of ``frame`` (seen through ``view``), with GX's pandas
    engine never holding more than ``SLICE_ROWS`` rows of it at once.

    Row-level expectations (GX's column and multicolumn map expectations) and the column set run
    slice by slice and their results are merged: counts added up, examples kept, row numbers
    those of ``frame`` as data rows counted from ``first_row`` (a part of a file: the data row
    of its first row). Rows a compound-uniqueness check compares are hashed into the same slice,
    so duplicates are found across the whole table. Whole-table expectations (row count, column
    mean/min/max) run once, on only the columns they name. The report names the run
    ``run_name`` (default: the report folder's name, the run's key). The first ``passed_before``
    rows passed the row-level expectations before: only the whole-table ones read them.
    """
    import great_expectations as gx
    import pandas as pd
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.execution_engine import pandas_execution_engine
    from great_expectations.validator.validation_statistics import calc_validation_statistics

    # GX fingerprints each batch smaller than this by hashing all of its rows, for batch markers
    # that nothing here reads (20 s of the two validations at 25M ratings): never.
    pandas_execution_engine.HASH_THRESHOLD = 0
    expectations = [copy.copy(expectation) for expectation in expectations]  # a suite owns its expectations
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batches = context.data_sources.add_pandas(name).add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
    per_slice = [e for e in expectations if _row_level(e)]
    whole_table = [e for e in expectations if not _row_level(e)]
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": _EXAMPLES}

    def checker(expectations: list, suite_name: str):
        """Validates a pandas frame against these expectations: their results by ``id``."""
        suite = context.suites.add(gx.ExpectationSuite(name=suite_name, expectations=expectations))

        def check(data: pd.DataFrame) -> dict:
            outcome = batches.get_batch(batch_parameters={"dataframe": data}).validate(
                suite, result_format=result_format
            )
            return dict(zip(map(id, expectations), outcome.results, strict=True))

        return check

    outcomes = {}
    if whole_table:
        columns = list(dict.fromkeys(e.column for e in whole_table if getattr(e, "column", None)))
        # With no column named (the row count alone), rows without columns cost nothing.
        data = view(frame.select(columns)).to_pandas() if columns else pd.DataFrame(index=pd.RangeIndex(len(frame)))
        outcomes |= checker(whole_table, f"{name}.table")(data)
    if per_slice:
        check = checker(per_slice, f"{name}.rows")
        # GX reports unexpected rows by index: make it the row's data-row number.
        sliced = [
            check(view(rows).to_pandas().set_index("_row").rename_axis(None))
            for rows in _row_slices(frame.slice(passed_before), per_slice, first_row + passed_before)
        ]
        outcomes |= {key: _merged([outcome[key] for outcome in sliced]) for key in map(id, per_slice)}
    results = [outcomes[id(expectation)] for expectation in expectations]
    statistics = calc_validation_statistics(results)
    outcome = ExpectationSuiteValidationResult(
        success=statistics.success,
        results=results,
        suite_name=name,
        meta={
            "great_expectations_version": gx.__version__,
            "run_id": RunIdentifier(run_name=run_name or Path(report_dir).name, run_time=datetime.now(UTC)),
        },
        statistics={key: getattr(statistics, key) for key in _STATISTICS},
    )
    report_dir = Path(report_dir)
    html_path = report_dir / f"{name}.html"
    report_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(html_path, _render_html(outcome))
    _write_index(report_dir)
    failures = [_failure(result) for result in results if not result.success]
    return ValidationReport(name, not failures, len(results), len(frame), failures, html_path, passed_before)


def row_level(expectations: list) -> list:
    """The expectations a part of the rows can be checked against on its own."""
    return [expectation for expectation in expectations if _row_level(expectation)]


def table_report(name: str, rows: int, checks: list[tuple], report_dir: Path) -> ValidationReport:
    """Whole-table expectations decided from per-partition summaries, where no process holds the
    table: each check is (GX expectation type, description, column, observed, passed)."""
    failures = [
        ExpectationFailure(expectation, description, column, None, observed)
        for expectation, description, column, observed, passed in checks
        if not passed
    ]
    lines = [
        f"{expectation}({column or ''}): {description}: observed {observed!r}: {'passed' if passed else 'FAILED'}"
        for expectation, description, column, observed, passed in checks
    ]
    html_path = Path(report_dir) / f"{name}.html"
    html_path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    atomic_write_text(html_path, f"<html><body><h1>{html.escape(name)}: {rows} rows</h1><ul>{body}</ul></body></html>")
    _write_index(html_path.parent)
    return ValidationReport(name, not failures, len(checks), rows, failures, html_path)


def _row_level(expectation) -> bool:
    """Decided row by row (or from the schema), so any slice of rows can be checked on its own."""
    from great_expectations.expectations.expectation import ColumnMapExpectation, MulticolumnMapExpectation

    return isinstance(expectation, ColumnMapExpectation | MulticolumnMapExpectation) or (
        type(expectation).__name__ == "ExpectTableColumnsToMatchSet"
    )


def _row_slices(frame: pl.DataFrame, expectations: list, first_row: int) -> Iterator[pl.DataFrame]:
    """``frame`` with its row numbers from ``first_row`` (``_row``), in slices of about
    ``SLICE_ROWS`` rows."""
    numbered = frame.with_row_index("_row", offset=first_row)
    count = -(-len(frame) // SLICE_ROWS)
    if count <= 1:
        yield numbered
        return
    compared = [set(e.column_list) for e in expectations if hasattr(e, "column_list")]
    if not compared:
        for start in range(0, len(frame), SLICE_ROWS):
            yield numbered.slice(start, SLICE_ROWS)
        return
    # Equal values of the columns every uniqueness check compares hash alike: same slice.
    keys = sorted(set.intersection(*compared))
    buckets = numbered.select(pl.struct(keys).hash(seed=0) % count).to_series()
    for bucket in range(count):
        yield numbered.filter(buckets == bucket)


def _merged(results: list):
    """One GX result for an expectation checked slice by slice: as if checked on all rows at once."""
    from great_expectations.core.expectation_validation_result import ExpectationValidationResult

    first = results[0]
    merged = dict(first.result or {})
    if "element_count" in merged:  # a map expectation: add up its counts (schema results are alike in every slice)
        total = {
            key: sum((r.result or {}).get(key) or 0 for r in results)
            for key in ("element_count", "unexpected_count", "missing_count")
        }
        elements, unexpected, missing = total["element_count"], total["unexpected_count"], total["missing_count"]
        checked = elements - missing
        merged |= {"element_count": elements, "unexpected_count": unexpected}
        merged["unexpected_percent"] = unexpected / checked * 100 if checked else None
        if "missing_count" in merged:
            merged |= {
                "missing_count": missing,
                "missing_percent": missing / elements * 100 if elements else None,
                "unexpected_percent_total": unexpected / elements * 100 if elements else None,
                "unexpected_percent_nonmissing": merged["unexpected_percent"],
            }
        if "partial_unexpected_index_list" in merged:  # the first unexpected rows of the table, with their values
            pairs = sorted(
                (
                    pair
                    for r in results
                    for pair in zip(r.result["partial_unexpected_index_list"], r.result["partial_unexpected_list"])
                ),
                key=lambda pair: pair[0],
            )[:_EXAMPLES]
            merged["partial_unexpected_index_list"] = [row for row, _ in pairs]
            merged["partial_unexpected_list"] = [value for _, value in pairs]
        if "partial_unexpected_counts" in merged:
            counts = Counter()
            for r in results:
                for item in (r.result or {}).get("partial_unexpected_counts") or []:
                    if "value" in item:
                        counts[_hashable(item["value"])] += item["count"]
            merged["partial_unexpected_counts"] = [{"value": v, "count": c} for v, c in counts.most_common(_EXAMPLES)]
    raised = [r.exception_info for r in results if (r.exception_info or {}).get("raised_exception")]
    return ExpectationValidationResult(
        success=all(r.success for r in results),
        expectation_config=first.expectation_config,
        result=merged,
        meta=first.meta,
        exception_info=raised[0] if raised else first.exception_info,
    )


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def _failure(result) -> ExpectationFailure:
    config = result.expectation_config
    outcome = result.result or {}
    if result.exception_info and result.exception_info.get("raised_exception"):
        outcome = {"observed_value": f"error: {result.exception_info.get('exception_message')}"}
    return ExpectationFailure(
        expectation=config.type,
        description=config.description or "",
        column=config.kwargs.get("column"),
        unexpected_count=outcome.get("unexpected_count"),
        observed=outcome.get("observed_value"),
        examples=list(outcome.get("partial_unexpected_list") or [])[:_EXAMPLES],
        rows=[int(row) for row in outcome.get("partial_unexpected_index_list") or []][:_EXAMPLES],
    )


def _render_html(outcome) -> str:
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    return _offline_page(DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(outcome)))


# GX's pass/fail (and other) icons are Font Awesome glyphs; these characters stand in for them.
_ICONS = """
.fas { font-style: normal; display: inline-block; }
.fa-check-circle::before { content: "\\2714"; }
.fa-times::before { content: "\\2716"; }
.fa-exclamation-triangle::before { content: "\\26A0"; }
.fa-question-circle::before { content: "?"; }
.fa-comment::before { content: "\\1F4AC"; }
"""
_REMOTE_STYLE = re.compile(r'<link\b[^>]*href="https?://[^"]*"[^>]*>\s*')
_REMOTE_SCRIPT = re.compile(r'<script\b[^>]*src="https?://[^"]*"[^>]*>\s*</script>\s*')
_LOGO = re.compile(r'src="https?://[^"]*/logo-long\.png[^"]*"')
_FAVICON = re.compile(r'<link rel="shortcut icon"[^>]*>')
_HOME = re.compile(r'href="(?:\.\./)+index\.html"')
_SUITE_LINK = re.compile(r'<a href="(?:\.\./)+expectations/[^"]*"\s*>([^<]*)</a>')  # GX's suite pages: none here


def _offline_page(page: str) -> str:
    """A GX Data Docs page that needs no network: the CDN style sheets give way to Bootstrap's
    (where the first of them was, so GX's own styles still come after it), the CDN scripts to
    jQuery and Bootstrap's (GX's inline scripts need them), the logo is inline; Home is this
    folder's index and links to suite pages that are not rendered are plain text."""
    styles, scripts = _inline_assets()
    page = _first_replaced(_REMOTE_STYLE, page, styles)
    page = _first_replaced(_REMOTE_SCRIPT, page, scripts)
    page = _LOGO.sub(f'src="{_gx_image("logo-long.png", "image/png")}"', page)
    page = _FAVICON.sub(f'<link rel="shortcut icon" href="{_gx_image("favicon.ico", "image/x-icon")}">', page)
    page = _HOME.sub('href="index.html"', page)
    return _SUITE_LINK.sub(r"\1", page)


def _write_index(report_dir: Path) -> None:
    """``index.html``: the folder's reports, each a link (the reports' Home)."""
    styles, _ = _inline_assets()
    pages = sorted(path.name for path in Path(report_dir).glob("*.html") if path.name != "index.html")
    items = "".join(
        f'<li class="list-group-item"><a href="{html.escape(name)}">{html.escape(name.removesuffix(".html"))}</a></li>'
        for name in pages
    )
    title = f"Validation reports of run {html.escape(Path(report_dir).name)}"
    atomic_write_text(
        Path(report_dir) / "index.html",
        f'<!DOCTYPE html><html><head><meta charset="UTF-8"><title>{title}</title>{styles}</head>'
        f'<body class="container pt-4"><h1 class="h3">{title}</h1><ul class="list-group">{items}</ul></body></html>',
    )


def _first_replaced(pattern: re.Pattern, page: str, replacement: str) -> str:
    """Every match of ``pattern`` removed, the first one replaced by ``replacement``."""
    first = pattern.search(page)
    if first is None:
        return page
    return page[: first.start()] + replacement + pattern.sub("", page[first.start() :])


@cache
def _inline_assets() -> tuple[str, str]:
    """(style elements, script elements) with Bootstrap 4's CSS and the icons; jQuery and
    Bootstrap 4's JavaScript, as the package `bootstrap-flask` ships them."""
    root = Path(find_spec("flask_bootstrap").submodule_search_locations[0]) / "static" / "bootstrap4"

    def text(relative: str) -> str:  # without the source map comment: there is no map beside the page
        return re.sub(r"\n?[/][*/]# sourceMappingURL=\S+( \*/)?\s*$", "", (root / relative).read_text())

    styles = f"<style>{text('css/bootstrap.min.css')}</style><style>{_ICONS}</style>"
    scripts = f"<script>{text('jquery.min.js')}</script><script>{text('js/bootstrap.min.js')}</script>"
    return styles, scripts


@cache
def _gx_image(name: str, media_type: str) -> str:
    """One of GX's own images (it ships them, its pages load them from the web) as a data URI."""
    root = Path(find_spec("great_expectations").submodule_search_locations[0])
    data = (root / "render" / "view" / "static" / "images" / name).read_bytes()
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"
