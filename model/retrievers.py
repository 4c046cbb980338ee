"""Every retriever the evaluation compares, behind one interface.

A retriever scores one date's cross-section: given the shared `EvalContext`, a date position t and
the B eligible asset indices, `scores(ctx, t, assets)` returns a (B x B) matrix in which a higher
value means a closer peer (the diagonal is ignored). A row of NaN means "this query was not
scored" (DTW scores a subsample of queries on wide universes). Retrievers built on embeddings use
`cosine_scores`. FASCL checkpoints, the baselines and the oracle all plug in the same way, so a new
method is one class with a `name` and a `scores` method.

Only the oracle reads the future, and only through `model.targets`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from market.panel import Panel
from model.features import WINDOW, FeatureCube, build_cube, channel_names, historical_returns
from model.targets import HORIZON, future_returns, pearson_matrix

PCA_LOOKBACK = 252  # trailing daily returns for the PCA baseline
PCA_COMPONENTS = 10
DTW_BAND = 8  # Sakoe-Chiba band (days) of the DTW baseline


@dataclass
class EvalContext:
    """What every retriever may read: the panel (bars up to the query date), feature cubes per channel
    set (built once, on first use), closes and sectors. `seed` makes the random baselines repeatable."""

    panel: Panel
    window: int = WINDOW
    seed: int = 0
    _cubes: dict[str, FeatureCube] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.close = self.panel.field("close")
        self.sectors = np.asarray(self.panel.assets["sector"].fillna("").astype(str), dtype=object)

    def cube(self, channels: str) -> FeatureCube:
        """The feature cube of a channel set; a set that is a prefix of a built one reuses its memory."""
        if channels not in self._cubes:
            names = channel_names(channels)
            for built in self._cubes.values():
                have = channel_names(built.channels)
                if have[: len(names)] == names and built.window == self.window:
                    self._cubes[channels] = FeatureCube(
                        built.series[: len(names)],
                        built.eligible,
                        built.close,
                        built.dates,
                        built.tickers,
                        channels,
                        built.window,
                    )
                    break
            else:
                self._cubes[channels] = build_cube(self.panel, channels, self.window)
        return self._cubes[channels]

    def rng(self, name: str, t: int) -> np.random.Generator:
        """A generator fixed by (seed, method, date), independent of which other methods run."""
        return np.random.default_rng([self.seed, zlib.crc32(name.encode()), int(t)])


@runtime_checkable
class Retriever(Protocol):
    name: str

    def scores(self, ctx: EvalContext, t: int, assets: np.ndarray) -> np.ndarray: ...


def cosine_scores(z: np.ndarray | torch.Tensor) -> np.ndarray:
    """Cosine similarity of the rows of z."""
    z = torch.as_tensor(z, dtype=torch.float32)
    z = torch.nn.functional.normalize(z, dim=-1)
    return (z @ z.T).double().numpy()


# ------------------------------------------------------------------ baselines
@dataclass
class RandomRetriever:
    """The floor: peers drawn uniformly at random."""

    name: str = "random"

    def scores(self, ctx, t, assets):
        n = len(assets)
        return ctx.rng(self.name, t).random((n, n))


@dataclass
class OracleRetriever:
    """The ceiling: rank by realised future return correlation (reads the future via model.targets)."""

    name: str = "oracle"
    horizon: int = HORIZON

    def scores(self, ctx, t, assets):
        returns, _ = future_returns(ctx.close, t, assets, self.horizon)
        return pearson_matrix(returns)


@dataclass
class PearsonRetriever:
    """Historical correlation of daily returns over the same window the encoder sees."""

    name: str = "pearson"

    def scores(self, ctx, t, assets):
        return pearson_matrix(historical_returns(ctx.close, t, assets, ctx.window))


@dataclass
class WinsorizedPearsonRetriever:
    """Pearson on returns z-scored in the window and clipped at +-2.5 sd: the robust retriever the
    `small` encoder's return skip starts from, so a report shows what training added beyond it."""

    name: str = "pearson_w"
    bound: float = 2.5

    def scores(self, ctx, t, assets):
        r = historical_returns(ctx.close, t, assets, ctx.window)
        std = r.std(axis=1, keepdims=True)
        z = (r - r.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)
        return pearson_matrix(np.clip(z, -self.bound, self.bound))


@dataclass
class SectorRetriever:
    """Peers drawn at random from the query's sector, then at random from the rest when the sector
    has too few members (or the query's sector is unknown)."""

    name: str = "sector"

    def scores(self, ctx, t, assets):
        sectors = ctx.sectors[np.asarray(assets)]
        same = (sectors[:, None] == sectors[None, :]) & (sectors != "")[:, None]
        return same + 0.5 * ctx.rng(self.name, t).random(same.shape)


