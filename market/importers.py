"""Importers for real daily bars: per-ticker CSV folders, long tables, wide close matrices.

Every reader returns (Panel, ImportReport) and writes nothing; the checks and cleaning
are market.validation's policy, the split/spike detection is market.cleaning's.
`import_dataset` is the one function that writes: all or nothing, through the atomic
Panel.save, with the full report as `import_report.json` inside the panel directory.

Formats:
  csv-folder  one CSV per ticker, `Date,Open,High,Low,Close[,Adj Close],Volume` (header
              case and spaces do not matter); the ticker is the file name, upper-cased.
  long        CSV or Parquet with date,ticker,open,high,low,close,volume[,amount][,adj_close].
  wide        CSV or Parquet, dates x tickers of closes; the first column (or the index)
              holds the dates. Only close is filled; the other fields stay NaN.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from market.cleaning import count_large_moves, detect_corrections, empty_corrections
from market.panel import META_COLUMNS, Panel, cleaned_close
from market.validation import (
    FILE_COLUMN,
    LINE_COLUMN,
    LONG_COLUMNS_HINT,
    MAX_EXAMPLES,
    DataImportError,
    ImportIssue,
    ImportReport,
    normalize_column,
    parse_dates,
    raise_if_fatal,
    structural,
    validate_bars,
)

SOURCE_FORMATS: tuple[str, ...] = ("auto", "csv-folder", "long", "wide")
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
FOLDER_HINT = (
    "each CSV needs the columns Date,Open,High,Low,Close[,Adj Close],Volume; the ticker is the file name"
)
WIDE_HINT = "a wide file has a date column (or index) followed by one close column per ticker"
ASSETS_HINT = "expected columns: ticker[,name][,sector][,industry][,exchange]"
# Text that counts as a missing number in CSV files (pandas' defaults, minus nothing surprising).
NA_TEXT = ["", "NA", "N/A", "n/a", "NaN", "nan", "-nan", "NULL", "null", "None", "#N/A"]


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in PARQUET_SUFFIXES


def _fail(report: ImportReport, code: str, message: str, examples: list[str], hint: str, count: int = 1):
    report.add(structural(code, message, count, examples, hint))
    raise DataImportError(report)


def _normalize_columns(frame: pd.DataFrame, report: ImportReport, where: str = "") -> pd.DataFrame:
    names = [normalize_column(c) for c in frame.columns]
    seen = pd.Series(names)
    repeated = sorted(set(seen[seen.duplicated()]))
    if repeated:
        _fail(
            report,
            "duplicate_column",
            f"column(s) {', '.join(map(repr, repeated))} appear more than once"
            + (f" in {where}" if where else ""),
            [where] if where else [],
            "each column name must be unique",
        )
    frame.columns = names
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    # date32 columns come back as datetime64 (not Python date objects): much faster to check.
    frame = pq.read_table(path).to_pandas(date_as_object=False)
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    return frame


def _csv_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return next(csv.reader(fh), [])


# ------------------------------------------------------------------ readers
def read_long(
    path: str | Path, *, strict: bool = False, assets: pd.DataFrame | None = None
) -> tuple[Panel, ImportReport]:
    """A long table (CSV or Parquet): one row per (date, ticker)."""
    path = Path(path)
    report = ImportReport(source=str(path), format="long")
    try:
        if _is_parquet(path):
            frame = _read_parquet(path)
        else:
            header = _csv_header(path)
            names = {h: normalize_column(h) for h in header}
            text_columns = [h for h, n in names.items() if n in ("date", "ticker")]
            frame = pd.read_csv(
                path,
                dtype={h: str for h in text_columns},
                keep_default_na=False,  # a ticker "NA" is a ticker; empty date/ticker is reported
                na_values={h: NA_TEXT for h, n in names.items() if n not in ("date", "ticker")},
                encoding="utf-8-sig",
            )
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        _fail(report, "bad_file", f"cannot read {path.name}: {exc}", [path.name], LONG_COLUMNS_HINT)
    frame = _normalize_columns(frame, report)
    if not _is_parquet(path):
        frame[LINE_COLUMN] = np.arange(2, len(frame) + 2)  # line 1 is the header
    panel = validate_bars(frame, report, strict=strict, assets=assets)
    return panel, report


def read_csv_folder(
    folder: str | Path, *, strict: bool = False, assets: pd.DataFrame | None = None
) -> tuple[Panel, ImportReport]:
    """A folder of per-ticker CSV files (Yahoo style); the ticker is the upper-cased file stem."""
    folder = Path(folder)
    report = ImportReport(source=str(folder), format="csv-folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
    if not files:
        _fail(report, "no_files", f"no .csv files in {folder}", [], FOLDER_HINT, 0)

    frames, empty, unreadable = [], [], []
    missing: dict[str, list[str]] = {}
    for file in files:
        try:
            frame = pd.read_csv(file, na_values=NA_TEXT, encoding="utf-8-sig")
        except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            unreadable.append(f"{file.name}: {str(exc).splitlines()[0][:80]}")
            continue
        frame.columns = [normalize_column(c) for c in frame.columns]
        lacking = [c for c in ("date", "open", "high", "low", "close", "volume") if c not in frame.columns]
        for column in lacking:
            missing.setdefault(column, []).append(file.name)
        if lacking:
            continue
        if frame.empty:
            empty.append(file.name)
            continue
        frame["ticker"] = file.stem.strip().upper()
        frame[FILE_COLUMN] = file.name
        frame[LINE_COLUMN] = np.arange(2, len(frame) + 2)
        frames.append(frame)

    if unreadable:
        report.add(
            structural(
                "bad_file",
                f"{len(unreadable)} file(s) could not be read as CSV",
                len(unreadable),
                unreadable,
                FOLDER_HINT,
            )
        )
    for column, names in missing.items():
        report.add(
            structural(
                "missing_column",
                f"missing required column {column!r} in {len(names)} file(s)",
                len(names),
                names,
                FOLDER_HINT,
            )
        )
    if empty:
        report.add(
            ImportIssue(
                "empty_file",
                f"{len(empty)} file(s) have a header but no rows",
                len(empty),
                empty[:MAX_EXAMPLES],
                action="skipped",
            )
        )
    raise_if_fatal(report)
    if not frames:
        _fail(report, "no_data", "no rows to import", [], FOLDER_HINT, 0)
    frame = pd.concat(frames, ignore_index=True, sort=False)
    frame[FILE_COLUMN] = frame[FILE_COLUMN].astype("category")
    panel = validate_bars(frame, report, strict=strict, assets=assets, hint=FOLDER_HINT)
    return panel, report


def read_wide_close(
    path: str | Path, *, strict: bool = False, assets: pd.DataFrame | None = None
) -> tuple[Panel, ImportReport]:
    """A dates x tickers matrix of closes; open/high/low/volume/amount stay NaN."""
    path = Path(path)
    report = ImportReport(source=str(path), format="wide")
    try:
        if _is_parquet(path):
            frame = _read_parquet(path)
            lines = None
        else:
            header = _csv_header(path)
            # Checked on the raw header: pandas would rename a repeat "AAPL" to "AAPL.1".
            repeated = sorted(n for n, k in Counter(h.strip() for h in header[1:]).items() if k > 1)
            if repeated:
                _fail(
                    report,
                    "duplicate_column",
                    f"ticker column(s) {', '.join(map(repr, repeated))} appear more than once",
                    repeated[:MAX_EXAMPLES],
                    WIDE_HINT,
                    len(repeated),
                )
            frame = pd.read_csv(
                path, dtype={header[0]: str} if header else None, na_values=NA_TEXT, encoding="utf-8-sig"
            )
            lines = np.arange(2, len(frame) + 2)
    except (OSError, ValueError, pd.errors.ParserError, StopIteration) as exc:
        _fail(report, "bad_file", f"cannot read {path.name}: {exc}", [path.name], WIDE_HINT)
    if frame.shape[1] < 2:
        _fail(report, "missing_column", "no ticker columns after the date column", [], WIDE_HINT)

    dates = frame.iloc[:, 0]
    tickers = [str(c).strip() for c in frame.columns[1:]]
    nameless = [f"column {k + 2}" for k, t in enumerate(tickers) if not t or t.startswith("Unnamed:")]
    if nameless:
        report.add(
            structural(
                "missing_ticker",
                f"{len(nameless)} column(s) with no ticker name",
                len(nameless),
                nameless,
                WIDE_HINT,
            )
        )
    # Date checks here, once per line, rather than once per cell after melting.
    days = parse_dates(dates)
    bad = days == np.iinfo(np.int64).min
    where = (lambda i: f"line {lines[i]}") if lines is not None else (lambda i: f"row {i + 1}")
    if bad.any():
        values = dates.to_numpy()
        report.add(
            structural(
                "unparseable_date",
                f"{int(bad.sum())} date(s) could not be parsed",
                bad.sum(),
                [f"{where(i)}: date {values[i]!r}" for i in np.flatnonzero(bad)[:MAX_EXAMPLES]],
                "dates must be ISO 8601 (YYYY-MM-DD, optionally with a time and UTC offset) or YYYYMMDD",
            )
        )
    repeated = pd.Series(days).duplicated(keep=False).to_numpy() & ~bad
    if repeated.any():
        shown = [
            f"{np.datetime64(int(days[i]), 'D')} ({where(i)})"
            for i in np.flatnonzero(repeated)[:MAX_EXAMPLES]
        ]
        report.add(
            structural(
                "duplicate_rows",
                f"{int(repeated.sum())} rows repeat a date",
                int(repeated.sum()),
                shown,
                "each date must appear on one line",
            )
        )
    raise_if_fatal(report)

    # Melt: one row per non-empty cell. Empty cells are absent bars, not problems.
    cells = frame.iloc[:, 1:]
    numeric = all(pd.api.types.is_numeric_dtype(t) for t in cells.dtypes)
    matrix = cells.to_numpy(dtype=np.float64 if numeric else object)
    r_idx, c_idx = np.nonzero(cells.notna().to_numpy())
    long = pd.DataFrame(
        {
            "date": days[r_idx].astype("datetime64[D]"),
            "ticker": np.asarray(tickers, dtype=object)[c_idx],
            "open": np.nan,
            "high": np.nan,
            "low": np.nan,
            "close": matrix[r_idx, c_idx],
            "volume": np.nan,
            "amount": np.nan,
        }
    )
    if lines is not None:
        long[LINE_COLUMN] = lines[r_idx]
    report.rows_read = len(long)
    panel = validate_bars(long, report, strict=strict, assets=assets, hint=WIDE_HINT)
    return panel, report


def read_assets(path: str | Path, report: ImportReport | None = None) -> pd.DataFrame:
    """Asset metadata: `ticker` plus any of name, sector, industry, exchange (others ignored).

    Returns one row per ticker with all of META_COLUMNS (unknown fields are "")."""
    path = Path(path)
    own = ImportReport(source=str(path), format="assets")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        _fail(own, "bad_file", f"cannot read {path.name}: {exc}", [path.name], ASSETS_HINT)
    frame = _normalize_columns(frame, own, path.name)
    if "ticker" not in frame.columns:
        _fail(
            own,
            "missing_column",
            f"missing required column 'ticker' in {path.name}",
            [path.name],
            ASSETS_HINT,
        )
    frame = frame.apply(lambda column: column.str.strip())
    blank = (frame["ticker"] == "").to_numpy()
    if blank.any():
        own.add(
            structural(
                "missing_ticker",
                f"{int(blank.sum())} row(s) with no ticker in {path.name}",
                blank.sum(),
                [f"line {i + 2}" for i in np.flatnonzero(blank)[:MAX_EXAMPLES]],
                ASSETS_HINT,
            )
        )
    repeated = frame["ticker"].duplicated(keep=False).to_numpy() & ~blank
    if repeated.any():
        own.add(
            structural(
                "duplicate_rows",
                f"{int(repeated.sum())} rows repeat a ticker in {path.name}",
                int(repeated.sum()),
                [f"{frame['ticker'].iloc[i]} (line {i + 2})" for i in np.flatnonzero(repeated)[:5]],
                "each ticker must appear once",
            )
        )
    raise_if_fatal(own)
    ignored = [c for c in frame.columns if c not in META_COLUMNS]
    if ignored and report is not None:
        report.add(
            ImportIssue(
                "ignored_columns",
                f"assets columns ignored: {', '.join(ignored)}",
                len(ignored),
                [],
                action="not imported",
            )
        )
    out = pd.DataFrame({"ticker": frame["ticker"].astype(object)})
    for column in META_COLUMNS[1:]:
        out[column] = frame[column].astype(object) if column in frame.columns else ""
    return out


def detect_format(source: str | Path) -> str:
    """csv-folder for a folder; long for a file with a `ticker` column; wide otherwise."""
    source = Path(source)
    if source.is_dir():
        return "csv-folder"
    if _is_parquet(source):
        names = pq.read_schema(source).names
    else:
        names = _csv_header(source)
    return "long" if "ticker" in {normalize_column(n) for n in names} else "wide"


def read_any(
    source: str | Path, fmt: str = "auto", *, strict: bool = False, assets: pd.DataFrame | None = None
) -> tuple[Panel, ImportReport]:
    """Dispatch on `fmt` (see SOURCE_FORMATS); 'auto' uses detect_format."""
    source = Path(source)
    if fmt not in SOURCE_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; formats are {', '.join(SOURCE_FORMATS)}")
    if not source.exists():
        report = ImportReport(source=str(source), format=fmt)
        _fail(
            report,
            "not_found",
            f"no such file or folder: {source}",
            [],
            "give a folder of per-ticker CSVs, or a CSV/Parquet file",
        )
    if fmt == "auto":
        fmt = detect_format(source)
    reader = {"csv-folder": read_csv_folder, "long": read_long, "wide": read_wide_close}[fmt]
    return reader(source, strict=strict, assets=assets)


# ------------------------------------------------------------------ import
def import_dataset(
    source: str | Path,
    dest: str | Path,
    *,
    fmt: str = "auto",
    assets: str | Path | pd.DataFrame | None = None,
    clean: bool = True,
    strict: bool = False,
    keep_files: tuple[str, ...] = (),
) -> ImportReport:
    """Read, validate, detect corrections and save a panel at `dest`; all or nothing.

    `keep_files`: files of the panel already at `dest` (a synthetic market's truth.npz, say) that
    the new panel keeps, written in the same atomic step as the bars.

    On any fatal issue it raises DataImportError and `dest` is left as it was. With
    clean=True the detected corrections are stored beside the raw bars (Panel.load
    applies them); with clean=False none are stored. The full report is written to
    `dest/import_report.json` and its summary to the manifest."""
    extra_issues: list[ImportIssue] = []
    meta = None
    if isinstance(assets, pd.DataFrame):
        meta = assets
    elif assets is not None:
        holder = ImportReport(source=str(assets), format="assets")
        meta = read_assets(assets, holder)
        extra_issues = holder.issues
    panel, report = read_any(source, fmt, strict=strict, assets=meta)
    report.issues.extend(extra_issues)

    corrections = detect_corrections(panel) if clean else empty_corrections()
    report.corrections = corrections
    up0, down0 = count_large_moves(panel.close)
    up1, down1 = count_large_moves(cleaned_close(panel, corrections)) if clean else (up0, down0)
    report.after_cleaning = {
        "up_x2_before": up0,
        "down_x2_before": down0,
        "up_x2_after": up1,
        "down_x2_after": down1,
    }
    if clean:
        counts = report.correction_counts()
        report.add(
            ImportIssue(
                "corrections",
                f"{counts.get('split', 0)} unadjusted split(s) and {counts.get('spike', 0)} one-day "
                f"spike(s) found, {counts.get('jump', 0)} other large jump(s) listed",
                int(len(corrections)),
                [
                    f"{r.ticker} {pd.Timestamp(r.date).date()} {r.kind} x{r.ratio:.3f}"
                    for r in corrections[corrections["kind"] == "split"].head(MAX_EXAMPLES).itertuples()
                ],
                action="stored in corrections.parquet, applied on load (splits rescale earlier bars, "
                "spikes -> NaN)",
            )
        )
    report.add(
        ImportIssue(
            "large_moves",
            f"close-to-close moves of x2 or more: {up0} up, {down0} down in the raw bars; "
            f"{up1} up, {down1} down after cleaning",
            up1 + down1,
            [],
            action="reported",
        )
    )

    kept = {name: (Path(dest) / name).read_bytes() for name in keep_files if (Path(dest) / name).is_file()}
    panel.save(
        dest,
        corrections=corrections,
        extra={"source": str(source), "report": report.summary()},
        extra_files={**kept, "import_report.json": report.to_json().encode()},
    )
    return report
