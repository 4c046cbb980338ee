"""Future returns: the only code that reads bars after the query date.

Only the loss (through the trainer) and the evaluation call this module, so a
look-ahead leak has one place to hide and one test (tests/model/test_targets.py)
to catch it. Everything else works on windows ending at the query date.
"""

from __future__ import annotations

import numpy as np

HORIZON = 64


def future_returns(close: np.ndarray, date_index: int, assets: np.ndarray, horizon: int = HORIZON):
    """Simple close-to-close returns over (D, D + horizon] for `assets` at date position `date_index`.

    close: (dates x assets) closes. Returns (returns (len(assets), horizon) float64, valid bool mask):
    a sample is valid only if the close at D and all `horizon` future closes exist.
    """
    assets = np.asarray(assets, dtype=np.int64)
    end = date_index + horizon + 1
    if end > close.shape[0]:
        return np.full((len(assets), horizon), np.nan), np.zeros(len(assets), dtype=bool)
    path = close[date_index:end, assets].astype(np.float64).T  # (B, horizon + 1), starts at D
    returns = path[:, 1:] / path[:, :-1] - 1.0
    valid = np.isfinite(returns).all(axis=1)
    return returns, valid


def pearson_matrix(returns: np.ndarray) -> np.ndarray:
    """Pairwise Pearson correlation of the rows of `returns` (B x H); constant rows give 0."""
    x = returns - returns.mean(axis=1, keepdims=True)
    norm = np.where(np.ptp(returns, axis=1, keepdims=True) > 0, np.linalg.norm(x, axis=1, keepdims=True), 0.0)
    x = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
    return np.clip(x @ x.T, -1.0, 1.0)


def future_complete(close: np.ndarray, horizon: int = HORIZON) -> np.ndarray:
    """(dates x assets) bool: the close at D and all `horizon` following closes exist."""
    present = np.isfinite(close)
    counts = np.concatenate(
        [np.zeros((1, close.shape[1]), np.int32), np.cumsum(present, axis=0, dtype=np.int32)]
    )
    out = np.zeros(close.shape, dtype=bool)
    n = close.shape[0] - horizon
    if n > 0:
        out[:n] = (counts[horizon + 1 : horizon + 1 + n] - counts[:n]) == horizon + 1
    return out
