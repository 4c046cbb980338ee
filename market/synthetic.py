"""A synthetic stock market with known ground truth: the project's default dataset.

The point is to give a retriever something real to learn: which assets will move
together over the *next* 64 days. So returns come from a factor model whose
structure is partly visible in the past and partly not.

Daily simple return of asset i on day t:

    r[t, i] = beta[t, i] * f_mkt[t]
            + b_sec[t, i] * f_sector(i)[t]
            + b_ind[t, i] * f_industry(i)[t]
            + sum_k s[t, i, k] * f_style_k[t]          (size, value, momentum, low_vol)
            + idio_vol[t, i] * e[t, i]

* Factor returns f_j[t] = factor_vol[t, j] * z[t, j] (plus a small market drift).
  z and e are Student-t (df = 5) scaled to unit variance: fat tails.
* Volatility clusters: each factor's and each asset's idiosyncratic variance follows a
  GARCH(1,1) recursion h[t] = omega + a * shock[t-1]**2 + b * h[t-1], with omega set
  so the long-run level equals the current regime's target. The recursion is
  vectorised across assets and factors; only time is a Python loop.
* Loadings drift: each asset's loadings are AR(1) (discrete Ornstein-Uhlenbeck)
  around asset-specific means with a half-life of about three months, so a
  64-day window's correlations only partly describe the next 64 days.
* Regimes shift every one to three years: factor and idiosyncratic volatility
  targets are redrawn (which reweights market vs sector vs style co-movement) and
  about half of the assets get new style-loading means. Past correlation therefore
  predicts future correlation only in part, as in real markets.

Sectors and industries are named (GICS-like); sector betas differ (utilities are
defensive, technology is high-beta). Prices follow from cumulated returns; opens,
highs, lows and volumes are generated to be consistent with each day's return and
volatility (see `_bars`).

Ground truth (`GroundTruth`) keeps what the model actually used each day. Loadings
are stored *compactly*: (dates, assets, 3 + n_styles) with columns
`LOADING_COLUMNS` = market, own sector, own industry, then the styles. The full
factor list (`factor_names`, aligned with `factor_vol`) is
market, every sector, every industry, then the styles; `sector_factor` and
`industry_factor` map each asset to its sector / industry column there, and
`full_loadings(t)` expands one day to (assets, factors).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from market.panel import FIELDS, Panel

TRADING_DAYS_PER_YEAR = 252

# Sector -> industries, with the share of assets each sector gets.
SECTORS: dict[str, tuple[str, ...]] = {
    "Technology": ("Semiconductors", "Software", "Hardware", "IT Services"),
    "Health Care": ("Pharmaceuticals", "Biotechnology", "Medical Devices", "Health Care Services"),
    "Financials": ("Banks", "Insurance", "Capital Markets"),
    "Consumer Discretionary": ("Retail", "Automobiles", "Hotels & Leisure", "Apparel"),
    "Consumer Staples": ("Food Products", "Beverages", "Household Products"),
    "Industrials": ("Aerospace & Defense", "Machinery", "Transportation", "Building Products"),
    "Energy": ("Oil & Gas Producers", "Oilfield Services", "Refining"),
    "Materials": ("Chemicals", "Metals & Mining", "Packaging"),
    "Utilities": ("Electric Utilities", "Gas Utilities", "Water Utilities"),
    "Real Estate": ("REITs", "Real Estate Services"),
    "Communication Services": ("Telecom", "Media", "Interactive Media"),
}
SECTOR_WEIGHTS = np.array([0.15, 0.13, 0.13, 0.11, 0.06, 0.12, 0.06, 0.06, 0.05, 0.06, 0.07])
# Mean market beta per sector: defensive sectors move less with the market.
SECTOR_BETA = np.array([1.2, 0.9, 1.1, 1.15, 0.65, 1.05, 1.0, 1.05, 0.55, 0.85, 0.95])
STYLES: tuple[str, ...] = ("size", "value", "momentum", "low_vol")
LOADING_COLUMNS: tuple[str, ...] = ("market", "sector", "industry", *STYLES)

# Model parameters (daily units). Chosen so that the market has ~1%/day vol, a typical
# stock ~2%/day, average pairwise correlation ~0.2 and same-sector pairs clearly more.
T_DF = 5.0  # Student-t degrees of freedom of all innovations
MARKET_VOL = 0.010
SECTOR_VOL = 0.008
INDUSTRY_VOL = 0.006
STYLE_VOL = 0.005
IDIO_VOL = 0.012
MARKET_DRIFT = 0.0003  # ~7.5% a year, so prices trend up as equities do
REGIME_VOL_SPREAD = 0.4  # log-sd of a regime's factor vol target around the base level
FACTOR_GARCH = (0.06, 0.92)  # (a, b): persistent clustering, finite kurtosis with t(5)
IDIO_GARCH = (0.05, 0.90)
LOADING_HALF_LIFE = 63.0  # days; AR(1) drift of loadings around their means
LOADING_DRIFT_SD = np.array([0.15, 0.25, 0.3, 0.35, 0.35, 0.35, 0.35])  # stationary sd per column
STYLE_RESAMPLE_SHARE = 0.5  # share of assets whose style means are redrawn at a regime change
REGIME_GAP_DAYS = (TRADING_DAYS_PER_YEAR, 3 * TRADING_DAYS_PER_YEAR)


@dataclass
class GroundTruth:
    """What generated the returns. Shapes: D dates, N assets, F factors, L = 3 + styles."""

    dates: np.ndarray  # datetime64[D] (D,)
    tickers: np.ndarray  # str (N,)
    factor_names: list[str]  # (F,): market, sectors, industries, styles
    loadings: np.ndarray  # float32 (D, N, L), compact columns LOADING_COLUMNS
    factor_vol: np.ndarray  # float32 (D, F) conditional daily vol of each factor
    idio_vol: np.ndarray  # float32 (D, N) conditional daily idiosyncratic vol
    regime_dates: np.ndarray  # datetime64[D]: first day of each new regime
    sector: np.ndarray  # str (N,)
    industry: np.ndarray  # str (N,)
    sector_factor: np.ndarray  # int (N,) column of factor_vol for the asset's sector
    industry_factor: np.ndarray  # int (N,) column of factor_vol for the asset's industry

    @property
    def loading_names(self) -> tuple[str, ...]:
        return LOADING_COLUMNS

    @property
    def n_factors(self) -> int:
        return len(self.factor_names)

    def _factor_columns(self) -> np.ndarray:
        """(N, L) column of the full factor list that each compact loading refers to."""
        n_styles = self.loadings.shape[2] - 3
        n = len(self.tickers)
        styles = np.arange(self.n_factors - n_styles, self.n_factors)
        return np.column_stack(
            [np.zeros(n, dtype=np.int64), self.sector_factor, self.industry_factor, np.tile(styles, (n, 1))]
        )

    def full_loadings(self, date_index: int) -> np.ndarray:
        """Loadings of day `date_index` on every factor: (N, F), zeros for other sectors/industries."""
        full = np.zeros((len(self.tickers), self.n_factors))
        np.put_along_axis(full, self._factor_columns(), self.loadings[date_index].astype(np.float64), axis=1)
        return full

    def true_correlation(self, date_index: int, horizon: int = 64) -> np.ndarray:
        """Model-implied correlation of daily returns over days date_index+1 .. date_index+horizon.

        The covariance is averaged over the horizon using the loadings and conditional
        vols in force each day, which is what a realised correlation of those days estimates."""
        lo, hi = date_index + 1, date_index + 1 + horizon
        if date_index < 0 or horizon < 1 or hi > len(self.dates):
            raise ValueError(f"{horizon} days after date index {date_index} run past {len(self.dates)} dates")
        columns = self._factor_columns()
        cov = np.zeros((len(self.tickers),) * 2)
        for k in range(columns.shape[1]):
            # (loading x that factor's vol) per asset and day; summing products over the
            # days is one matrix product. Sector and industry columns refer to different
            # factors for different assets, so only pairs sharing the factor covary.
            loading = self.loadings[lo:hi, :, k].T.astype(np.float64)
            exposure = loading * self.factor_vol[lo:hi][:, columns[:, k]].T
            shared = exposure @ exposure.T
            cov += np.where(columns[:, k, None] == columns[None, :, k], shared, 0.0)
        cov[np.diag_indices_from(cov)] += (self.idio_vol[lo:hi].astype(np.float64) ** 2).sum(axis=0)
        sd = np.sqrt(np.diag(cov))
        corr = cov / np.outer(sd, sd)
        np.fill_diagonal(corr, 1.0)
        return corr

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        np.savez_compressed(
            path,
            dates=self.dates.astype("datetime64[D]"),
            tickers=np.asarray(self.tickers, dtype=str),
            factor_names=np.asarray(self.factor_names, dtype=str),
            loadings=self.loadings,
            factor_vol=self.factor_vol,
            idio_vol=self.idio_vol,
            regime_dates=self.regime_dates.astype("datetime64[D]"),
            sector=np.asarray(self.sector, dtype=str),
            industry=np.asarray(self.industry, dtype=str),
            sector_factor=self.sector_factor,
            industry_factor=self.industry_factor,
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> GroundTruth:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                dates=data["dates"],
                tickers=data["tickers"].astype(object),
                factor_names=[str(x) for x in data["factor_names"]],
                loadings=data["loadings"],
                factor_vol=data["factor_vol"],
                idio_vol=data["idio_vol"],
                regime_dates=data["regime_dates"],
                sector=data["sector"].astype(object),
                industry=data["industry"].astype(object),
                sector_factor=data["sector_factor"],
                industry_factor=data["industry_factor"],
            )


@dataclass
class SyntheticMarket:
    panel: Panel
    truth: GroundTruth
    seed: int = 0


# ----------------------------------------------------------------------- names
_ONSETS = ("B", "C", "D", "F", "G", "K", "L", "M", "N", "P", "R", "S", "T", "V", "Z", "Br", "Tr", "St", "Qu")
_VOWELS = ("a", "e", "i", "o", "u", "ar", "en", "or", "el", "on")
_SUFFIXES = ("Corp", "Corp", "Inc", "Holdings", "Group")


def _tickers(rng: np.random.Generator, n: int) -> list[str]:
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        symbol = "".join(rng.choice(letters, size=int(rng.choice([3, 4], p=[0.4, 0.6]))))
        if symbol not in seen:
            seen.add(symbol)
            out.append(symbol)
    return out


def _names(rng: np.random.Generator, n: int) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        stem = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(int(rng.integers(2, 4))))
        if stem not in seen:
            seen.add(stem)
            out.append(f"{stem.capitalize()} {rng.choice(_SUFFIXES)}")
    return out


# ----------------------------------------------------------------------- model
def _student_t(rng: np.random.Generator, size) -> np.ndarray:
    """Fat-tailed innovations with unit variance."""
    return rng.standard_t(T_DF, size=size) * np.sqrt((T_DF - 2.0) / T_DF)


def _regime_starts(rng: np.random.Generator, n_dates: int) -> np.ndarray:
    """Date indices where regimes begin, 0 included; gaps of one to three years."""
    starts = [0]
    while True:
        nxt = starts[-1] + int(rng.integers(REGIME_GAP_DAYS[0], REGIME_GAP_DAYS[1] + 1))
        if nxt >= n_dates:
            return np.array(starts)
        starts.append(nxt)


def generate(n_assets: int = 500, years: float = 10, seed: int = 0, start="2010-01-04") -> SyntheticMarket:
    """Simulate `n_assets` over `years` * 252 business days from `start`; deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    n_dates = int(round(years * TRADING_DAYS_PER_YEAR))
    if n_assets < 2 or n_dates < 2:
        raise ValueError("need at least 2 assets and 2 dates")
    dates = pd.bdate_range(start, periods=n_dates).to_numpy().astype("datetime64[D]")

    # --- universe: tickers, names, sectors, industries, exchanges
    sector_names = list(SECTORS)
    industry_names = [name for s in sector_names for name in SECTORS[s]]
    industry_offset = np.cumsum([0] + [len(SECTORS[s]) for s in sector_names])
    sec = rng.choice(len(sector_names), size=n_assets, p=SECTOR_WEIGHTS / SECTOR_WEIGHTS.sum())
    n_ind = np.array([len(SECTORS[s]) for s in sector_names])
    ind = industry_offset[sec] + (rng.random(n_assets) * n_ind[sec]).astype(np.int64)
    tickers = sorted(_tickers(rng, n_assets))  # sorted, as Panel.load returns them
    names = _names(rng, n_assets)
    # Technology lists mostly on NASDAQ, the rest mostly on NYSE.
    p_nasdaq = np.where(np.array(sector_names)[sec] == "Technology", 0.75, 0.35)
    exchange = np.where(rng.random(n_assets) < p_nasdaq, "NASDAQ", "NYSE")

    factor_names = ["market"] + [f"sector:{s}" for s in sector_names]
    factor_names += [f"industry:{i}" for i in industry_names] + [f"style:{s}" for s in STYLES]
    n_factors = len(factor_names)
    sector_factor = 1 + sec
    industry_factor = 1 + len(sector_names) + ind
    n_styles, n_cols = len(STYLES), len(LOADING_COLUMNS)

    # --- regimes: factor vol targets, idio scale, style means
    regime_starts = _regime_starts(rng, n_dates)
    n_regimes = len(regime_starts)
    base_vol = np.concatenate(
        [
            [MARKET_VOL],
            np.full(len(sector_names), SECTOR_VOL),
            np.full(len(industry_names), INDUSTRY_VOL),
            np.full(n_styles, STYLE_VOL),
        ]
    )
    # Lognormal draws centred so that the average variance stays at the base level.
    spread = REGIME_VOL_SPREAD
    target_vol = base_vol * np.exp(spread * rng.standard_normal((n_regimes, n_factors)) - spread**2)
    idio_regime_scale = np.exp(0.15 * rng.standard_normal(n_regimes) - 0.15**2)

    mean_load = np.empty((n_regimes, n_assets, n_cols))
    mean_load[:, :, 0] = np.clip(SECTOR_BETA[sec] + 0.25 * rng.standard_normal(n_assets), 0.2, 2.5)
    mean_load[:, :, 1] = np.clip(1.0 + 0.3 * rng.standard_normal(n_assets), 0.1, None)
    mean_load[:, :, 2] = np.clip(1.0 + 0.4 * rng.standard_normal(n_assets), 0.0, None)
    styles = rng.standard_normal((n_assets, n_styles))
    for r in range(n_regimes):
        if r > 0:
            # Part of the universe changes character (growth turns value, winners lose momentum...).
            redraw = rng.random(n_assets) < STYLE_RESAMPLE_SHARE
            styles = np.where(redraw[:, None], rng.standard_normal((n_assets, n_styles)), styles)
        mean_load[r, :, 3:] = styles
    # Small, cheap-looking, volatile firms have more idiosyncratic risk; low-vol names less.
    size0, lowvol0 = mean_load[0, :, 3], mean_load[0, :, 6]
    idio_base = IDIO_VOL * np.exp(-0.2 * size0 - 0.15 * lowvol0 + 0.25 * rng.standard_normal(n_assets))

    # --- innovations, drawn up front so the time loop only does arithmetic
    z_factor = _student_t(rng, (n_dates, n_factors))
    z_idio = _student_t(rng, (n_dates, n_assets))
    load_noise = rng.standard_normal((n_dates, n_assets, n_cols)).astype(np.float32)

    phi = 0.5 ** (1.0 / LOADING_HALF_LIFE)
    load_step_sd = LOADING_DRIFT_SD * np.sqrt(1.0 - phi**2)  # keeps the stationary sd at LOADING_DRIFT_SD
    (fa, fb), (ia, ib) = FACTOR_GARCH, IDIO_GARCH

    loadings = np.empty((n_dates, n_assets, n_cols), dtype=np.float32)
    factor_vol = np.empty((n_dates, n_factors))
    idio_vol = np.empty((n_dates, n_assets))
    factor_ret = np.empty((n_dates, n_factors))
    idio_ret = np.empty((n_dates, n_assets))

    regime_of_day = np.searchsorted(regime_starts, np.arange(n_dates), side="right") - 1
    load = mean_load[0] + LOADING_DRIFT_SD * rng.standard_normal((n_assets, n_cols))
    h_f = target_vol[0] ** 2
    h_i = idio_base**2
    for t in range(n_dates):
        r = regime_of_day[t]
        f_target = target_vol[r] ** 2
        i_target = (idio_base * idio_regime_scale[r]) ** 2
        if t > 0:
            h_f = (1 - fa - fb) * f_target + fa * factor_ret[t - 1] ** 2 + fb * h_f
            h_i = (1 - ia - ib) * i_target + ia * idio_ret[t - 1] ** 2 + ib * h_i
            # Cap the variance so a run of t-shocks cannot explode it.
            h_f = np.minimum(h_f, 25 * f_target)
            h_i = np.minimum(h_i, 25 * i_target)
            load = mean_load[r] + phi * (load - mean_load[r]) + load_step_sd * load_noise[t]
        factor_vol[t] = np.sqrt(h_f)
        idio_vol[t] = np.sqrt(h_i)
        factor_ret[t] = factor_vol[t] * z_factor[t]
        idio_ret[t] = idio_vol[t] * z_idio[t]
        loadings[t] = load
    factor_ret[:, 0] += MARKET_DRIFT

    # --- asset returns, one loading column at a time to keep memory at (dates x assets)
    style_cols = np.arange(n_factors - n_styles, n_factors)
    columns = [np.zeros(n_assets, dtype=np.int64), sector_factor, industry_factor]
    columns += [np.full(n_assets, c) for c in style_cols]
    returns = idio_ret.copy()
    total_var = idio_vol**2
    for k, col in enumerate(columns):
        returns += loadings[:, :, k] * factor_ret[:, col]
        total_var += (loadings[:, :, k] * factor_vol[:, col]) ** 2
    # A simple return below -100% is impossible; clip the (very rare) extreme tail.
    returns = np.clip(returns, -0.6, 1.0)
    sigma = np.sqrt(total_var)

    values = _bars(rng, returns, sigma, mean_load[0, :, 3])
    assets = pd.DataFrame(
        {
            "ticker": tickers,
            "name": names,
            "sector": np.array(sector_names, dtype=object)[sec],
            "industry": np.array(industry_names, dtype=object)[ind],
            "exchange": exchange.astype(object),
        }
    )
    panel = Panel(dates, np.array(tickers, dtype=object), values, assets)
    truth = GroundTruth(
        dates=dates,
        tickers=np.array(tickers, dtype=object),
        factor_names=factor_names,
        loadings=loadings,
        factor_vol=factor_vol.astype(np.float32),
        idio_vol=idio_vol.astype(np.float32),
        regime_dates=dates[regime_starts[1:]],
        sector=assets["sector"].to_numpy(),
        industry=assets["industry"].to_numpy(),
        sector_factor=sector_factor,
        industry_factor=industry_factor,
    )
    return SyntheticMarket(panel=panel, truth=truth, seed=seed)


