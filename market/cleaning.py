"""Detect and undo unadjusted splits and one-day bad ticks in a price panel.

Real daily bars (see shared/data/us_nasdaq/README.md) contain splits the source never
adjusted and single bad prints. Left in, one such bar is a 2x or 10x "return" that
dominates any return correlation the model learns from. Detection runs at import and
its result is stored beside the raw bars (`corrections.parquet`); `Panel.load` applies
it, so the raw bars stay untouched and every correction stays auditable.

Policy, per ticker, on the series of its valid closes (finite and > 0, in date order,
calendar gaps skipped rather than filled); ratio = close / previous valid close.

1. spike (a one-day bad tick): |log ratio| >= log 1.5, there is a next valid close,
   it is within 20% of the close before the jump (|next/prev - 1| <= 0.20), and at
   least half of the move is undone (|log next/prev| <= 0.5 |log ratio|).
   Action: the whole bar (all six fields) becomes NaN.
   Spikes are found first; ratios are then recomputed without the spike bars, so the
   reversal the day after a spike is not an event of its own.
2. split (a split the source did not adjust), all of:
   a. the ratio is within 4% of a split ratio s (|ratio/s - 1| <= 0.04), with s in
      {1/2, 1/3, 1/4, 1/5, 1/7, 1/8, 1/10} (forward splits: the price falls) or
      {2, 3, 4, 5, 7, 8, 10} (reverse splits);
   b. it persists: at least 2 valid closes follow, and the median of the next (up
      to) 5 valid closes over the close before the jump is within 15% of the ratio;
   c. it is extreme for this ticker: |log ratio| >= 5 x the RMS of its daily log
      returns over the 60 valid closes on either side (at least 10 of them), jump
      excluded. Penny stocks whose quotes flip between two ticks fail this;
   d. volume agrees: median volume over the jump day and the next 4 valid days,
      over the median of the 20 valid days before (at least 3 positive volumes on
      each side), lies in [0.5 min(1, 1/s), 2 max(1, 1/s)]. An unadjusted split
      scales share volume by 1/s (or not at all where the source adjusted volume
      only); a news move brings a volume surge instead;
   e. prices: both closes >= $0.10 (below that the source rounds to a tenth of a
      cent, so one tick is a split-sized ratio), and for a forward split the close
      before >= $10 (companies split to bring a high price down; a halving below
      $10 is a crash, not a split).
   Action: open, high, low and close on every date before the split date are
   multiplied by factor = s (0.5 for an unadjusted 2:1 split, 2 for a 1:2 reverse
   split); volume before that date is divided by s, so amount (traded value) is
   unchanged.
3. jump: any other move with |log ratio| >= log 2, and any split-sized move (rule a)
   that fails b-e (the detail says which test failed). Listed, never changed.

Not detected: 3:2, 4:3 and 5:4 splits. On us_nasdaq ~20,000 persisting moves lie
within 4% of those ratios, and the ones checked against known events were earnings
moves (AMD 2017-05-02, ILMN 2016-10-11, CSX 2017-01-19); even with tests c-e most
survivors were real. A missed 3:2 split costs one -33% return; a false one erases a
real move and rescales the history before it.

`detect_corrections` returns one row per event: ticker, date (datetime64), kind
('split' | 'spike' | 'jump'), ratio (observed close-to-close ratio), factor (the split
ratio applied; NaN for spikes and jumps) and detail (text). `apply_corrections`
applies the split and spike rows in place and ignores jumps. Applying the same rows
twice scales twice: apply them to raw bars only (Panel.load does so once per load).
Detection is one pass: on a cleaned panel it can still find a few events that the
first pass's own events hid (e.g. the second bad tick of a two-day run).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from market.panel import Panel

SPIKE_MIN_RATIO = 1.5
SPIKE_REVERT_TOLERANCE = 0.20
SPLIT_TOLERANCE = 0.04
SPLIT_PERSIST_TOLERANCE = 0.15
SPLIT_PERSIST_DAYS = 5
SPLIT_MIN_DAYS_AFTER = 2
SPLIT_MIN_SIGMAS = 5.0
VOLATILITY_DAYS = 60
VOLATILITY_MIN_DAYS = 10
VOLUME_DAYS_BEFORE = 20
VOLUME_DAYS_AFTER = 5
VOLUME_MIN_DAYS = 3
VOLUME_SLACK = 2.0
MIN_SPLIT_PRICE = 0.10
MIN_FORWARD_SPLIT_PRICE = 10.0
JUMP_MIN_RATIO = 2.0
# Shares after / before: 2 is a 2:1 split (the close halves), an unadjusted one moves
# the close by 1/n; the reverse split 1:n moves it by n.
SPLIT_SHARES: tuple[int, ...] = (2, 3, 4, 5, 7, 8, 10)

CORRECTION_COLUMNS: tuple[str, ...] = ("ticker", "date", "kind", "ratio", "factor", "detail")
CORRECTION_KINDS: tuple[str, ...] = ("split", "spike", "jump")


def empty_corrections() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ticker": pd.Series([], dtype=object),
            "date": pd.Series([], dtype="datetime64[ns]"),
            "kind": pd.Series([], dtype=object),
            "ratio": pd.Series([], dtype=np.float64),
            "factor": pd.Series([], dtype=np.float64),
            "detail": pd.Series([], dtype=object),
        }
    )


def _valid_series(close: np.ndarray, keep: np.ndarray | None = None):
    """Valid closes flattened ticker by ticker: (asset index, date index, close float64)."""
    by_ticker = np.ascontiguousarray(close.T)  # each ticker's dates are then adjacent
    valid = np.isfinite(by_ticker) & (by_ticker > 0)
    if keep is not None:
        valid &= keep.T
    flat = np.flatnonzero(valid)
    a_idx, d_idx = np.divmod(flat, close.shape[0])
    return a_idx, d_idx, by_ticker.ravel()[flat].astype(np.float64)


def _window(values: np.ndarray, a: np.ndarray, at: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """values[at + offset] for each offset, NaN where that position is another ticker's."""
    pos = at[:, None] + offsets[None, :]
    inside = (pos >= 0) & (pos < len(a))
    pos = np.clip(pos, 0, len(a) - 1)
    inside &= a[pos] == a[at][:, None]
    return np.where(inside, values[pos], np.nan)


