"""Validation of imported daily bars, and the report every import produces.

Policy (applied by `validate_bars`, used by every importer in market.importers):

Structural problems are fatal; the import stops with DataImportError and writes nothing:
  * a required column is missing (date, ticker, open, high, low, close, volume);
  * a date cannot be parsed (ISO 8601 dates, optionally with a time and a UTC offset,
    or YYYYMMDD; a timestamp counts for its local calendar date, so
    "2016-01-04 16:00:00-05:00" is 2016-01-04);
  * a (date, ticker) pair appears more than once;
  * a row has no ticker;
  * a file cannot be read, or nothing is left to import.

Value problems are cleaned and reported (with strict=True they are fatal instead):
  * a value that is not a number (or is infinite) -> NaN;
  * a price <= 0 -> NaN (that field only);
  * high < low -> open, high and low of that bar -> NaN (close kept);
  * volume < 0 or amount < 0 -> NaN;
  * open or close outside [low, high] -> counted and reported, kept as is;
  * a row with no valid price left (open, high, low and close all NaN) -> dropped;
  * a missing or non-positive adj_close where other rows of the ticker have one ->
    the ticker's previous adjustment factor is carried forward (or the next one back).

Then, for every row: amount = close x volume where the source has no amount (the
traded value, from the raw close and volume); where adj_close is given, open, high,
low and close are multiplied by adj_close / close and volume is divided by it, so
returns are free of splits and dividends while amount stays the traded value.

Notes (never fatal): missing values left as they are, zero volume, close-only bars,
ignored columns, empty files. Nothing is dropped or changed without an issue saying so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from market.panel import FIELDS, PRICE_FIELDS, Panel, PanelError

REQUIRED_COLUMNS: tuple[str, ...] = ("date", "ticker", "open", "high", "low", "close", "volume")
OPTIONAL_COLUMNS: tuple[str, ...] = ("amount", "adj_close")
LONG_COLUMNS_HINT = "expected columns: date,ticker,open,high,low,close,volume[,amount][,adj_close]"
NUMERIC_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume", "amount", "adj_close")
# Optional bookkeeping columns an importer may add so that examples name the file and line.
FILE_COLUMN, LINE_COLUMN = "_file", "_line"
MAX_EXAMPLES = 5

STRUCTURE, VALUE, NOTE = "structure", "value", "note"


@dataclass
class ImportIssue:
    code: str  # stable identifier, e.g. "missing_column", "high_below_low"
    message: str  # one line, says what was found
    count: int = 0  # rows, values or files affected
    examples: list[str] = field(default_factory=list)  # a few short places, e.g. "AAPL 2014-06-09"
    fatal: bool = False
    action: str = ""  # what was done, e.g. "set to NaN"; "import refused" when fatal
    kind: str = NOTE  # structure | value | note
    hint: str = ""  # what would be right, for fatal issues

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "count": int(self.count),
            "examples": list(self.examples),
            "fatal": bool(self.fatal),
            "action": self.action,
            "kind": self.kind,
            "hint": self.hint,
        }


def structural(code: str, message: str, count: int, examples: list[str], hint: str) -> ImportIssue:
    return ImportIssue(
        code, message, int(count), examples[:MAX_EXAMPLES], True, "import refused", STRUCTURE, hint
    )


@dataclass
class ImportReport:
    source: str
    format: str
    rows_read: int = 0
    rows_imported: int = 0
    tickers: int = 0
    dates: int = 0
    first_date: str | None = None
    last_date: str | None = None
    issues: list[ImportIssue] = field(default_factory=list)
    corrections: pd.DataFrame | None = None
    after_cleaning: dict[str, int] = field(default_factory=dict)  # residual large moves, see importers

    def add(self, issue: ImportIssue) -> ImportIssue:
        self.issues.append(issue)
        return issue

    @property
    def fatal_issues(self) -> list[ImportIssue]:
        return [issue for issue in self.issues if issue.fatal]

    def issue(self, code: str) -> ImportIssue | None:
        return next((issue for issue in self.issues if issue.code == code), None)

    def correction_counts(self) -> dict[str, int]:
        if self.corrections is None or self.corrections.empty:
            return {}
        return {str(k): int(v) for k, v in self.corrections["kind"].value_counts().sort_index().items()}

    def summary(self) -> dict[str, Any]:
        """The compact form kept in the panel manifest."""
        return {
            "source": self.source,
            "format": self.format,
            "rows_read": int(self.rows_read),
            "rows_imported": int(self.rows_imported),
            "tickers": int(self.tickers),
            "dates": int(self.dates),
            "first_date": self.first_date,
            "last_date": self.last_date,
            "issues": {issue.code: int(issue.count) for issue in self.issues},
            "corrections": self.correction_counts(),
            "after_cleaning": dict(self.after_cleaning),
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-able: the summary, every issue, and every correction row."""
        out = self.summary()
        out["issues"] = [issue.to_dict() for issue in self.issues]
        rows = []
        if self.corrections is not None and not self.corrections.empty:
            frame = self.corrections.copy()
            frame["date"] = pd.to_datetime(frame["date"]).dt.strftime("%Y-%m-%d")
            frame = frame.astype(object).where(frame.notna(), None)
            rows = frame.to_dict(orient="records")
        out["corrections"] = {"counts": self.correction_counts(), "rows": rows}
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_json_default)

    def render(self, console=None) -> None:
        """Print the report as rich tables (to `console`, or a new rich Console)."""
        from rich.console import Console
        from rich.table import Table

        console = console or Console()
        head = Table(title=f"Import of {self.source} ({self.format})", show_header=False)
        head.add_column("", style="bold")
        head.add_column("")
        head.add_row("rows read", f"{self.rows_read:,}")
        head.add_row("rows imported", f"{self.rows_imported:,}")
        head.add_row("tickers", f"{self.tickers:,}")
        head.add_row("dates", f"{self.dates:,} ({self.first_date} .. {self.last_date})")
        for kind, count in self.correction_counts().items():
            head.add_row(f"corrections: {kind}", f"{count:,}")
        if self.after_cleaning:
            moves = self.after_cleaning
            head.add_row(
                "moves of x2+ / halvings, raw", f"{moves['up_x2_before']:,} / {moves['down_x2_before']:,}"
            )
            head.add_row("... after cleaning", f"{moves['up_x2_after']:,} / {moves['down_x2_after']:,}")
        console.print(head)
        if self.issues:
            table = Table(title="Issues")
            for column in ("code", "count", "fatal", "action", "message / examples"):
                table.add_column(column, overflow="fold")
            for issue in self.issues:
                text = issue.message + ("\n" + "; ".join(issue.examples) if issue.examples else "")
                if issue.fatal and issue.hint:
                    text += f"\n{issue.hint}"
                table.add_row(
                    issue.code,
                    f"{issue.count:,}",
                    "[red]yes[/red]" if issue.fatal else "no",
                    issue.action,
                    text,
                )
            console.print(table)
        if self.corrections is not None and not self.corrections.empty:
            from market.cleaning import summarize_corrections

            top = summarize_corrections(self.corrections).head(10)
            table = Table(title="Corrections, most affected tickers")
            for column in top.columns:
                table.add_column(str(column))
            for row in top.itertuples(index=False):
                table.add_row(*(str(v) for v in row))
            console.print(table)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


