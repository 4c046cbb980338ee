"""Every retriever the evaluation compares, behind one interface.

A retriever scores one date's cross-section: given the shared `EvalContext`, a date position t and
the B eligible asset indices, `scores(ctx, t, assets)` returns a (B x B) matrix in which a higher
value means a closer peer (the diagonal is ignored). A row of NaN means "this query was not
scored" (DTW scores a subsample of queries on wide universes). Retrievers built on embeddings use
`cosine_scores`. FASCL checkpoints, the baselines and the oracle all plug in the same way, so a new
method is one class with a `name` and a `scores` method.

Every retriever declares `history`, the number of past closes (ending at the query date) it reads,
so the evaluation slices enough of the panel before its first query date. Only the oracle reads the
future, and only through `model.targets`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from market.panel import Panel
from model.features import WINDOW, FeatureCube, build_cube, channel_names, historical_returns, slice_inputs
from model.history import (
    BOUND,
    HISTORY,
    SHRINK,
    daily_returns,
    history_window,
    history_zscores,
    market_direction,
    shrink_to_market,
    winsorized_rows,
)
from model.loss import as_queries
from model.targets import HORIZON, future_returns, pearson_matrix

PCA_LOOKBACK = 252  # trailing daily returns for the PCA baseline
PCA_COMPONENTS = 10
DTW_BAND = 8  # Sakoe-Chiba band (days) of the DTW baseline
HALF_LIFE = 126  # trading days, of the exponentially weighted correlation baseline
PCA_FACTORS = 5  # factors of the model the PCA-shrinkage baseline shrinks towards


@dataclass
class EvalContext:
    """What every retriever may read: the panel (bars up to the query date), feature cubes per channel
    set and daily returns (built once, on first use), closes and sectors. `seed` makes the random
    baselines repeatable. The panel is read as it is when first used: change it, make a new context."""

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

    @cached_property
    def returns(self) -> np.ndarray:
        """(dates x assets) daily close-to-close returns (model.history.daily_returns), computed once."""
        return daily_returns(self.close)


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
    history: ClassVar[int] = 0

    def scores(self, ctx, t, assets):
        n = len(assets)
        return ctx.rng(self.name, t).random((n, n))


@dataclass
class OracleRetriever:
    """The ceiling: rank by realised future return correlation (reads the future via model.targets)."""

    name: str = "oracle"
    horizon: int = HORIZON
    history: ClassVar[int] = 1  # the close on the query date, the base of the first future return

    def scores(self, ctx, t, assets):
        returns, _ = future_returns(ctx.close, t, assets, self.horizon)
        return pearson_matrix(returns)


@dataclass
class PearsonRetriever:
    """Historical correlation of daily returns over the same window the encoder sees."""

    name: str = "pearson"
    history: ClassVar[int] = WINDOW  # ctx.window closes

    def scores(self, ctx, t, assets):
        return pearson_matrix(historical_returns(ctx.close, t, assets, ctx.window))


@dataclass
class WinsorizedPearsonRetriever:
    """Winsorised Pearson over the `length` daily returns ending at D: each asset's returns z-scored
    over the days it has in that span, clipped at +-`bound` sd, gaps as 0, then Pearson, i.e. the
    inner products of `model.history.winsorized_rows`. A longer history than the encoder's window is
    what a correlation screen would use; where the panel is younger, the days before it are gaps."""

    name: str = "pearson_w"
    length: int = WINDOW
    bound: float = BOUND

    @property
    def history(self) -> int:
        return self.length + 1  # `length` returns need one close more

    def rows(self, ctx, t, assets) -> np.ndarray:
        return winsorized_rows(history_zscores(ctx.returns, t, assets, self.length), self.bound)

    def universe_rows(self, ctx, t) -> np.ndarray:
        """The rows of every asset eligible on D by its past alone (a complete window ending at D): the
        cross-section a factor model is fitted on, not only the queried assets, which the evaluation
        also restricts by their future."""
        return self.rows(ctx, t, np.flatnonzero(ctx.cube("close").eligible[t]))

    def scores(self, ctx, t, assets):
        rows = self.rows(ctx, t, assets)
        return rows @ rows.T


@dataclass
class EwmaPearsonRetriever:
    """Exponentially weighted winsorised Pearson over `length` days: day d of the span weighs
    0.5 ** (age / half_life) (age 0 on D). Each asset's returns are z-scored with the weighted mean and
    standard deviation of its present days, clipped at +-`bound`, gaps as 0; the score is the weighted
    Pearson correlation of those z-scores. An infinite half-life is `pearson_w` over the same days."""

    name: str = "ewma504"
    length: int = HISTORY
    half_life: float = HALF_LIFE
    bound: float = BOUND

    @property
    def history(self) -> int:
        return self.length + 1

    def rows(self, ctx, t, assets) -> np.ndarray:
        r = history_window(ctx.returns, t, assets, self.length)
        weight = 0.5 ** (np.arange(self.length - 1, -1, -1) / self.half_life)
        present = np.isfinite(r)
        w = np.where(present, weight, 0.0)
        total = np.maximum(w.sum(axis=1, keepdims=True), 1e-300)
        filled = np.where(present, r, 0.0)
        mean = (w * filled).sum(axis=1, keepdims=True) / total
        dev = np.where(present, r - mean, 0.0)
        std = np.sqrt((w * dev**2).sum(axis=1, keepdims=True) / total)
        z = np.clip(np.divide(dev, std, out=np.zeros_like(dev), where=std > 1e-12), -self.bound, self.bound)
        # Weighted Pearson of z: centre with the weighted mean over every day (gaps count as 0, as in
        # the unweighted rows), scale by the square root of the weight, and take unit rows.
        weight = weight / weight.sum()
        z = z - (z * weight).sum(axis=1, keepdims=True)
        x = z * np.sqrt(weight)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return np.divide(x, norm, out=np.zeros_like(x), where=norm > 1e-12)

    def scores(self, ctx, t, assets):
        rows = self.rows(ctx, t, assets)
        return rows @ rows.T


@dataclass
class MarketShrinkRetriever(WinsorizedPearsonRetriever):
    """Winsorised Pearson over `length` days shrunk towards the single-index (market) model and not
    renormalised: e = shrink_to_market(rows, m, shrink), score = e_i . e_j
    = (1 - a) R_ij + a (R m)_i (R m)_j, with m the unit mean of `universe_rows`. Without renormalisation
    the score favours peers that co-move with the market, which is where future correlations are large.
    The `small` encoder's history path starts as this retriever (model/encoder.py)."""

    name: str = "shrink_market504"
    length: int = HISTORY
    shrink: float = SHRINK

    def scores(self, ctx, t, assets):
        market = market_direction(self.universe_rows(ctx, t))
        e = shrink_to_market(self.rows(ctx, t, assets), market, self.shrink)
        return e @ e.T