def _nanmedian(rows: np.ndarray, min_count: int = 1) -> np.ndarray:
    """Row medians ignoring NaN; NaN where a row has fewer than min_count values."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows are expected
        med = np.nanmedian(rows, axis=1) if rows.size else np.full(len(rows), np.nan)
    med[(~np.isnan(rows)).sum(axis=1) < min_count] = np.nan
    return med


def _label(s: float) -> str:
    n = round(1 / s) if s < 1 else round(s)
    return f"{n}:1 split" if s < 1 else f"1:{n} reverse split"


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _find_spikes(a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Positions (in the flat valid series) of one-day bad ticks (policy rule 1)."""
    step = c[1:] / c[:-1]
    # Cheap prefilter on the plain ratio; the full test runs on the few candidates.
    i = np.flatnonzero((step >= SPIKE_MIN_RATIO) | (step <= 1.0 / SPIKE_MIN_RATIO)) + 1
    i = i[(i + 1 < len(a))]
    i = i[(a[i - 1] == a[i]) & (a[i + 1] == a[i])]
    prev, cur, nxt = c[i - 1], c[i], c[i + 1]
    log_r = np.log(cur / prev)
    keep = (np.abs(nxt / prev - 1.0) <= SPIKE_REVERT_TOLERANCE) & (
        np.abs(np.log(nxt / prev)) <= 0.5 * np.abs(log_r)
    )
    return i[keep]


