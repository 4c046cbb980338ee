"""The price panel: trading dates x assets x fields, plus asset metadata.

Values live in one float32 array shaped (fields, dates, assets) so that a field's
(dates x assets) matrix is contiguous and a date range is a cheap view. Missing
bars are NaN. On disk a panel is a directory:

    bars.parquet     long table date,ticker,open,high,low,close,volume,amount
    assets.parquet   ticker,name,sector,industry,exchange
    corrections.parquet  detected splits and spikes (see market.cleaning), optional
    manifest.json    counts, date range, fingerprint of the bars
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "volume", "amount")
PRICE_FIELDS: tuple[str, ...] = ("open", "high", "low", "close")
META_COLUMNS: tuple[str, ...] = ("ticker", "name", "sector", "industry", "exchange")


class PanelError(ValueError):
    """A panel could not be built, read or sliced as asked."""


def empty_metadata(tickers) -> pd.DataFrame:
    meta = pd.DataFrame({"ticker": pd.Series(list(tickers), dtype=object)})
    for column in META_COLUMNS[1:]:
        meta[column] = ""
    return meta


def normalize_metadata(tickers: np.ndarray, assets: pd.DataFrame | None) -> pd.DataFrame:
    """Metadata aligned row for row with `tickers`; unknown fields are empty strings."""
    meta = empty_metadata(tickers)
    if assets is None or assets.empty:
        return meta
    known = assets.drop_duplicates("ticker", keep="last").set_index("ticker")
    for column in META_COLUMNS[1:]:
        if column in known.columns:
            values = known[column].reindex(meta["ticker"]).astype(object)
            meta[column] = values.where(values.notna(), "").astype(str).to_numpy()
    return meta


def _moved_aside(path: Path) -> Path:
    """Where Panel.save moves the previous panel while it renames the new one into place."""
    return path.with_name(f".{path.name}.old")


def restore_interrupted_save(path: str | Path) -> bool:
    """Put back the previous panel of a save killed between its two renames (old aside, new in),
    which left nothing at `path`; returns whether it did. The interrupted save is lost, as any
    interrupted write is."""
    path = Path(path)
    aside = _moved_aside(path)
    if path.exists() or not (aside / "bars.parquet").exists():
        return False
    aside.rename(path)
    return True


@dataclass
class Panel:
    dates: np.ndarray  # datetime64[D], strictly increasing
    tickers: np.ndarray  # str objects, unique
    values: np.ndarray  # float32 (len(FIELDS), len(dates), len(tickers))
    assets: pd.DataFrame = field(default=None)  # aligned with tickers

    def __post_init__(self) -> None:
        self.dates = np.asarray(self.dates, dtype="datetime64[D]")
        self.tickers = np.asarray(self.tickers, dtype=object)
        if self.values.shape != (len(FIELDS), len(self.dates), len(self.tickers)):
            raise PanelError(
                f"values shape {self.values.shape} does not match "
                f"({len(FIELDS)} fields, {len(self.dates)} dates, {len(self.tickers)} tickers)"
            )
        if len(self.dates) > 1 and not (np.diff(self.dates.astype(np.int64)) > 0).all():
            raise PanelError("panel dates must be strictly increasing")
        if len(set(self.tickers)) != len(self.tickers):
            raise PanelError("panel tickers must be unique")
        if (
            self.assets is None
            or not set(META_COLUMNS) <= set(self.assets.columns)
            or list(self.assets["ticker"]) != list(self.tickers)
        ):
            self.assets = normalize_metadata(self.tickers, self.assets)
        self._ticker_index = {t: i for i, t in enumerate(self.tickers)}

    # ----------------------------------------------------------------- access
    @property
    def n_dates(self) -> int:
        return len(self.dates)

    @property
    def n_assets(self) -> int:
        return len(self.tickers)

    def field(self, name: str) -> np.ndarray:
        """The (dates x assets) matrix of one field."""
        try:
            return self.values[FIELDS.index(name)]
        except ValueError:
            raise PanelError(f"unknown field {name!r}; fields are {', '.join(FIELDS)}") from None

    @property
    def close(self) -> np.ndarray:
        return self.field("close")

    def asset_index(self, ticker: str) -> int:
        try:
            return self._ticker_index[ticker]
        except KeyError:
            raise PanelError(f"unknown ticker {ticker!r}") from None

    def date_position(self, date, *, side: str = "asof") -> int:
        """Index of `date`; with side='asof' the latest trading date on or before it."""
        day = np.datetime64(pd.Timestamp(date).date(), "D")
        pos = int(np.searchsorted(self.dates, day, side="right")) - 1
        if side == "exact":
            if pos < 0 or self.dates[pos] != day:
                raise PanelError(f"{day} is not a trading date of this panel")
            return pos
        if pos < 0:
            raise PanelError(f"{day} is before the panel's first date {self.dates[0]}")
        return pos

    # ---------------------------------------------------------------- slicing
    def slice_dates(self, start=None, end=None) -> Panel:
        """Dates in [start, end] (both inclusive, either may be None); values are a view."""
        lo = (
            0
            if start is None
            else int(np.searchsorted(self.dates, np.datetime64(pd.Timestamp(start).date(), "D")))
        )
        hi = (
            self.n_dates
            if end is None
            else int(np.searchsorted(self.dates, np.datetime64(pd.Timestamp(end).date(), "D"), side="right"))
        )
        return Panel(self.dates[lo:hi], self.tickers, self.values[:, lo:hi], self.assets)

    def select_assets(self, tickers) -> Panel:
        idx = np.array([self.asset_index(t) for t in tickers], dtype=np.int64)
        assets = self.assets.iloc[idx].reset_index(drop=True)
        return Panel(self.dates, self.tickers[idx], self.values[:, :, idx], assets)

    def window(self, date, length: int) -> np.ndarray:
        """The `length` trading days ending at `date` (inclusive): (fields, length, assets).

        The window is cut by position, so it can never include a bar after `date`;
        it raises when there are fewer than `length` days of history."""
        end = self.date_position(date) + 1
        if end < length:
            raise PanelError(
                f"{length}-day window ending {self.dates[end - 1]} needs {length - end} more days of history"
            )
        return self.values[:, end - length : end]

    # ------------------------------------------------------------ conversions
    def to_long(self) -> pd.DataFrame:
        """Long table of the bars that have at least one value."""
        n_d, n_a = self.n_dates, self.n_assets
        flat = self.values.reshape(len(FIELDS), n_d * n_a)
        present = ~np.isnan(flat).all(axis=0)
        di, ai = np.divmod(np.flatnonzero(present), n_a)
        frame = pd.DataFrame({"date": self.dates[di], "ticker": self.tickers[ai]})
        for k, name in enumerate(FIELDS):
            frame[name] = flat[k, present]
        return frame

    @classmethod
    def from_long(cls, bars: pd.DataFrame, assets: pd.DataFrame | None = None) -> Panel:
        """Build from a validated long table (date, ticker, FIELDS); duplicates must be gone."""
        # Factorise first, then sort the few distinct values: np.unique over millions of
        # ticker strings took ~30 s on us_nasdaq, this takes well under a second.
        d_codes, d_uniques = pd.factorize(bars["date"])
        day_of_code = pd.to_datetime(pd.Index(d_uniques)).to_numpy().astype("datetime64[D]")
        dates, d_remap = np.unique(day_of_code, return_inverse=True)
        a_codes, a_uniques = pd.factorize(bars["ticker"])
        names = np.asarray(pd.Index(a_uniques).astype(str), dtype=object)
        tickers, a_remap = np.unique(names, return_inverse=True)
        flat = d_remap[d_codes].astype(np.int64) * len(tickers) + a_remap[a_codes]
        values = np.full((len(FIELDS), len(dates), len(tickers)), np.nan, dtype=np.float32)
        for k, name in enumerate(FIELDS):
            if name in bars.columns:
                values[k].reshape(-1)[flat] = bars[name].to_numpy(dtype=np.float32, na_value=np.nan)
        return cls(dates, tickers.astype(object), values, assets)

    def fingerprint(self) -> str:
        """sha256 over dates, tickers and values: identifies the exact data a model saw."""
        digest = hashlib.sha256()
        digest.update(self.dates.astype("datetime64[D]").astype(np.int64).tobytes())
        digest.update("\n".join(self.tickers).encode())
        digest.update(np.ascontiguousarray(self.values).tobytes())
        return digest.hexdigest()[:16]

    # ----------------------------------------------------------- persistence
    def save(
        self,
        path: str | Path,
        corrections: pd.DataFrame | None = None,
        extra: dict | None = None,
        extra_files: dict[str, bytes] | None = None,
    ) -> Path:
        """Write atomically: a temp directory beside `path` is renamed into place.

        `extra` goes into the manifest; `extra_files` (name -> bytes) are written into
        the panel directory inside the same atomic step (e.g. an import report)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        restore_interrupted_save(path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            self.to_long().to_parquet(tmp / "bars.parquet", index=False, compression="zstd")
            self.assets.to_parquet(tmp / "assets.parquet", index=False)
            if corrections is not None:
                corrections.to_parquet(tmp / "corrections.parquet", index=False)
            manifest = {
                "assets": int(self.n_assets),
                "dates": int(self.n_dates),
                "first_date": str(self.dates[0]) if self.n_dates else None,
                "last_date": str(self.dates[-1]) if self.n_dates else None,
                "fingerprint": self.fingerprint(),
                **(extra or {}),
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
            reserved = {"bars.parquet", "assets.parquet", "corrections.parquet", "manifest.json"}
            for name, data in (extra_files or {}).items():
                if Path(name).name != name or name in reserved:
                    raise PanelError(f"extra file name {name!r} must be a plain name not used by the panel")
                (tmp / name).write_bytes(data)
            for child in tmp.iterdir():
                with open(child, "rb") as fh:
                    os.fsync(fh.fileno())
            old = None
            if path.exists():
                old = _moved_aside(path)
                shutil.rmtree(old, ignore_errors=True)
                path.rename(old)
            tmp.rename(path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path, *, clean: bool = True, start=None, end=None) -> Panel:
        """Read a saved panel; `clean` applies its recorded corrections (market.cleaning)."""
        path = Path(path)
        restore_interrupted_save(path)
        bars_file = path / "bars.parquet"
        if not bars_file.exists():
            raise PanelError(
                f"no panel at {path} (expected {bars_file}); "
                "create one with `fascl data synth` or `fascl data import`"
            )
        filters = []
        if start is not None:
            filters.append(("date", ">=", pd.Timestamp(start).date()))
        if end is not None:
            filters.append(("date", "<=", pd.Timestamp(end).date()))
        bars = pd.read_parquet(bars_file, filters=filters or None)
        assets = pd.read_parquet(path / "assets.parquet") if (path / "assets.parquet").exists() else None
        panel = cls.from_long(bars, assets)
        corrections_file = path / "corrections.parquet"
        if clean and corrections_file.exists():
            apply_corrections(panel, pd.read_parquet(corrections_file))
        return panel


# ---------------------------------------------------- recorded corrections
# Detecting splits and spikes is market.cleaning's; applying the recorded ones is part of reading a
# panel, so it lives here, below the detector.
_PRICE_ROWS = [FIELDS.index(f) for f in PRICE_FIELDS]
_VOLUME_ROW = FIELDS.index("volume")


def _actions(panel: Panel, corrections: pd.DataFrame):
    """(kind, column, date position, factor) for each split and spike that touches `panel`.

    For a split the position is the first date on or after the split date (everything
    before it is scaled); for a spike it is the bar's date, and spikes on dates the
    panel lacks are skipped."""
    if corrections is None or corrections.empty:
        return
    days = pd.to_datetime(corrections["date"]).to_numpy().astype("datetime64[D]")
    positions = np.searchsorted(panel.dates, days, side="left")
    for ticker, day, pos, kind, factor in zip(
        corrections["ticker"], days, positions, corrections["kind"], corrections["factor"], strict=True
    ):
        col = panel._ticker_index.get(ticker)
        if col is None or kind not in ("split", "spike"):
            continue
        if kind == "spike" and (pos >= panel.n_dates or panel.dates[pos] != day):
            continue
        yield kind, col, int(pos), np.float32(factor)


def apply_corrections(panel: Panel, corrections: pd.DataFrame) -> Panel:
    """Apply the split and spike rows of `corrections` to `panel.values` in place.

    Rows for tickers the panel lacks are skipped. A split dated after the panel's last
    date scales all of it, so a date slice of a panel is scaled like the full panel."""
    values = panel.values
    for kind, col, pos, factor in _actions(panel, corrections):
        if kind == "split":
            values[_PRICE_ROWS, :pos, col] *= factor
            values[_VOLUME_ROW, :pos, col] /= factor
        else:
            values[:, pos, col] = np.nan
    return panel


def cleaned_close(panel: Panel, corrections: pd.DataFrame) -> np.ndarray:
    """A cleaned copy of the close matrix, leaving `panel` as it is (cheaper than copying it)."""
    close = panel.close.copy()
    for kind, col, pos, factor in _actions(panel, corrections):
        if kind == "split":
            close[:pos, col] *= factor
        else:
            close[pos, col] = np.nan
    return close


def read_manifest(path: str | Path) -> dict:
    file = Path(path) / "manifest.json"
    if not file.exists():
        raise PanelError(f"no panel manifest at {file}")
    return json.loads(file.read_text())