@dataclass
class PCAShrinkRetriever(WinsorizedPearsonRetriever):
    """Winsorised Pearson over `length` days shrunk towards a `factors`-factor model, not renormalised:
    score = (1 - a) R + a R_k, where R = H H^T is the correlation of the winsorised unit rows H and R_k
    its part explained by the top `factors` principal components, T T^T with T = H V_k (V_k the top
    right singular vectors of `universe_rows`). Off the diagonal, R_k is what the factor model says
    about a pair; the diagonal, which idiosyncratic variances would set to 1, is never ranked.

    The factors come from sklearn's TruncatedSVD (ARPACK): the rows are already centred, so this is PCA
    with days as samples, without PCA's full SVD of a (days x assets) matrix (seconds per date on 2,000
    assets, against a fraction of a second).

    Shrinkage towards the identity (sklearn.covariance.LedoitWolf, OAS) is not offered: it scales the
    off-diagonal correlations by one constant, which leaves every ranking of peers unchanged."""

    name: str = "shrink_pca504"
    length: int = HISTORY
    factors: int = PCA_FACTORS
    shrink: float = SHRINK

    def scores(self, ctx, t, assets):
        from sklearn.decomposition import TruncatedSVD

        rows = self.rows(ctx, t, assets)
        corr = rows @ rows.T
        fit = self.universe_rows(ctx, t)
        if self.factors >= min(fit.shape):  # as many factors as the data has: the model is R itself
            return corr
        svd = TruncatedSVD(n_components=self.factors, algorithm="arpack", random_state=0).fit(fit)
        factors = rows @ svd.components_.T  # (B, k) = H V_k
        return (1.0 - self.shrink) * corr + self.shrink * (factors @ factors.T)