def detect_corrections(panel: Panel) -> pd.DataFrame:
    """Splits, spikes and other large jumps in `panel`'s closes (see the module policy)."""
    close = panel.close
    rows: list[dict] = []

    a, d, c = _valid_series(close)
    spikes = _find_spikes(a, c)
    for i in spikes:
        rows.append(
            {
                "ticker": panel.tickers[a[i]],
                "date": panel.dates[d[i]],
                "kind": "spike",
                "ratio": c[i] / c[i - 1],
                "factor": np.nan,
                "detail": f"close {_fmt(c[i])} between {_fmt(c[i - 1])} and {_fmt(c[i + 1])}; bar set to NaN",
            }
        )

    # Splits and jumps, on the series without the spike bars.
    keep = np.ones(close.shape, dtype=bool)
    keep[d[spikes], a[spikes]] = False
    a, d, c = _valid_series(close, keep)
    same_prev = np.zeros(len(a), dtype=bool)
    same_prev[1:] = a[1:] == a[:-1]
    step = np.ones(len(a))
    step[1:] = c[1:] / c[:-1]
    step[~same_prev] = 1.0
    # Every split ratio is at least x2 (or /2) give or take the tolerance, so this is
    # a superset of both the split candidates and the jumps.
    least = 2.0 * (1.0 - SPLIT_TOLERANCE)
    cand = np.flatnonzero((step >= least) | (step <= 1.0 / least))
    prev = c[cand - 1]
    ratio = c[cand] / prev

    ratios = np.array([1.0 / n for n in SPLIT_SHARES] + [float(n) for n in SPLIT_SHARES])
    nearest = ratios[np.abs(np.log(ratio)[:, None] - np.log(ratios)[None, :]).argmin(axis=1)]
    split_sized = np.abs(ratio / nearest - 1.0) <= SPLIT_TOLERANCE

    # b. persistence: the next valid closes relative to the close before the jump.
    level = _window(c, a, cand, np.arange(1, SPLIT_PERSIST_DAYS + 1)) / prev[:, None]
    level_median = _nanmedian(level, SPLIT_MIN_DAYS_AFTER)
    persists = np.abs(level_median / ratio - 1.0) <= SPLIT_PERSIST_TOLERANCE

    # c. size against the ticker's own daily moves (RMS of log returns around the jump).
    around = np.r_[np.arange(-VOLATILITY_DAYS, 0), np.arange(1, VOLATILITY_DAYS + 1)]
    moves = np.log(_window(np.where(same_prev, step, np.nan), a, cand, around))
    n_moves = (~np.isnan(moves)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rms = np.sqrt(np.nansum(moves**2, axis=1) / n_moves)
        sigmas = np.abs(np.log(ratio)) / rms
    sigmas[n_moves < VOLATILITY_MIN_DAYS] = np.nan
    extreme = sigmas >= SPLIT_MIN_SIGMAS

    # d. volume level after the jump over before it.
    volume = panel.field("volume")[d, a].astype(np.float64)
    volume[~(volume > 0)] = np.nan
    vol_before = _nanmedian(_window(volume, a, cand, np.arange(-VOLUME_DAYS_BEFORE, 0)), VOLUME_MIN_DAYS)
    vol_after = _nanmedian(_window(volume, a, cand, np.arange(VOLUME_DAYS_AFTER)), VOLUME_MIN_DAYS)
    vol_ratio = vol_after / vol_before
    volume_ok = (vol_ratio >= 0.5 * np.minimum(1.0, 1.0 / nearest)) & (
        vol_ratio <= VOLUME_SLACK * np.maximum(1.0, 1.0 / nearest)
    )

    # e. price levels.
    price_ok = (np.minimum(prev, c[cand]) >= MIN_SPLIT_PRICE) & (
        (nearest > 1.0) | (prev >= MIN_FORWARD_SPLIT_PRICE)
    )

    is_split = split_sized & persists & extreme & volume_ok & price_ok
    # Split-sized moves that fail the tests are listed too, even just under x2.
    is_jump = ~is_split & (split_sized | (np.abs(np.log(ratio)) >= np.log(JUMP_MIN_RATIO)))
    for j in np.flatnonzero(is_split | is_jump):
        i = cand[j]
        move = f"close {_fmt(prev[j])} -> {_fmt(c[i])}"
        row = {"ticker": panel.tickers[a[i]], "date": panel.dates[d[i]], "ratio": ratio[j]}
        if is_split[j]:
            s = nearest[j]
            row.update(
                kind="split",
                factor=s,
                detail=(
                    f"{_label(s)} not adjusted: {move}, next closes x{level_median[j]:.3f}, "
                    f"{sigmas[j]:.0f} sigma, volume x{vol_ratio[j]:.2f}; earlier prices x{_fmt(s)}, "
                    f"volume /{_fmt(s)}"
                ),
            )
        else:
            failed = [
                name
                for name, ok in (
                    ("not a split ratio", split_sized[j]),
                    ("does not persist", persists[j]),
                    (f"only {sigmas[j]:.1f} sigma", extreme[j] or np.isnan(sigmas[j])),
                    ("too little history", not np.isnan(sigmas[j])),
                    (f"volume x{vol_ratio[j]:.2f}", volume_ok[j] or np.isnan(vol_ratio[j])),
                    ("no volume to confirm", not np.isnan(vol_ratio[j])),
                    ("price too low for a split", price_ok[j]),
                )
                if not ok
            ]
            row.update(kind="jump", factor=np.nan, detail=f"{move}; left as is ({', '.join(failed)})")
        rows.append(row)

    if not rows:
        return empty_corrections()
    frame = pd.DataFrame(rows, columns=list(CORRECTION_COLUMNS))
    frame = frame.astype(
        {"ticker": object, "kind": object, "detail": object, "ratio": float, "factor": float}
    )
    frame["date"] = pd.to_datetime(frame["date"]).astype("datetime64[ns]")
    return frame.sort_values(["ticker", "date"], ignore_index=True)


def summarize_corrections(corrections: pd.DataFrame) -> pd.DataFrame:
    """Per-ticker counts of each kind (columns ticker, split, spike, jump, total), most first."""
    if corrections is None or corrections.empty:
        return pd.DataFrame(
            {
                c: pd.Series([], dtype=object if c == "ticker" else np.int64)
                for c in ("ticker", *CORRECTION_KINDS, "total")
            }
        )
    counts = pd.crosstab(corrections["ticker"], corrections["kind"])
    counts = counts.reindex(columns=list(CORRECTION_KINDS), fill_value=0)
    counts["total"] = counts.sum(axis=1)
    counts = counts.sort_values(["total", "split"], ascending=False).reset_index()
    counts.columns.name = None
    return counts


def count_large_moves(close: np.ndarray, threshold: float = JUMP_MIN_RATIO) -> tuple[int, int]:
    """(up, down): close-to-close moves, against the previous valid close, of x`threshold` or
    more and of /`threshold` or less. With threshold 2, `up` counts daily returns >= +100%."""
    a, _, c = _valid_series(close)
    same = a[1:] == a[:-1]
    ratio = c[1:][same] / c[:-1][same]
    return int((ratio >= threshold).sum()), int((ratio <= 1.0 / threshold).sum())