class DataImportError(PanelError):
    """An import refused because of fatal issues; `.report` holds the whole report."""

    def __init__(self, report: ImportReport):
        self.report = report
        fatal = report.fatal_issues
        lines = [f"cannot import {report.source} ({report.format}): {len(fatal)} fatal issue(s)"]
        for issue in fatal:
            lines.append(f"  - {issue.message} [{issue.code}, {issue.count}]")
            if issue.examples:
                lines.append("      e.g. " + "; ".join(issue.examples[:MAX_EXAMPLES]))
            if issue.hint:
                lines.append(f"      {issue.hint}")
        super().__init__("\n".join(lines))


def raise_if_fatal(report: ImportReport) -> None:
    if report.fatal_issues:
        raise DataImportError(report)


# --------------------------------------------------------------------- helpers
def normalize_column(name) -> str:
    """'Adj Close' -> 'adj_close', ' Date ' -> 'date'."""
    return "_".join(str(name).strip().lower().replace("-", " ").replace("_", " ").split())


def _quote(value, width: int = 40) -> str:
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
    return repr(text if len(text) <= width else text[: width - 3] + "...")


_TZ_SUFFIX = r"^(.*\d{1,2}:\d{2}(?::\d{2}(?:\.\d*)?)?)\s*(?:Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)$"