def _bars(rng: np.random.Generator, returns: np.ndarray, sigma: np.ndarray, size: np.ndarray) -> np.ndarray:
    """OHLCV + amount, float32 (fields, dates, assets), consistent with close-to-close `returns`.

    `sigma` is each day's conditional return vol: it sets the overnight gap and the
    intraday range, so volatile days have wide bars as in real data."""
    n_dates, n_assets = returns.shape
    start_price = np.clip(np.exp(rng.normal(np.log(50.0), 0.8, n_assets)), 10.0, 300.0)
    close = start_price * np.cumprod(1.0 + returns, axis=0)
    prev_close = np.vstack([start_price[None, :], close[:-1]])
    # Part of each day's move happens overnight; the gap also has its own noise.
    gap = 0.3 * returns + 0.25 * sigma * rng.standard_normal((n_dates, n_assets))
    open_ = prev_close * np.exp(np.clip(gap, -0.5, 0.5))
    # Range beyond the open-close body, growing with the day's vol (exp keeps lows > 0).
    up = np.abs(rng.standard_normal((n_dates, n_assets))) * 0.6 * sigma
    down = np.abs(rng.standard_normal((n_dates, n_assets))) * 0.6 * sigma
    high = np.maximum(open_, close) * np.exp(up)
    low = np.minimum(open_, close) * np.exp(-down)

    # Volume: a per-asset base (bigger firms trade more) times a response to
    # surprise |r| / sigma, with persistent (AR(1)) and daily lognormal noise.
    base = np.exp(rng.normal(13.0, 0.8, n_assets) + 0.4 * size)
    surprise = np.abs(returns) / sigma
    persistent = np.empty((n_dates, n_assets))
    shocks = rng.standard_normal((n_dates, n_assets))
    persistent[0] = 0.3 * shocks[0]
    for t in range(1, n_dates):
        persistent[t] = 0.9 * persistent[t - 1] + 0.3 * np.sqrt(1 - 0.81) * shocks[t]
    noise = np.exp(persistent + 0.25 * rng.standard_normal((n_dates, n_assets)))
    volume = np.round(base * (0.6 + 0.5 * surprise) * noise)

    values = np.empty((len(FIELDS), n_dates, n_assets), dtype=np.float32)
    for k, field in enumerate((open_, high, low, close, volume)):
        values[k] = field
    # amount from the stored (float32) close and volume so amount == close * volume holds exactly-ish.
    values[5] = values[3].astype(np.float64) * values[4]
    return values


# ----------------------------------------------------------------- persistence
def save_synthetic(market: SyntheticMarket, path: str | Path) -> Path:
    """Save the panel (atomically, see Panel.save), then truth.npz into the final directory."""
    truth = market.truth
    extra = {
        "source": "synthetic",
        "seed": int(market.seed),
        "generator": "market.synthetic",
        "regime_dates": [str(d) for d in truth.regime_dates],
        "factors": len(truth.factor_names),
    }
    path = market.panel.save(path, extra=extra)
    truth.save(path / "truth.npz")
    return path


def load_truth(path: str | Path) -> GroundTruth:
    """Ground truth of a saved synthetic panel directory (or a truth.npz file)."""
    path = Path(path)
    file = path / "truth.npz" if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"no synthetic ground truth at {file}")
    return GroundTruth.load(file)
