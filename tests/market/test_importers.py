"""Each importer on real data (stocknet, us_nasdaq), and import_dataset end to end."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from market.importers import (
    detect_format,
    import_dataset,
    read_any,
    read_assets,
    read_csv_folder,
    read_long,
    read_wide_close,
)
from market.panel import Panel, read_manifest
from market.validation import DataImportError

SUBSET = ["AAPL", "BBH", "CSX", "MAR", "NFLX", "SBUX"]


@pytest.fixture(scope="module")
def stocknet_rows(stocknet_dir) -> pd.DataFrame:
    frame = pd.read_parquet(stocknet_dir / "ohlcv.parquet")
    frame["date"] = pd.to_datetime(frame["date"])
    return frame


@pytest.fixture(scope="module")
def nasdaq_subset(us_nasdaq_dir, tmp_path_factory):
    """A few us_nasdaq tickers (incl. the unadjusted CSX/MAR splits and BBH's bad bars) as a parquet."""
    table = pq.read_table(us_nasdaq_dir / "ohlcv.parquet", filters=[("ticker", "in", SUBSET)])
    path = tmp_path_factory.mktemp("nasdaq") / "subset.parquet"
    pq.write_table(table, path)
    return path, table.to_pandas()


def _bar(panel: Panel, ticker: str, date: str, field: str = "close") -> float:
    return float(panel.field(field)[panel.date_position(date, side="exact"), panel.asset_index(ticker)])


# ------------------------------------------------------------------- long
def test_long_stocknet_applies_adj_close(stocknet_dir, stocknet_rows):
    panel, report = read_long(stocknet_dir / "ohlcv.parquet")
    assert (panel.n_assets, panel.n_dates) == (88, 1258)
    assert report.rows_read == report.rows_imported == 108_589
    assert not report.fatal_issues and report.issue("adjusted").count > 0

    raw = stocknet_rows.set_index(["ticker", "date"])
    row = raw.loc[("AAPL", pd.Timestamp("2014-06-09"))]
    factor = row["adj_close"] / row["close"]
    assert _bar(panel, "AAPL", "2014-06-09") == pytest.approx(row["adj_close"], rel=1e-6)
    assert _bar(panel, "AAPL", "2014-06-09", "open") == pytest.approx(row["open"] * factor, rel=1e-6)
    assert _bar(panel, "AAPL", "2014-06-09", "volume") == pytest.approx(row["volume"] / factor, rel=1e-6)
    # amount is the traded value: raw close x raw volume, unchanged by the adjustment
    assert _bar(panel, "AAPL", "2014-06-09", "amount") == pytest.approx(
        row["close"] * row["volume"], rel=1e-6
    )

    # No 7x jump around AAPL's 7:1 split; the biggest daily move of the month is small.
    close = panel.select_assets(["AAPL"]).slice_dates("2014-05-20", "2014-06-20").close[:, 0]
    assert np.abs(np.diff(np.log(close))).max() < 0.05


def test_long_nasdaq_subset(nasdaq_subset):
    path, raw = nasdaq_subset
    panel, report = read_long(path)
    assert panel.n_assets == len(SUBSET) and report.rows_read == len(raw)
    # BBH carries high < low bars; they lose open/high/low but keep the close.
    issue = report.issue("high_below_low")
    assert issue.count > 0 and issue.examples[0].startswith("BBH ")
    first = issue.examples[0].split()[1]
    assert np.isnan(_bar(panel, "BBH", first, "high")) and not np.isnan(_bar(panel, "BBH", first))
    # Unadjusted split stays raw in the bars (corrections are separate).
    assert _bar(panel, "CSX", "2011-06-15") == pytest.approx(72.98, rel=1e-4)


def test_long_csv_with_amount_and_adj_close(tmp_path, stocknet_rows):
    rows = stocknet_rows[stocknet_rows["ticker"].isin(["AAPL", "XOM"])].copy()
    rows["amount"] = 123.0
    path = tmp_path / "long.csv"
    rows.assign(date=rows["date"].dt.strftime("%Y-%m-%d")).to_csv(path, index=False)
    assert detect_format(path) == "long"
    panel, report = read_long(path)
    assert panel.n_assets == 2 and report.issue("amount_computed") is None
    assert np.nanmax(panel.field("amount")) == pytest.approx(123.0)


def test_full_us_nasdaq_import(us_nasdaq_dir, tmp_path):
    start = time.perf_counter()
    report = import_dataset(
        us_nasdaq_dir / "ohlcv.parquet", tmp_path / "nasdaq", assets=us_nasdaq_dir / "assets.csv"
    )
    seconds = time.perf_counter() - start
    assert (report.tickers, report.dates, report.rows_imported) == (2800, 3257, 6_108_412)
    assert report.issue("high_below_low").count == 58  # as the README counts
    counts = report.correction_counts()
    assert counts["split"] >= 50 and counts["spike"] >= 300
    splits = report.corrections[report.corrections["kind"] == "split"]
    assert {("CSX", "2011-06-16"), ("MAR", "2006-06-12")} <= {
        (t, str(pd.Timestamp(d).date())) for t, d in zip(splits["ticker"], splits["date"], strict=True)
    }
    assert report.after_cleaning["up_x2_after"] < report.after_cleaning["up_x2_before"]
    assert seconds < 60, f"full import took {seconds:.1f}s (target 30s on 2 cores; see bench/import_speed.py)"


# ------------------------------------------------------------- csv folder
def _yahoo_csv(rows: pd.DataFrame, dates: list[str], with_adj: bool) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "Date": dates,
            "Open": rows["open"].to_numpy(),
            "High": rows["high"].to_numpy(),
            "Low": rows["low"].to_numpy(),
            "Close": rows["close"].to_numpy(),
        }
    )
    if with_adj:
        out["Adj Close"] = rows["adj_close"].to_numpy()
    out["Volume"] = rows["volume"].to_numpy()
    return out