def parse_dates(column: pd.Series) -> np.ndarray:
    """Days since 1970-01-01 (int64) for each value; a very negative sentinel where unparseable.

    Each distinct value is parsed once, which keeps millions of rows cheap. Accepted:
    datetime columns (a time-zone-aware one counts for its local date), ISO 8601 text
    with optional time and UTC offset (the offset is dropped so the local calendar date
    stays), and YYYYMMDD numbers or text."""
    bad = np.iinfo(np.int64).min
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        column = column.dt.tz_localize(None)  # local wall-clock time, hence local date
    if pd.api.types.is_datetime64_dtype(column.dtype):
        days = column.to_numpy().astype("datetime64[D]").astype(np.int64)
        return np.where(column.isna().to_numpy(), bad, days)
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    parsed = _parse_unique_dates(pd.Index(uniques))
    parsed = np.append(parsed, bad)  # code -1 (missing) maps to the last slot
    return parsed[codes]


def _parse_unique_dates(values: pd.Index) -> np.ndarray:
    bad = np.iinfo(np.int64).min
    out = np.full(len(values), bad, dtype=np.int64)
    if not len(values):
        return out
    if values.inferred_type in ("date", "datetime", "datetime64"):
        stamps = pd.to_datetime(pd.Series(values, dtype=object), errors="coerce", utc=False)
        if isinstance(stamps.dtype, pd.DatetimeTZDtype):
            stamps = stamps.dt.tz_localize(None)
        ok = stamps.notna().to_numpy()
        out[ok] = stamps[ok].to_numpy().astype("datetime64[D]").astype(np.int64)
        return out
    text = pd.Series(values.astype(str), dtype=object).str.strip()
    text = text.str.replace(_TZ_SUFFIX, r"\1", regex=True)
    compact = text.str.fullmatch(r"\d{8}(?:\.0)?")
    stamps = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]")
    if compact.any():
        stamps[compact] = pd.to_datetime(text[compact].str[:8], format="%Y%m%d", errors="coerce")
    rest = ~compact & text.str.match(r"^\d{4}-\d{1,2}-\d{1,2}")
    if rest.any():
        stamps[rest] = pd.to_datetime(text[rest], format="ISO8601", errors="coerce")
    ok = stamps.notna().to_numpy()
    out[ok] = stamps[ok].to_numpy().astype("datetime64[D]").astype(np.int64)
    return out


class _Places:
    """Short human-readable places for example rows: 'AAPL 2014-06-09' or 'AAPL.csv line 3'."""

    def __init__(self, frame: pd.DataFrame):
        self.files = frame[FILE_COLUMN].to_numpy() if FILE_COLUMN in frame else None
        self.lines = frame[LINE_COLUMN].to_numpy() if LINE_COLUMN in frame else None
        self.names: np.ndarray | None = None  # ticker names, indexed by a_idx
        self.a_idx: np.ndarray | None = None
        self.days: np.ndarray | None = None

    def row(self, i: int) -> str:
        where = f"line {self.lines[i]}" if self.lines is not None else f"row {i + 1}"
        return f"{self.files[i]} {where}" if self.files is not None else where

    def bar(self, i: int) -> str:
        return f"{self.names[self.a_idx[i]]} {np.datetime64(int(self.days[i]), 'D')}"

    def rows(self, mask: np.ndarray, fmt=None, limit: int = MAX_EXAMPLES) -> list[str]:
        fmt = fmt or self.row
        return [fmt(int(i)) for i in np.flatnonzero(mask)[:limit]]

    def bars(self, mask: np.ndarray, extra=None, limit: int = MAX_EXAMPLES) -> list[str]:
        return [
            self.bar(int(i)) + (f" {extra(int(i))}" if extra else "") for i in np.flatnonzero(mask)[:limit]
        ]


