"""Split/spike detection and correction: a hand-built panel, a save/load round trip, real data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from market.cleaning import (
    count_large_moves,
    detect_corrections,
    summarize_corrections,
)
from market.importers import read_long
from market.panel import FIELDS, Panel, apply_corrections

N_DATES = 80
EVENT = 40  # date index of every event in the hand-built panel


def hand_built() -> Panel:
    """One ticker per case, 1% daily noise, all events on day EVENT:
    SPLIT  an unadjusted 2:1 split (price halves, volume doubles, and both stay);
    REV    an unadjusted 1:10 reverse split of a $0.50 stock (volume / 10);
    SPIKE  a one-day bad tick x3 that reverts the next day;
    MOVE   a real persistent +80% move (not a split ratio, under x2);
    RALLY  a real persistent x2.5 move;
    CRASH  a halving of a $5 stock on 10x volume (split-sized, but a crash)."""
    rng = np.random.default_rng(7)
    tickers = ["CRASH", "MOVE", "RALLY", "REV", "SPIKE", "SPLIT"]
    start = {"CRASH": 5.0, "MOVE": 30.0, "RALLY": 12.0, "REV": 0.5, "SPIKE": 20.0, "SPLIT": 100.0}
    level = {"CRASH": 0.5, "MOVE": 1.8, "RALLY": 2.5, "REV": 10.0, "SPIKE": 1.0, "SPLIT": 0.5}
    volume_level = {"CRASH": 10.0, "MOVE": 1.0, "RALLY": 1.0, "REV": 0.1, "SPIKE": 1.0, "SPLIT": 2.0}
    values = np.empty((len(FIELDS), N_DATES, len(tickers)), dtype=np.float32)
    for j, t in enumerate(tickers):
        close = start[t] * np.exp(np.cumsum(rng.normal(0, 0.01, N_DATES)))
        volume = 1e5 * np.exp(rng.normal(0, 0.1, N_DATES))
        close[EVENT:] *= level[t]
        volume[EVENT:] *= volume_level[t]
        if t == "SPIKE":
            close[EVENT] *= 3.0
        values[:3, :, j] = np.stack([close * 0.995, close * 1.01, close * 0.99])
        values[3, :, j] = close
        values[4, :, j] = volume
        values[5, :, j] = close * volume
    dates = np.busday_offset("2021-01-04", np.arange(N_DATES), roll="forward")
    return Panel(dates, tickers, values)


def by_ticker(corrections: pd.DataFrame) -> dict[str, list[str]]:
    return corrections.groupby("ticker")["kind"].apply(list).to_dict()


def test_detection_on_a_hand_built_panel():
    panel = hand_built()
    corrections = detect_corrections(panel)
    assert list(corrections.columns) == ["ticker", "date", "kind", "ratio", "factor", "detail"]
    assert corrections["date"].dtype.kind == "M"
    assert (corrections["date"] == pd.Timestamp(panel.dates[EVENT])).all()
    assert by_ticker(corrections) == {
        "CRASH": ["jump"],
        "RALLY": ["jump"],
        "REV": ["split"],
        "SPIKE": ["spike"],
        "SPLIT": ["split"],
    }  # fmt: skip  MOVE (x1.8, not a split ratio, under x2) is no event at all
    split = corrections.set_index("ticker").loc["SPLIT"]
    assert split["factor"] == 0.5 and split["ratio"] == pytest.approx(0.5, rel=0.04)
    assert "2:1 split" in split["detail"]
    assert corrections.set_index("ticker").loc["REV", "factor"] == 10.0
    assert "volume" in corrections.set_index("ticker").loc["CRASH", "detail"]  # why it is no split
    assert np.isnan(corrections.set_index("ticker").loc["SPIKE", "factor"])


def test_apply_adjusts_splits_nulls_spikes_and_leaves_the_rest():
    raw = hand_built()
    panel = hand_built()
    apply_corrections(panel, detect_corrections(panel))
    j = panel.asset_index
    # 2:1 split: earlier prices halved, earlier volume doubled, amount untouched.
    np.testing.assert_allclose(
        panel.values[:4, :EVENT, j("SPLIT")], raw.values[:4, :EVENT, j("SPLIT")] * 0.5, rtol=1e-6
    )
    np.testing.assert_allclose(
        panel.field("volume")[:EVENT, j("SPLIT")], raw.field("volume")[:EVENT, j("SPLIT")] * 2
    )
    np.testing.assert_array_equal(panel.field("amount")[:, j("SPLIT")], raw.field("amount")[:, j("SPLIT")])
    np.testing.assert_array_equal(panel.values[:, EVENT:, j("SPLIT")], raw.values[:, EVENT:, j("SPLIT")])
    # The spike bar is gone, all six fields; its neighbours are not.
    assert np.isnan(panel.values[:, EVENT, j("SPIKE")]).all()
    assert not np.isnan(panel.values[:, EVENT + 1, j("SPIKE")]).any()
    for t in ("MOVE", "RALLY", "CRASH"):
        np.testing.assert_array_equal(panel.values[:, :, j(t)], raw.values[:, :, j(t)])
    # No move of x1.5 or more is left in the corrected tickers.
    for t in ("SPLIT", "REV", "SPIKE"):
        close = panel.close[:, j(t)]
        close = close[~np.isnan(close)]
        assert np.abs(np.diff(np.log(close))).max() < np.log(1.5)
    # Cleaning is stable: a second detection finds nothing more to change.
    assert set(detect_corrections(panel)["kind"]) <= {"jump"}
    assert count_large_moves(panel.close, 1.9) == (1, 1)  # RALLY up, CRASH down


def test_round_trip_through_save_and_load(tmp_path):
    raw = hand_built()
    corrections = detect_corrections(raw)
    raw.save(tmp_path / "p", corrections=corrections)
    loaded_raw = Panel.load(tmp_path / "p", clean=False)
    np.testing.assert_array_equal(loaded_raw.values, raw.values)
    expected = apply_corrections(hand_built(), corrections)
    for _ in range(2):  # every load starts from the raw bars: no double scaling
        np.testing.assert_array_equal(Panel.load(tmp_path / "p").values, expected.values)
    stored = pd.read_parquet(tmp_path / "p" / "corrections.parquet")
    pd.testing.assert_frame_equal(stored, corrections, check_dtype=False)
    # A date slice is scaled like the full panel.
    part = Panel.load(tmp_path / "p", start=raw.dates[10], end=raw.dates[30])
    np.testing.assert_array_equal(part.values, expected.values[:, 10:31])


def test_summary_counts_per_ticker():
    summary = summarize_corrections(detect_corrections(hand_built()))
    assert list(summary.columns) == ["ticker", "split", "spike", "jump", "total"]
    assert summary["total"].sum() == 5 and summary.set_index("ticker").loc["SPLIT", "split"] == 1


def test_no_corrections_is_a_no_op():
    panel = hand_built()
    before = panel.values.copy()
    empty = detect_corrections(Panel(panel.dates, ["MOVE"], panel.values[:, :, [1]].copy()))
    assert empty.empty and list(empty.columns) == ["ticker", "date", "kind", "ratio", "factor", "detail"]
    apply_corrections(panel, empty)
    np.testing.assert_array_equal(panel.values, before)


def test_real_unadjusted_splits_in_us_nasdaq(us_nasdaq_dir, tmp_path):
    tickers = ["AAPL", "CSX", "MAR", "NFLX", "NVDA", "SBUX"]
    table = pq.read_table(us_nasdaq_dir / "ohlcv.parquet", filters=[("ticker", "in", tickers)])
    pq.write_table(table, tmp_path / "subset.parquet")
    panel, _ = read_long(tmp_path / "subset.parquet")
    corrections = detect_corrections(panel)
    splits = corrections[corrections["kind"] == "split"]
    found = {
        (t, str(pd.Timestamp(d).date())): f
        for t, d, f in zip(splits["ticker"], splits["date"], splits["factor"], strict=True)
    }
    assert found[("CSX", "2011-06-16")] == pytest.approx(1 / 3)
    assert found[("MAR", "2006-06-12")] == 0.5
    # The README's adjusted splits (AAPL 7:1, NFLX 7:1, NVDA 3:2, SBUX 2:1) need nothing.
    assert not set(splits["ticker"]) & {"AAPL", "NFLX", "NVDA", "SBUX"}
    apply_corrections(panel, corrections)
    csx = panel.select_assets(["CSX"]).slice_dates("2011-06-01", "2011-06-30").close[:, 0]
    assert np.abs(np.diff(np.log(csx))).max() < 0.1


def test_adjusted_stocknet_needs_no_split(stocknet_dir):
    panel, _ = read_long(stocknet_dir / "ohlcv.parquet")
    corrections = detect_corrections(panel)
    assert (corrections["kind"] != "split").all() and len(corrections) <= 2