def test_csv_folder_from_real_rows(tmp_path, stocknet_rows):
    folder = tmp_path / "yahoo"
    folder.mkdir()
    aapl = stocknet_rows[stocknet_rows["ticker"] == "AAPL"].head(300)
    msft = stocknet_rows[stocknet_rows["ticker"] == "MSFT"].head(300)
    ba = stocknet_rows[stocknet_rows["ticker"] == "BA"].head(300)
    _yahoo_csv(aapl, list(aapl["date"].dt.strftime("%Y-%m-%d")), True).to_csv(
        folder / "AAPL.csv", index=False
    )
    # Time-zone stamps (16:00 New York), lower-case file name, header with odd case and spaces.
    stamps = list((msft["date"] + pd.Timedelta(hours=16)).dt.tz_localize("America/New_York").astype(str))
    frame = _yahoo_csv(msft, stamps, True)
    frame.columns = [" date", "OPEN", "High ", "low", "Close", "adj  close", "VOLUME"]
    frame.to_csv(folder / "msft.csv", index=False)
    _yahoo_csv(ba, list(ba["date"].dt.strftime("%Y-%m-%d")), False).to_csv(folder / "BA.csv", index=False)
    (folder / "EMPTY.csv").write_text("Date,Open,High,Low,Close,Volume\n")
    assert stamps[0].endswith("16:00:00-04:00") and stamps[-1].endswith("16:00:00-05:00")  # both sides of DST

    panel, report = read_csv_folder(folder)
    assert list(panel.tickers) == ["AAPL", "BA", "MSFT"]
    assert report.issue("empty_file").examples == ["EMPTY.csv"]
    day = str(msft["date"].iloc[10].date())
    assert _bar(panel, "MSFT", day) == pytest.approx(msft["adj_close"].iloc[10], rel=1e-6)
    assert _bar(panel, "BA", day) == pytest.approx(ba["close"].iloc[10], rel=1e-6)  # no Adj Close: raw
    assert panel.dates[0] == np.datetime64(aapl["date"].iloc[0].date())
    assert panel.n_dates == 300
    panel2, _ = read_any(folder)
    assert panel2.fingerprint() == panel.fingerprint()