def _numeric(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(float64 copy, mask of values present in the source that are not finite numbers)."""
    if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan).copy()
        return values, np.isinf(values)
    text = column.astype(object)
    present = text.notna().to_numpy() & (text.astype(str).str.strip() != "").to_numpy()
    values = pd.to_numeric(text.where(present, None), errors="coerce")
    values = np.asarray(values, dtype=np.float64).copy()
    return values, present & ~np.isfinite(values)


# ------------------------------------------------------------------ validation
def validate_bars(
    frame: pd.DataFrame,
    report: ImportReport,
    *,
    strict: bool = False,
    assets: pd.DataFrame | None = None,
    hint: str = LONG_COLUMNS_HINT,
) -> Panel:
    """Check, clean and assemble a long table of bars into a Panel, recording every issue.

    `frame` has normalised column names (see normalize_column); optional `_file` and
    `_line` columns name the origin of each row in examples. Raises DataImportError on
    any fatal issue (with strict=True, value issues are fatal too)."""
    report.rows_read = int(report.rows_read or len(frame))
    places = _Places(frame)

    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    for column in missing:
        report.add(structural("missing_column", f"missing required column {column!r}", 1, [], hint))
    raise_if_fatal(report)
    ignored = [
        c for c in frame.columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS and not c.startswith("_")
    ]
    if ignored:
        report.add(
            ImportIssue(
                "ignored_columns",
                f"columns ignored: {', '.join(map(str, ignored))}",
                len(ignored),
                [],
                action="not imported",
            )
        )

    # Tickers: strip spaces; factorise first so the string work is per distinct value.
    codes, uniques = pd.factorize(frame["ticker"], use_na_sentinel=True)
    names = pd.Index(uniques).astype(str).str.strip()
    tickers, remap = np.unique(np.asarray(names, dtype=object), return_inverse=True)
    a_idx = np.where(codes >= 0, remap[np.maximum(codes, 0)], -1)
    if "" in set(tickers):
        blank = int(np.flatnonzero(tickers == "")[0])
        a_idx = np.where(a_idx == blank, -1, a_idx)
    no_ticker = a_idx < 0
    if no_ticker.any():
        report.add(
            structural(
                "missing_ticker",
                f"{int(no_ticker.sum())} row(s) with no ticker",
                no_ticker.sum(),
                places.rows(no_ticker),
                "every row needs a ticker symbol",
            )
        )

    days = parse_dates(frame["date"])
    bad_date = days == np.iinfo(np.int64).min
    if bad_date.any():
        raw = frame["date"].to_numpy()
        report.add(
            structural(
                "unparseable_date",
                f"{int(bad_date.sum())} date(s) could not be parsed",
                bad_date.sum(),
                places.rows(bad_date, lambda i: f"{places.row(i)}: date {_quote(raw[i])}"),
                "dates must be ISO 8601 (YYYY-MM-DD, optionally with a time and UTC offset) or YYYYMMDD",
            )
        )

    good = ~(no_ticker | bad_date)
    places.names, places.a_idx, places.days = tickers, a_idx, days
    d_idx, distinct_days = _compact_days(days, good)
    n_dates = len(distinct_days)
    # Duplicates by counting each (ticker, date) cell: O(rows), no sort or hash table.
    key = a_idx.astype(np.int64) * n_dates + d_idx
    counts = np.bincount(key[good], minlength=len(tickers) * n_dates)
    repeated = good & (counts[np.where(good, key, 0)] > 1)
    if repeated.any():
        rows = np.flatnonzero(repeated)
        keys = key[rows]
        pairs = int((counts > 1).sum())
        examples = []
        for k in pd.unique(keys)[:MAX_EXAMPLES]:
            where = rows[keys == k]
            examples.append(
                f"{places.bar(int(where[0]))} ({', '.join(places.row(int(j)) for j in where[:3])})"
            )
        report.add(
            structural(
                "duplicate_rows",
                f"{pairs} (date, ticker) pair(s) appear more than once ({len(rows)} rows)",
                pairs,
                examples,
                "each (date, ticker) must appear once; remove or merge the repeats",
            )
        )
    raise_if_fatal(report)

    # ---------------------------------------------------------------- values
    data: dict[str, np.ndarray] = {}
    for column in NUMERIC_COLUMNS:
        if column not in frame.columns:
            continue
        values, not_number = _numeric(frame[column])
        values[not_number] = np.nan
        data[column] = values
        if not_number.any():
            raw = frame[column].to_numpy()
            _value_issue(
                report,
                "non_numeric",
                f"{int(not_number.sum())} {column} value(s) are not numbers",
                not_number.sum(),
                places.bars(not_number, lambda i, r=raw, c=column: f"{c}={_quote(r[i])}"),
                "set to NaN",
            )

    prices = [data[c] for c in PRICE_FIELDS]
    non_positive = np.zeros(len(frame), dtype=bool)
    cells = 0
    for values in prices:
        bad = values <= 0
        cells += int(bad.sum())
        non_positive |= bad
    if non_positive.any():
        examples = places.bars(
            non_positive,
            lambda i: " ".join(
                f"{c}={v[i]:g}" for c, v in zip(PRICE_FIELDS, prices, strict=True) if v[i] <= 0
            ),
        )
        for values in prices:
            values[values <= 0] = np.nan
        _value_issue(
            report,
            "non_positive_price",
            f"{cells} price(s) <= 0 in {int(non_positive.sum())} row(s)",
            cells,
            examples,
            "set to NaN (that price only)",
        )

    op, hi, lo, cl = prices
    inverted = hi < lo
    if inverted.any():
        examples = places.bars(inverted, lambda i: f"high={hi[i]:g} low={lo[i]:g}")
        op[inverted] = hi[inverted] = lo[inverted] = np.nan
        _value_issue(
            report,
            "high_below_low",
            f"{int(inverted.sum())} bar(s) with high < low",
            inverted.sum(),
            examples,
            "open, high and low set to NaN (close kept)",
        )

    for column in ("volume", "amount"):
        if column in data:
            negative = data[column] < 0
            if negative.any():
                values = data[column]
                examples = places.bars(negative, lambda i, v=values, c=column: f"{c}={v[i]:g}")
                values[negative] = np.nan
                _value_issue(
                    report,
                    f"negative_{column}",
                    f"{int(negative.sum())} negative {column} value(s)",
                    negative.sum(),
                    examples,
                    "set to NaN",
                )

    for name, values in (("open", op), ("close", cl)):
        outside = (values < lo) | (values > hi)
        if outside.any():
            _value_issue(
                report,
                f"{name}_outside_range",
                f"{int(outside.sum())} bar(s) with {name} outside [low, high]",
                outside.sum(),
                places.bars(
                    outside, lambda i, n=name, v=values: f"{n}={v[i]:g} low={lo[i]:g} high={hi[i]:g}"
                ),
                "kept as is",
            )

    no_price = np.isnan(op) & np.isnan(hi) & np.isnan(lo) & np.isnan(cl)
    if no_price.any():
        _value_issue(
            report,
            "no_valid_price",
            f"{int(no_price.sum())} row(s) with no valid price",
            no_price.sum(),
            places.bars(no_price),
            "row dropped",
        )

    _notes(report, data, places, ~no_price)
    if strict:
        for issue in report.issues:
            if issue.kind == VALUE:
                issue.fatal = True
                issue.action = "import refused (strict mode)"
                issue.hint = "fix these values in the source, or import without strict"
    raise_if_fatal(report)

    keep = ~no_price
    if "amount" not in data:
        data["amount"] = cl * data["volume"]
        report.add(
            ImportIssue(
                "amount_computed",
                "amount computed as close x volume (no amount column)",
                int(np.isfinite(data["amount"][keep]).sum()),
                [],
                action="computed",
            )
        )
    else:
        fill = np.isnan(data["amount"]) & keep
        data["amount"][fill] = (cl * data["volume"])[fill]
        if fill.any():
            report.add(
                ImportIssue(
                    "amount_filled",
                    f"{int(fill.sum())} missing amount(s) computed as close x volume",
                    int(fill.sum()),
                    places.bars(fill),
                    action="computed",
                )
            )
    if "adj_close" in data:
        _adjust(report, data, a_idx, days, keep, places)

    return _assemble(report, data, tickers, a_idx, days, keep, assets)


def _compact_days(days: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position of each row's day among the distinct days of `rows`, those days ascending).

    Rows outside `rows` get position 0. Linear time: a bitmap over the day span."""
    if not rows.any():
        return np.zeros(len(days), dtype=np.int64), np.zeros(1, dtype=np.int64)
    day0 = int(days[rows].min())
    offset = np.where(rows, days - day0, 0)
    present = np.zeros(int(offset.max()) + 1, dtype=bool)
    present[offset[rows]] = True
    position = np.cumsum(present) - 1
    return np.where(rows, position[offset], 0), np.flatnonzero(present) + day0


def _value_issue(report, code, message, count, examples, action) -> None:
    report.add(ImportIssue(code, message, int(count), examples[:MAX_EXAMPLES], False, action, VALUE))


def _notes(report: ImportReport, data: dict, places: _Places, keep: np.ndarray) -> None:
    """Informational counts: things left as they are, so the report shows the data's shape."""
    for column in PRICE_FIELDS + ("volume",):
        missing = np.isnan(data[column]) & keep
        if missing.any():
            report.add(
                ImportIssue(
                    f"missing_{column}",
                    f"{int(missing.sum())} bar(s) without {column}",
                    int(missing.sum()),
                    places.bars(missing, limit=3),
                    action="kept as missing",
                )
            )
    close_only = (
        keep
        & np.isnan(data["open"])
        & np.isnan(data["high"])
        & np.isnan(data["low"])
        & ~np.isnan(data["close"])
    )
    if close_only.any():
        report.add(
            ImportIssue(
                "close_only",
                f"{int(close_only.sum())} bar(s) with a close but no open/high/low",
                int(close_only.sum()),
                places.bars(close_only, limit=3),
                action="kept",
            )
        )
    zero = keep & (data["volume"] == 0)
    if zero.any():
        report.add(
            ImportIssue(
                "zero_volume",
                f"{int(zero.sum())} bar(s) with zero volume",
                int(zero.sum()),
                places.bars(zero, limit=3),
                action="kept",
            )
        )


def _adjust(report: ImportReport, data: dict, a_idx, days, keep, places: _Places) -> None:
    """Scale prices by adj_close/close and volume by its inverse (see the module policy)."""
    adj, close = data["adj_close"], data["close"]
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = adj / close
    usable = np.isfinite(factor) & (factor > 0)
    need = keep & ~usable & ~np.isnan(close)
    if need.any():
        # Carry the ticker's factor from its previous (else next) bar: the factor only
        # changes on dividend and split dates, so a neighbour's is the best guess.
        order = np.lexsort((days, a_idx))
        series = pd.Series(np.where(usable, factor, np.nan)[order])
        groups = a_idx[order]
        filled = series.groupby(groups).ffill()
        filled = filled.fillna(series.groupby(groups).bfill()).fillna(1.0).to_numpy()
        factor_sorted = np.empty_like(factor)
        factor_sorted[order] = filled
        factor = np.where(usable, factor, factor_sorted)
        _value_issue(
            report,
            "missing_adj_close",
            f"{int(need.sum())} bar(s) with a close but no usable adj_close",
            need.sum(),
            places.bars(need),
            "adjustment factor carried from the ticker's neighbouring bar",
        )
    factor = np.where(np.isfinite(factor) & (factor > 0), factor, 1.0)
    for column in PRICE_FIELDS:
        data[column] *= factor
    data["volume"] /= factor
    changed = keep & (np.abs(factor - 1.0) > 1e-9)
    report.add(
        ImportIssue(
            "adjusted",
            f"{int(changed.sum())} bar(s) adjusted by adj_close/close (prices x factor, volume / factor; "
            "amount is the traded value)",
            int(changed.sum()),
            [],
            action="adjusted",
        )
    )


def _assemble(report, data, tickers, a_idx, days, keep, assets) -> Panel:
    if not keep.any():
        report.add(
            structural(
                "no_data",
                "no rows with a valid price to import",
                0,
                [],
                "the source needs at least one bar with a positive price",
            )
        )
        raise_if_fatal(report)
    a_idx, days = a_idx[keep], days[keep]
    d_idx, distinct_days = _compact_days(days, np.ones(len(days), dtype=bool))
    dates = distinct_days.astype("datetime64[D]")
    used = np.zeros(len(tickers), dtype=bool)
    used[a_idx] = True
    a_idx, tickers = (np.cumsum(used) - 1)[a_idx], tickers[used]

    values = np.full((len(FIELDS), len(dates), len(tickers)), np.nan, dtype=np.float32)
    flat = d_idx * len(tickers) + a_idx
    for k, name in enumerate(FIELDS):
        values[k].reshape(-1)[flat] = data[name][keep]
    if assets is not None and not assets.empty:
        known = set(assets["ticker"].astype(str))
        unlabeled = [t for t in tickers if t not in known]
        if unlabeled:
            report.add(
                ImportIssue(
                    "no_metadata",
                    f"{len(unlabeled)} ticker(s) not in the assets table",
                    len(unlabeled),
                    unlabeled[:MAX_EXAMPLES],
                    action="metadata left empty",
                )
            )
        extra = sorted(known - set(tickers))
        if extra:
            report.add(
                ImportIssue(
                    "metadata_without_bars",
                    f"{len(extra)} assets-table ticker(s) have no bars",
                    len(extra),
                    extra[:MAX_EXAMPLES],
                    action="ignored",
                )
            )
    panel = Panel(dates, tickers.astype(object), values, assets)
    report.rows_imported = int(keep.sum())
    report.tickers, report.dates = panel.n_assets, panel.n_dates
    report.first_date, report.last_date = str(dates[0]), str(dates[-1])
    return panel