@dataclass
class PCARetriever:
    """Cosine of loadings on the top principal components of trailing daily returns.

    Returns over the last `lookback` days (fewer where the panel or the asset is younger) are
    standardised per asset over the days it has, missing days count as 0, and loadings are the
    assets' coordinates (V * S) on the top `components` singular vectors."""

    name: str = "pca"
    lookback: int = PCA_LOOKBACK
    components: int = PCA_COMPONENTS

    def scores(self, ctx, t, assets):
        start = max(0, t - self.lookback)
        path = ctx.close[start : t + 1, np.asarray(assets)].astype(np.float64)
        r = path[1:] / path[:-1] - 1.0  # (L, B), NaN where a bar is missing
        finite = np.isfinite(r)
        count = np.maximum(finite.sum(axis=0), 1)
        mean = np.where(finite, r, 0.0).sum(axis=0) / count
        dev = np.where(finite, r - mean, 0.0)
        sd = np.sqrt((dev**2).sum(axis=0) / count)
        z = np.divide(dev, sd, out=np.zeros_like(dev), where=sd > 0)
        # Loadings V_k S_k of the SVD z = U S V^T, from the small (L x L) Gram matrix: z^T U_k.
        eigval, eigvec = np.linalg.eigh(z @ z.T)
        k = min(self.components, len(eigval))
        return cosine_scores(z.T @ eigvec[:, ::-1][:, :k])


@dataclass
class WindowRetriever:
    """Cosine of the raw model input: the flattened, per-channel z-scored feature window."""

    name: str = "window"
    channels: str = "ohlcva"

    def scores(self, ctx, t, assets):
        x = ctx.cube(self.channels).windows(t, assets)
        return cosine_scores(x.reshape(len(assets), -1))


@dataclass
class DTWRetriever:
    """Negative DTW distance between z-scored close paths over the window (dtaidistance, C/OpenMP).

    A Sakoe-Chiba band of `band` days bounds the warping. The full matrix costs B^2/2 distances (it is
    symmetric), `max_queries` rows against every candidate cost max_queries * B: so when B exceeds
    2 * max_queries a random subsample of `max_queries` queries per date is scored and the other rows
    are NaN (the report says so); otherwise every query is."""

    name: str = "dtw"
    band: int = DTW_BAND
    max_queries: int | None = 1500

    def scores(self, ctx, t, assets):
        from dtaidistance import dtw

        assets = np.asarray(assets)
        n = len(assets)
        path = ctx.close[t - ctx.window + 1 : t + 1, assets].astype(np.float64).T
        sd = path.std(axis=1, keepdims=True)
        series = np.divide(path - path.mean(axis=1, keepdims=True), sd, out=np.zeros_like(path), where=sd > 0)
        out = np.full((n, n), np.nan)
        if self.max_queries is None or n <= 2 * self.max_queries:
            dist = dtw.distance_matrix_fast(np.ascontiguousarray(series), window=self.band, compact=False)
            out[:] = -dist
            return out
        queries = np.sort(ctx.rng(self.name, t).choice(n, self.max_queries, replace=False))
        rest = np.setdiff1d(np.arange(n), queries)
        order = np.concatenate([queries, rest])  # queries first, so they form one block of rows
        q = len(queries)
        flat = dtw.distance_matrix_fast(
            np.ascontiguousarray(series[order]), window=self.band, block=((0, q), (0, n), False), compact=True
        )
        # compact=True with a non-triangular block lists the whole block row by row.
        out[queries[:, None], order[None, :]] = -np.asarray(flat).reshape(q, n)
        return out


# ----------------------------------------------------------------------- FASCL
@dataclass
class FasclRetriever:
    """Cosine of a trained FASCL encoder's embeddings; the channel set comes from the checkpoint."""

    name: str
    model: torch.nn.Module
    meta: dict
    channels: str
    path: str = ""
    chunk: int = 1024

    @classmethod
    def from_checkpoint(cls, path: str | Path, name: str = "fascl") -> FasclRetriever:
        from model.checkpoint import load_encoder

        model, meta = load_encoder(path)
        channels = meta.get("train_config", {}).get("channels", "ohlcva")
        if len(channel_names(channels)) != model.config.in_channels:
            raise ValueError(
                f"{path}: channel set {channels!r} does not match the encoder's {model.config.in_channels} inputs"
            )
        return cls(name=name, model=model, meta=meta, channels=channels, path=str(path))

    @torch.no_grad()
    def embed(self, ctx: EvalContext, t: int, assets: np.ndarray) -> torch.Tensor:
        cube = ctx.cube(self.channels)
        assets = np.asarray(assets)
        return torch.cat(
            [
                self.model(cube.windows(t, assets[lo : lo + self.chunk])).float()
                for lo in range(0, len(assets), self.chunk)
            ]
        )

    def scores(self, ctx, t, assets):
        return cosine_scores(self.embed(ctx, t, assets))


BASELINES: dict[str, type] = {
    "random": RandomRetriever,
    "oracle": OracleRetriever,
    "pearson": PearsonRetriever,
    "pearson_w": WinsorizedPearsonRetriever,
    "sector": SectorRetriever,
    "pca": PCARetriever,
    "window": WindowRetriever,
    "dtw": DTWRetriever,
}


def make_baseline(name: str, **options) -> Retriever:
    try:
        return BASELINES[name](**options)
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(BASELINES)}") from None
