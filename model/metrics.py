"""Retrieval metrics on one date's cross-section (the full protocol builds on these)."""

from __future__ import annotations

import numpy as np


def top_k_peers(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest-scoring peers per row, best first, never the row itself."""
    s = np.array(scores, dtype=np.float64, copy=True)
    np.fill_diagonal(s, -np.inf)
    k = min(k, len(s) - 1)
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def frc_at_k(scores: np.ndarray, future_corr: np.ndarray, k: int) -> np.ndarray:
    """Per query: mean future return correlation between the query and its top-k peers."""
    peers = top_k_peers(scores, k)
    return np.take_along_axis(future_corr, peers, axis=1).mean(axis=1)
