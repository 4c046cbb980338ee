"""Window features: each asset's trailing 64-day window, each channel z-scored along time.

The panel's fields are prepared once into a (channels, dates, assets) tensor (`FeatureCube`);
a training batch or an export is then a slice plus a per-window z-score, all in torch, with no
Python loop over samples. Nothing here reads a bar after the window's last day.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from market.panel import Panel
from model.history import BOUND, daily_returns, history_zscores, market_direction, winsorized_rows

WINDOW = 64

# Channel sets. The paper uses six price/volume channels, or close only as an ablation.
# "ohlcva_ret" adds the daily simple return, which on a 2-core budget gives the encoder
# the co-movement signal directly instead of learning to difference prices first.
CHANNEL_SETS: dict[str, tuple[str, ...]] = {
    "ohlcva": ("open", "high", "low", "close", "volume", "amount"),
    "close": ("close",),
    "ohlcva_ret": ("open", "high", "low", "close", "volume", "amount", "return"),
    "close_ret": ("close", "return"),  # the close-only ablation of the CPU configuration
}


def channel_names(channels: str) -> tuple[str, ...]:
    try:
        return CHANNEL_SETS[channels]
    except KeyError:
        raise ValueError(
            f"unknown channel set {channels!r}; choose one of {', '.join(CHANNEL_SETS)}"
        ) from None


@dataclass
class FeatureCube:
    series: torch.Tensor  # float32 (channels, dates, assets), NaN-free
    eligible: np.ndarray  # bool (dates, assets): a complete window ends here
    close: np.ndarray  # float (dates, assets) with NaN where missing; targets read it
    dates: np.ndarray
    tickers: np.ndarray
    channels: str
    window: int = WINDOW
    history: int = 0  # days of long-history returns for the model's history path (0: none)
    returns: np.ndarray | None = None  # (dates, assets) daily returns, NaN where missing; with history
    _markets: dict = field(default_factory=dict, repr=False)

    @property
    def n_channels(self) -> int:
        return self.series.shape[0]

    def eligible_assets(self, date_index: int) -> np.ndarray:
        return np.flatnonzero(self.eligible[date_index])

    def windows(self, date_index: int, assets: np.ndarray) -> torch.Tensor:
        """(len(assets), channels, window) inputs for windows ending at `date_index` (inclusive)."""
        start = date_index - self.window + 1
        if start < 0:
            raise ValueError(
                f"a {self.window}-day window ending at position {date_index} starts before the data"
            )
        idx = torch.as_tensor(np.asarray(assets, dtype=np.int64))
        x = self.series[:, start : date_index + 1].index_select(2, idx)  # (C, T, B)
        return zscore(x.permute(2, 0, 1))

    def with_history(self, history: int) -> FeatureCube:
        """The same cube with long-history inputs of `history` days (0: none); shares the memory."""
        if history == self.history:
            return self
        returns = self.returns if self.returns is not None or not history else daily_returns(self.close)
        return FeatureCube(
            self.series,
            self.eligible,
            self.close,
            self.dates,
            self.tickers,
            self.channels,
            self.window,
            history,
            returns,
        )

    def history_inputs(self, date_index: int, assets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(len(assets), history) return z-scores ending at `date_index` (model.history.history_zscores)
        and the (history,) market direction of every asset eligible on that date (past data only)."""
        if not self.history or self.returns is None:
            raise ValueError("this feature cube has no history inputs; build it with history > 0")
        z = history_zscores(self.returns, date_index, assets, self.history)
        return torch.from_numpy(z.astype(np.float32)), self.market(date_index)

    def market(self, date_index: int) -> torch.Tensor:
        """The single-index model's factor on a date: the unit mean of the winsorised history rows of
        every asset eligible on it (model.history.market_direction); cached per date."""
        if date_index not in self._markets:
            everyone = self.eligible_assets(date_index)
            rows = winsorized_rows(history_zscores(self.returns, date_index, everyone, self.history), BOUND)
            self._markets[date_index] = torch.from_numpy(market_direction(rows).astype(np.float32))
        return self._markets[date_index]

    def model_inputs(self, date_index: int, assets: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Everything the encoder reads for `assets` on a date: (windows,) or (windows, history, market)
        with the market repeated per row, so that rows of several dates can be concatenated."""
        x = self.windows(date_index, assets)
        if not self.history:
            return (x,)
        z, market = self.history_inputs(date_index, assets)
        return x, z, market.expand(len(z), -1)


def concat_inputs(parts: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """Row-wise concatenation of several `model_inputs` results."""
    return tuple(torch.cat(column) for column in zip(*parts, strict=True))


def slice_inputs(inputs: tuple[torch.Tensor, ...], lo: int, hi: int) -> tuple[torch.Tensor, ...]:
    return tuple(x[lo:hi] for x in inputs)


def zscore(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Z-score along the last (time) axis; a constant channel becomes zeros."""
    mean = x.mean(dim=-1, keepdim=True)
    std = x.std(dim=-1, keepdim=True, unbiased=False)
    return torch.where(std > eps, (x - mean) / std.clamp_min(eps), torch.zeros_like(x))


def build_cube(panel: Panel, channels: str = "ohlcva", window: int = WINDOW, history: int = 0) -> FeatureCube:
    """Prepare every channel of the panel once.

    Choices where the spec leaves room, and why:
    - a bar with a close but no open/high/low (close-only rows in real data) takes the close for
      them, rather than dropping the day, so windows keep calendar alignment across assets;
    - missing volume/amount count as 0 (spec); volume and amount enter as log1p, since a z-score of
      raw volume is dominated by a single heavy day;
    - an asset is eligible on date D only if its close exists on all `window` days ending at D.
    """
    names = channel_names(channels)
    close = panel.field("close").astype(np.float32)
    finite_close = np.isfinite(close)
    layers = []
    for name in names:
        if name in ("open", "high", "low"):
            values = panel.field(name)
            layer = np.where(np.isfinite(values), values, close)
        elif name == "close":
            layer = close
        elif name in ("volume", "amount"):
            values = panel.field(name)
            if name == "amount":
                values = np.where(np.isfinite(values), values, close * panel.field("volume"))
            layer = np.log1p(np.clip(np.nan_to_num(values, nan=0.0), 0, None))
        elif name == "return":
            prev = np.vstack([np.full((1, close.shape[1]), np.nan, np.float32), close[:-1]])
            layer = np.clip(close / prev - 1.0, -0.5, 0.5)
        else:  # pragma: no cover - guarded by channel_names
            raise ValueError(name)
        layers.append(np.nan_to_num(layer, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32))
    series = torch.from_numpy(np.stack(layers))

    # Rolling count of present closes: eligible where all `window` days ending at D have one.
    counts = np.cumsum(finite_close, axis=0, dtype=np.int32)
    in_window = counts.copy()
    in_window[window:] -= counts[:-window]
    eligible = in_window == window
    eligible[: window - 1] = False
    cube = FeatureCube(series, eligible, close, panel.dates, panel.tickers, channels, window)
    return cube.with_history(history)


def historical_returns(
    close: np.ndarray, date_index: int, assets: np.ndarray, window: int = WINDOW
) -> np.ndarray:
    """Daily returns inside the window ending at `date_index` (window - 1 of them): past data only."""
    path = close[date_index - window + 1 : date_index + 1, np.asarray(assets)].astype(np.float64).T
    return path[:, 1:] / path[:, :-1] - 1.0