def test_csv_folder_bad_file_is_named(tmp_path, stocknet_rows):
    folder = tmp_path / "yahoo"
    folder.mkdir()
    rows = stocknet_rows[stocknet_rows["ticker"] == "AAPL"].head(20)
    _yahoo_csv(rows, list(rows["date"].dt.strftime("%Y-%m-%d")), False).to_csv(
        folder / "AAPL.csv", index=False
    )
    _yahoo_csv(rows, list(rows["date"].dt.strftime("%Y-%m-%d")), False).drop(columns="Close").to_csv(
        folder / "BAD.csv", index=False
    )
    with pytest.raises(DataImportError) as info:
        read_csv_folder(folder)
    assert "missing required column 'close' in 1 file(s)" in str(info.value) and "BAD.csv" in str(info.value)


# ------------------------------------------------------------------- wide
@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_wide_close_from_real_closes(tmp_path, stocknet_rows, suffix):
    wide = stocknet_rows.pivot(index="date", columns="ticker", values="close")
    path = tmp_path / f"wide.{suffix}"
    if suffix == "csv":
        wide.to_csv(path, date_format="%Y-%m-%d")
    else:
        wide.to_parquet(path)  # dates in the index
    assert detect_format(path) == "wide"
    panel, report = read_wide_close(path)
    assert (panel.n_assets, panel.n_dates) == (88, 1258)
    assert report.rows_imported == int(wide.notna().to_numpy().sum())
    assert _bar(panel, "AAPL", "2014-06-09") == pytest.approx(93.699997, rel=1e-6)
    for name in ("open", "high", "low", "volume", "amount"):
        assert np.isnan(panel.field(name)).all()


def test_wide_with_repeated_date_is_fatal(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text("date,AAA,BBB\n2020-01-02,1,2\n2020-01-03,1.1,2.1\n2020-01-03,1.2,2.2\n")
    with pytest.raises(DataImportError, match="repeat a date"):
        read_wide_close(path)


# ----------------------------------------------------------------- assets
def test_assets_files(stocknet_dir, us_nasdaq_dir, tmp_path):
    stocknet = read_assets(stocknet_dir / "assets.csv")
    assert len(stocknet) == 88 and set(stocknet["sector"]) >= {"Technology", "Utilities"}
    assert (stocknet["industry"] == "").all()
    nasdaq = read_assets(us_nasdaq_dir / "assets.csv")
    assert len(nasdaq) == 2800 and (nasdaq["sector"] != "").sum() == 870
    assert not nasdaq.isna().any().any()  # empty labels stay "", never NaN
    bad = tmp_path / "assets.csv"
    bad.write_text("symbol,name\nAAPL,Apple\n")
    with pytest.raises(DataImportError, match="missing required column 'ticker'"):
        read_assets(bad)


# ---------------------------------------------------------- import_dataset
def test_import_dataset_stocknet_round_trip(stocknet_dir, tmp_path):
    dest = tmp_path / "stocknet"
    report = import_dataset(stocknet_dir / "ohlcv.parquet", dest, assets=stocknet_dir / "assets.csv")
    assert report.correction_counts().get("split", 0) == 0  # adjusted data: nothing to fix
    panel = Panel.load(dest)
    assert panel.n_assets == 88 and panel.assets.set_index("ticker").loc["AAPL", "sector"] == "Consumer Goods"
    manifest = read_manifest(dest)
    assert manifest["source"].endswith("ohlcv.parquet") and manifest["report"]["rows_imported"] == 108_589
    full = json.loads((dest / "import_report.json").read_text())
    assert full["tickers"] == 88 and isinstance(full["issues"], list)


def test_wide_with_repeated_ticker_column_is_fatal(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text("date,AAA,BBB,AAA\n2020-01-02,1,2,3\n")
    with pytest.raises(DataImportError, match="'AAA' appear more than once"):
        read_wide_close(path)