@dataclass
class SectorRetriever:
    """Peers drawn at random from the query's sector, then at random from the rest when the sector
    has too few members (or the query's sector is unknown)."""

    name: str = "sector"
    history: ClassVar[int] = 0

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

    @property
    def history(self) -> int:
        return self.lookback + 1

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
    history: ClassVar[int] = WINDOW  # ctx.window closes

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
    history: ClassVar[int] = WINDOW  # ctx.window closes

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
def classical_start(enc) -> str:
    """The name of the classical retriever an encoder (an EncoderConfig) starts from, as named here:
    what its history path reproduces before training (plain Pearson for the paper's encoder)."""
    if not enc.history:
        return "pearson"
    if enc.history_shrink > 0:
        return f"shrink_market{enc.history}"
    return "pearson_w" if enc.history == 64 else f"pearson_w{enc.history}"


@dataclass
class FasclRetriever:
    """Similarity of a trained FASCL encoder's embeddings (cosine, or the inner product of an encoder
    with a history path); the channel set comes from the checkpoint."""

    name: str
    model: torch.nn.Module
    meta: dict
    channels: str
    path: str = ""
    chunk: int = 1024
    _cube_of: tuple | None = field(default=None, init=False, repr=False)  # (context, its feature cube)

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

    @property
    def history(self) -> int:
        """Days of past closes the encoder reads (its window, or its long history)."""
        return max(self.model.config.window, self.model.config.history + 1)

    @property
    def start(self) -> str | None:
        """The classical retriever an encoder with a history path starts from (None without one)."""
        return classical_start(self.model.config) if self.model.config.history else None

    def _cube(self, ctx: EvalContext) -> FeatureCube:
        # One cube per context: its history inputs and per-date market directions are reused.
        if self._cube_of is None or self._cube_of[0] is not ctx:
            self._cube_of = (ctx, ctx.cube(self.channels).with_history(self.model.config.history))
        return self._cube_of[1]

    @torch.no_grad()
    def embed(self, ctx: EvalContext, t: int, assets: np.ndarray) -> torch.Tensor:
        inputs = self._cube(ctx).model_inputs(t, np.asarray(assets))
        return torch.cat(
            [
                self.model(*slice_inputs(inputs, lo, lo + self.chunk)).float()
                for lo in range(0, len(assets), self.chunk)
            ]
        )

    def scores(self, ctx, t, assets):
        z = self.embed(ctx, t, assets)
        # An encoder with a history path ranks by inner product (model/encoder.py, unit_norm), its
        # queries reading a candidate prior as 1 (query_prior).
        if self.model.unit_norm:
            return cosine_scores(z)
        return (as_queries(z, self.model.query_prior).double() @ z.double().T).numpy()


def _named(cls, name: str, **fixed):
    """A registry entry: `cls` with its name and settings fixed (options still override them)."""

    def make(**options):
        return cls(**{"name": name, **fixed, **options})

    return make


BASELINES: dict = {
    "random": RandomRetriever,
    "oracle": OracleRetriever,
    "pearson": PearsonRetriever,
    "pearson_w": WinsorizedPearsonRetriever,
    "pearson_w126": _named(WinsorizedPearsonRetriever, "pearson_w126", length=126),
    "pearson_w252": _named(WinsorizedPearsonRetriever, "pearson_w252", length=252),
    "pearson_w504": _named(WinsorizedPearsonRetriever, "pearson_w504", length=504),
    "ewma504": EwmaPearsonRetriever,
    "shrink_market504": MarketShrinkRetriever,
    "shrink_pca504": PCAShrinkRetriever,
    "sector": SectorRetriever,
    "pca": PCARetriever,
    "window": WindowRetriever,
    "dtw": DTWRetriever,
}
# The non-learned retrievers a learned model has to beat: every baseline but the floor and the ceiling.
CLASSICAL: tuple[str, ...] = tuple(n for n in BASELINES if n not in ("random", "oracle"))


def start_retriever(enc) -> Retriever:
    """The classical retriever an encoder (an EncoderConfig) starts from, named `classical_start(enc)`:
    the registered baseline of that name where the settings agree, otherwise one built with the
    encoder's own history length, bound and shrinkage (shrink_market126 for a 126-day start, say)."""
    name = classical_start(enc)
    if not enc.history:
        return PearsonRetriever()
    if enc.history_shrink > 0:
        return MarketShrinkRetriever(
            name=name, length=enc.history, bound=enc.history_bound, shrink=enc.history_shrink
        )
    return WinsorizedPearsonRetriever(name=name, length=enc.history, bound=enc.history_bound)


def make_baseline(name: str, **options) -> Retriever:
    try:
        factory = BASELINES[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(BASELINES)}") from None
    return factory(**options)
