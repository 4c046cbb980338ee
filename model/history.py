"""Long-history returns: the point-in-time input of the classical retrievers and of the model's history path.

A quant's correlation screen reads far more than the paper's 64 days. Everything here reads the
`length` daily returns ending at the query date D (inclusive) and nothing after it:

- `history_zscores`: each asset's returns z-scored over the days it has in the window (a missing
  close makes that day's and the next day's return a gap), gaps as 0, not yet clipped;
- `unit_rows(np.clip(z, -bound, bound))`: centred, unit-length rows, so that the inner product of two
  rows is the winsorised Pearson correlation of the two assets;
- `market_direction`: the unit mean of those rows over a date's cross-section, the single-index
  (market) model's factor;
- `shrink_to_market`: rows whose inner products are the correlation matrix shrunk towards the
  single-index model, (1 - a) R + a (R m)(R m)^T, *without* renormalising: ranking by that inner
  product favours peers that co-move with the market, which is where future correlation is large.

The numpy functions here define the classical retrievers (model/retrievers.py); the model's history
path (model/encoder.py) applies the same arithmetic in torch, initialised to reproduce them exactly.
"""

from __future__ import annotations

import numpy as np

HISTORY = 504  # trading days of returns (two years), chosen on the validation year
RECENT = (
    126  # days of the recent block of the small encoder (model/encoder.py), chosen on the validation year
)
BOUND = 2.5  # winsorising bound in standard deviations
SHRINK = 0.2  # weight of the single-index model in the shrunk correlation


def daily_returns(close: np.ndarray) -> np.ndarray:
    """(dates x assets) simple close-to-close returns, NaN where either close is missing; row 0 is NaN."""
    close = np.asarray(close, dtype=np.float64)
    out = np.full(close.shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[1:] = close[1:] / close[:-1] - 1.0
    out[~np.isfinite(out)] = np.nan
    return out


def history_window(returns: np.ndarray, t: int, assets: np.ndarray, length: int) -> np.ndarray:
    """(B, length) returns of `assets` on the `length` days ending at position t; NaN before the data."""
    assets = np.asarray(assets, dtype=np.int64)
    lo = t - length + 1
    window = returns[max(lo, 0) : t + 1, assets].T
    if lo < 0:
        window = np.concatenate([np.full((len(assets), -lo), np.nan), window], axis=1)
    return window


def history_zscores(returns: np.ndarray, t: int, assets: np.ndarray, length: int = HISTORY) -> np.ndarray:
    """(B, length) float64: each row z-scored over its present days, gaps as 0 (not clipped)."""
    r = history_window(returns, t, assets, length)
    present = np.isfinite(r)
    count = present.sum(axis=1, keepdims=True)
    filled = np.where(present, r, 0.0)
    mean = filled.sum(axis=1, keepdims=True) / np.maximum(count, 1)
    dev = np.where(present, r - mean, 0.0)
    std = np.sqrt((dev**2).sum(axis=1, keepdims=True) / np.maximum(count, 1))
    return np.divide(dev, std, out=np.zeros_like(dev), where=std > 1e-12)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit length; a constant row becomes zeros."""
    x = x - x.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 1e-12)


def winsorized_rows(z: np.ndarray, bound: float = BOUND) -> np.ndarray:
    """Unit rows of the clipped z-scores: their inner products are winsorised Pearson correlations."""
    return unit_rows(np.clip(z, -bound, bound))


def market_direction(rows: np.ndarray) -> np.ndarray:
    """The unit mean of a cross-section's unit rows (zeros if they cancel or there are none)."""
    if len(rows) == 0:
        return np.zeros(rows.shape[1])
    mean = rows.mean(axis=0)
    norm = np.linalg.norm(mean)
    return mean / norm if norm > 1e-12 else np.zeros_like(mean)


def shrink_to_market(rows: np.ndarray, market: np.ndarray, shrink: float = SHRINK) -> np.ndarray:
    """Rows e_i = A h_i with A = sqrt(1 - a) I + (1 - sqrt(1 - a)) m m^T, so e_i . e_j =
    (1 - a) h_i . h_j + a (h_i . m)(h_j . m). Lengths stay at most 1; they are not renormalised."""
    if not 0.0 <= shrink < 1.0:
        raise ValueError(f"shrink must be in [0, 1), not {shrink}")
    keep = np.sqrt(1.0 - shrink)
    return keep * rows + (1.0 - keep) * np.outer(rows @ market, market)
