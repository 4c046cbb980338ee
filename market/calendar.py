"""Trading calendars: which days an exchange trades, and what a panel lacks or holds in excess.

Built on `exchange_calendars`. Weekends and exchange holidays are not gaps: an asset's missing
sessions are the sessions of its exchange, between its first and last bar, on which it has no close.
Bars dated on a day that is not a session (a weekend, a holiday) are reported as data errors.

Exchange names come from a panel's assets table and are matched case-insensitively: the usual US
names (NASDAQ, NYSE, AMEX / NYSE American / NYSE MKT, ARCA, BATS, ...) and the names
`exchange_calendars` knows (ISO MIC codes such as XNAS, XNYS, XLON, and its aliases). An empty or
unknown exchange gets DEFAULT_CALENDAR (XNYS, the US market); the choice says so (`fallback`) and a
warning is logged once per name, so it never fails a run. A calendar that exchange_calendars fails
to build is treated the same way (with exchange_calendars 4.13.2 under pandas 3.1: ASEX, XBEL, XBSE,
XCYS, XTAE). Note that `exchange_calendars` gives the US venues (XNAS, XASE, ARCX, BATS) the XNYS
calendar: their holidays are the same.

Calendars are built once per process and cached (building one takes a fraction of a second); the
cache covers sessions from CALENDAR_START (or the earliest date asked for) to about a year past today.
Everything here takes explicit arguments; nothing reads settings.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import warnings
from dataclasses import dataclass
from functools import lru_cache

import exchange_calendars as xc
import numpy as np
import pandas as pd

from market.panel import Panel

log = logging.getLogger(__name__)

DEFAULT_CALENDAR = "XNYS"
CALENDAR_START = pd.Timestamp("1990-01-01")

# Names seen in assets tables -> the exchange_calendars name asked for. Keys are normalised by
# _normalise (upper case, single spaces, '-' and '_' as spaces).
EXCHANGE_ALIASES: dict[str, str] = {
    # Nasdaq and its market tiers
    "NASDAQ": "XNAS",
    "NASDAQGS": "XNAS",
    "NASDAQGM": "XNAS",
    "NASDAQCM": "XNAS",
    "NASDAQ GS": "XNAS",
    "NASDAQ GM": "XNAS",
    "NASDAQ CM": "XNAS",
    "NASDAQ GLOBAL SELECT": "XNAS",
    "NASDAQ GLOBAL MARKET": "XNAS",
    "NASDAQ CAPITAL MARKET": "XNAS",
    "NMS": "XNAS",
    "NGS": "XNAS",
    "NGM": "XNAS",
    "NCM": "XNAS",
    "XNGS": "XNAS",
    "XNMS": "XNAS",
    "XNCM": "XNAS",
    # New York Stock Exchange
    "NYSE": "XNYS",
    "NYQ": "XNYS",
    "NEW YORK STOCK EXCHANGE": "XNYS",
    # NYSE American, formerly NYSE MKT, NYSE Amex, AMEX
    "AMEX": "XASE",
    "ASE": "XASE",
    "NYSE AMERICAN": "XASE",
    "NYSEAMERICAN": "XASE",
    "NYSE MKT": "XASE",
    "NYSEMKT": "XASE",
    "NYSE AMEX": "XASE",
    "AMERICAN STOCK EXCHANGE": "XASE",
    # NYSE Arca
    "ARCA": "ARCX",
    "NYSE ARCA": "ARCX",
    "NYSEARCA": "ARCX",
    "PCX": "ARCX",
    # Cboe BZX, formerly BATS
    "BATS": "BATS",
    "BZX": "BATS",
    "CBOE BZX": "BATS",
    "CBOE": "BATS",
}


class CalendarError(ValueError):
    """A calendar question could not be answered as asked."""


@dataclass(frozen=True)
class CalendarChoice:
    """How an exchange name from an assets table was matched to a calendar."""

    exchange: str  # the name as given
    code: str  # the exchange_calendars name asked for (XNAS for "Nasdaq")
    calendar: str  # the calendar's own name (XNYS: exchange_calendars gives XNAS the XNYS calendar)
    fallback_reason: str = ""  # why DEFAULT_CALENDAR stands in (empty or unknown name); "" when matched

    @property
    def fallback(self) -> bool:
        """True when the name was empty or unknown (or its calendar unusable) and DEFAULT_CALENDAR
        stands in."""
        return bool(self.fallback_reason)

    @property
    def label(self) -> str:
        """`XNYS`, `XNAS -> XNYS`, or `XNYS (default: unknown exchange 'FOO')`."""
        if self.fallback:
            return f"{self.calendar} (default: {self.fallback_reason})"
        return self.calendar if self.code == self.calendar else f"{self.code} -> {self.calendar}"


def _normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(name)).strip().upper()


@lru_cache(maxsize=1)
def _known_names() -> dict[str, str]:
    """exchange_calendars' names and aliases, by their normalised form."""
    return {_normalise(name): name for name in xc.get_calendar_names(include_aliases=True)}


@lru_cache(maxsize=1024)
def resolve_exchange(exchange: str | None) -> CalendarChoice:
    """The calendar for an exchange name (case-insensitive); unknown or empty -> DEFAULT_CALENDAR,
    with `fallback` set and a warning logged (once per name)."""
    given = "" if exchange is None or (isinstance(exchange, float) and np.isnan(exchange)) else str(exchange)
    key = _normalise(given)
    code = (
        EXCHANGE_ALIASES.get(key)
        or EXCHANGE_ALIASES.get(key.replace(" ", ""))
        or _known_names().get(key)
        or _known_names().get(key.replace(" ", ""))
    )
    reason = ""
    if code is None:
        reason = f"unknown exchange {given!r}" if key else "no exchange"
    else:
        try:
            return CalendarChoice(given, code, _entry(code).calendar.name)
        except Exception as exc:  # a calendar exchange_calendars cannot build here: never fail a run
            if code == DEFAULT_CALENDAR:
                raise
            reason = f"the {code} calendar failed to build ({type(exc).__name__}: {str(exc)[:80]})"
    if key:
        log.warning("exchange %r: %s; using the %s calendar", given, reason, DEFAULT_CALENDAR)
    return CalendarChoice(given, DEFAULT_CALENDAR, _entry(DEFAULT_CALENDAR).calendar.name, reason)


# ------------------------------------------------------------------ cache
@dataclass(frozen=True)
class _Entry:
    calendar: xc.ExchangeCalendar
    sessions: np.ndarray  # datetime64[D], increasing
    closes: np.ndarray  # datetime64[ns], UTC, aligned with sessions


_cache: dict[str, _Entry] = {}
_lock = threading.Lock()


def _day(value) -> np.datetime64:
    return np.datetime64(pd.Timestamp(value).date(), "D")


def _entry(code: str, start: np.datetime64 | None = None) -> _Entry:
    """The cached calendar `code`, rebuilt from an earlier year when `start` precedes its sessions."""
    key = code
    with _lock:
        entry = _cache.get(key)
        if entry is not None and (start is None or start >= entry.sessions[0]):
            return entry
        first = CALENDAR_START
        if start is not None:
            first = min(first, pd.Timestamp(str(start)).replace(month=1, day=1))
        if entry is not None:
            first = min(first, pd.Timestamp(str(entry.sessions[0])))
        with warnings.catch_warnings():
            # exchange_calendars 4.x reads Series.values of tz-aware times, which pandas 3.1 deprecates.
            warnings.filterwarnings(
                "ignore", message="Series.values returning an ndarray that drops timezone"
            )
            try:
                calendar = xc.get_calendar(key, start=first)
            except Exception:  # before its first supported date (AIXK starts in 2017): its default span
                calendar = xc.get_calendar(key)
        sessions = calendar.sessions.to_numpy().astype("datetime64[D]")
        closes = calendar.closes.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[ns]")
        entry = _Entry(calendar=calendar, sessions=sessions, closes=closes)
        _cache[key] = entry
        return entry


def calendar_for(exchange: str | None, start=None) -> xc.ExchangeCalendar:
    """The exchange_calendars calendar of an exchange name (see resolve_exchange); cached.

    Its sessions start at CALENDAR_START, or in the year of `start` when that is earlier."""
    choice = resolve_exchange(exchange)
    return _entry(choice.code, None if start is None else _day(start)).calendar


def sessions(exchange: str | None, start, end) -> np.ndarray:
    """The trading sessions of the exchange in [start, end] (both inclusive), as datetime64[D]."""
    lo, hi = _day(start), _day(end)
    entry = _entry(resolve_exchange(exchange).code, lo)
    if hi > entry.sessions[-1]:
        raise CalendarError(
            f"{hi} is past the last session the {entry.calendar.name} calendar knows ({entry.sessions[-1]})"
        )
    return entry.sessions[np.searchsorted(entry.sessions, lo) : np.searchsorted(entry.sessions, hi, "right")]


# -------------------------------------------------------------- staleness
def _is_instant(value) -> bool:
    """True for a point in time (datetime, Timestamp, datetime64 finer than a day, an ISO string with
    a time part); False for a plain date."""
    if isinstance(value, dt.datetime):  # pd.Timestamp included
        return True
    if isinstance(value, dt.date):
        return False
    if isinstance(value, np.datetime64):
        return np.datetime_data(value.dtype)[0] not in ("D", "W", "M", "Y")
    if isinstance(value, str):
        return bool(re.search(r"[T ]\d", value.strip()))
    raise CalendarError(f"cannot read {value!r} as a date or a time")


def stale_sessions(last_bar_date, today, exchange: str | None) -> int:
    """How many sessions of `exchange` have closed after `last_bar_date`, up to `today`.

    `today` as a point in time (datetime, pd.Timestamp, an ISO string with a time; naive means UTC):
    a session counts once the exchange's close (early closes included) is at or before it, so today's
    session counts only after today's close. `today` as a plain date (datetime.date, datetime64[D],
    'YYYY-MM-DD'): the sessions strictly before it count, today's does not. Sessions on or before
    `last_bar_date` never count. The inbox is stale when the count exceeds the caller's limit."""
    last = _day(last_bar_date)
    instant = _is_instant(today)
    if instant:
        now = pd.Timestamp(today)
        now = now.tz_convert("UTC").tz_localize(None) if now.tzinfo is not None else now
        entry = _entry(resolve_exchange(exchange).code, last)
        now64 = now.to_datetime64().astype("datetime64[ns]")
        upto = int(np.searchsorted(entry.closes, now64, side="right"))  # closes increase with sessions
    else:
        day = _day(today)
        entry = _entry(resolve_exchange(exchange).code, last)
        upto = int(np.searchsorted(entry.sessions, day, side="left"))
    after = int(np.searchsorted(entry.sessions, last, side="right"))
    if upto >= len(entry.sessions):
        raise CalendarError(f"{today} is past the last session the {entry.calendar.name} calendar knows")
    return max(upto - after, 0)


def panel_staleness(panel: Panel, now) -> int:
    """Sessions closed after the panel's newest date up to `now` (see stale_sessions), the most over
    the exchanges of its assets: how far behind the bars are."""
    exchanges = sorted({str(e) for e in panel.assets.get("exchange", [])} or {""})
    return max(stale_sessions(panel.dates[-1], now, exchange) for exchange in exchanges)


# ----------------------------------------------------------- panel checks
@dataclass
class _Scan:
    missing: pd.DataFrame  # ticker, exchange, calendar, date
    expected: np.ndarray  # per asset: sessions in its life within the window (0 without bars)
    life_lo: np.ndarray  # per asset, datetime64[D] (NaT without bars in the window)
    life_hi: np.ndarray
    choices: dict[str, CalendarChoice]  # exchange label -> choice
    labels: np.ndarray  # per asset: its exchange label


# Bound on the cells of one (sessions x assets) block, so memory stays flat on large panels.
_BLOCK_CELLS = 1 << 24


def _scan(panel: Panel, start=None, end=None) -> _Scan:
    n, m = panel.n_dates, panel.n_assets
    labels = panel.assets["exchange"].astype(object).where(panel.assets["exchange"].notna(), "")
    labels = labels.astype(str).to_numpy(dtype=object)
    choices = {label: resolve_exchange(label) for label in dict.fromkeys(labels)}
    has = ~np.isnan(panel.close)
    any_bar = has.any(axis=0) if n else np.zeros(m, bool)
    first = has.argmax(axis=0) if n else np.zeros(m, np.int64)
    last = n - 1 - has[::-1].argmax(axis=0) if n else np.zeros(m, np.int64)
    nat = np.datetime64("NaT", "D")
    life_lo = np.where(any_bar, panel.dates[first] if n else nat, nat)
    life_hi = np.where(any_bar, panel.dates[last] if n else nat, nat)
    if start is not None:
        life_lo = np.where(any_bar, np.maximum(life_lo, _day(start)), nat)
    if end is not None:
        life_hi = np.where(any_bar, np.minimum(life_hi, _day(end)), nat)
    alive_any = any_bar & (life_lo <= life_hi)
    life_lo = np.where(alive_any, life_lo, nat)
    life_hi = np.where(alive_any, life_hi, nat)
    expected = np.zeros(m, np.int64)

    calendars = np.array([choices[label].code for label in labels], dtype=object)
    out_cols: list[np.ndarray] = []
    out_dates: list[np.ndarray] = []
    for code in dict.fromkeys(calendars[alive_any]):
        cols = np.flatnonzero(alive_any & (calendars == code))
        sess = sessions(code, life_lo[cols].min(), life_hi[cols].max())
        expected[cols] = np.searchsorted(sess, life_hi[cols], "right") - np.searchsorted(sess, life_lo[cols])
        pos = np.searchsorted(panel.dates, sess)
        in_panel = pos < n
        in_panel[in_panel] = panel.dates[pos[in_panel]] == sess[in_panel]
        rows = pos[in_panel]
        step = max(1, _BLOCK_CELLS // max(len(sess), 1))
        for lo in range(0, len(cols), step):
            block = cols[lo : lo + step]
            present = np.zeros((len(sess), len(block)), bool)
            present[in_panel] = has[np.ix_(rows, block)]
            alive = (sess[:, None] >= life_lo[block]) & (sess[:, None] <= life_hi[block])
            asset, day = np.nonzero((alive & ~present).T)  # asset-major: each asset's dates in order
            out_cols.append(block[asset])
            out_dates.append(sess[day])
    cols = np.concatenate(out_cols) if out_cols else np.zeros(0, np.int64)
    days = np.concatenate(out_dates) if out_dates else np.zeros(0, "datetime64[D]")
    order = np.lexsort((days, cols))
    cols, days = cols[order], days[order]
    missing = pd.DataFrame(
        {
            "ticker": pd.Series(panel.tickers[cols], dtype=object),
            "exchange": pd.Series(labels[cols], dtype=object),
            "calendar": pd.Series([choices[label].calendar for label in labels[cols]], dtype=object),
            "date": pd.to_datetime(days.astype("datetime64[s]")),
        }
    )
    return _Scan(missing, expected, life_lo, life_hi, choices, labels)


def missing_sessions(panel: Panel, start=None, end=None) -> pd.DataFrame:
    """The sessions on which an asset has no close, within its listed life.

    For each asset: the sessions of its exchange's calendar between its first and last bar (clipped to
    [start, end], both inclusive and optional) on which the panel has no close for it, a whole date
    the panel lacks included. Weekends and holidays never appear; nor do dates before an asset's first
    bar or after its last. A panel with corrections applied (Panel.load's default) holds the spikes it
    removed as missing closes, so they appear here too. Columns: ticker, exchange (as in the assets
    table), calendar (the calendar used), date; sorted by the panel's asset order, then date."""
    return _scan(panel, start, end).missing


@dataclass
class CalendarReport:
    """panel_calendar_report's answer.

    summary, one row per exchange label of the assets table: exchange, calendar (CalendarChoice.label),
    fallback, assets (with a bar in the window), first, last (their first and last bar), sessions (of
    the calendar in [first, last]), empty_sessions (sessions with no bar from any of these assets),
    non_session_dates and non_session_bars (panel dates with a bar from these assets that are not
    sessions: bars on a weekend or holiday, data errors), missing (asset-sessions without a close),
    assets_missing (assets with at least one), expected (asset-sessions in the assets' lives),
    missing_share (missing / expected).
    non_sessions: exchange, calendar, date, bars, one row per non-session date.
    empty_sessions: exchange, calendar, date, one row per session without any bar of the exchange's
    assets (a date the data lacks: every asset listed then misses it).
    missing: missing_sessions' rows."""

    summary: pd.DataFrame
    non_sessions: pd.DataFrame
    empty_sessions: pd.DataFrame
    missing: pd.DataFrame


SUMMARY_COLUMNS = (
    "exchange",
    "calendar",
    "fallback",
    "assets",
    "first",
    "last",
    "sessions",
    "empty_sessions",
    "non_session_dates",
    "non_session_bars",
    "missing",
    "assets_missing",
    "expected",
    "missing_share",
)


def panel_calendar_report(panel: Panel, start=None, end=None) -> CalendarReport:
    """Per exchange of the assets table: the calendar used, the sessions covered, the panel dates that
    are not sessions, and the missing sessions (see missing_sessions and CalendarReport)."""
    scan = _scan(panel, start, end)
    has = ~np.isnan(panel.close)
    rows, off, gaps = [], [], []
    missing_by_label = scan.missing.groupby("exchange", sort=False)["ticker"].agg(["size", "nunique"])
    for label, choice in scan.choices.items():
        cols = np.flatnonzero((scan.labels == label) & ~np.isnat(scan.life_lo))
        row = {"exchange": label, "calendar": choice.label, "fallback": choice.fallback, "assets": len(cols)}
        if len(cols) == 0:
            rows.append(row)
            continue
        lo, hi = scan.life_lo[cols].min(), scan.life_hi[cols].max()
        sess = sessions(choice.code, lo, hi)
        window = (panel.dates >= lo) & (panel.dates <= hi)
        bars = has[:, cols].sum(axis=1)
        on_date = window & (bars > 0)
        is_session = np.isin(panel.dates, sess)
        wrong = np.flatnonzero(on_date & ~is_session)
        empty = np.setdiff1d(sess, panel.dates[on_date & is_session])
        counts = missing_by_label.loc[label] if label in missing_by_label.index else None
        expected = int(scan.expected[cols].sum())
        n_missing = 0 if counts is None else int(counts["size"])
        row.update(
            first=pd.Timestamp(lo),
            last=pd.Timestamp(hi),
            sessions=len(sess),
            empty_sessions=len(empty),
            non_session_dates=len(wrong),
            non_session_bars=int(bars[wrong].sum()),
            missing=n_missing,
            assets_missing=0 if counts is None else int(counts["nunique"]),
            expected=expected,
            missing_share=n_missing / expected if expected else 0.0,
        )
        rows.append(row)
        off.extend(
            {
                "exchange": label,
                "calendar": choice.calendar,
                "date": pd.Timestamp(panel.dates[i]),
                "bars": int(bars[i]),
            }
            for i in wrong
        )
        gaps.extend(
            {"exchange": label, "calendar": choice.calendar, "date": pd.Timestamp(day)} for day in empty
        )
    summary = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    for column in ("assets", "sessions", "empty_sessions", "non_session_dates", "non_session_bars"):
        summary[column] = summary[column].fillna(0).astype(np.int64)
    for column in ("missing", "assets_missing", "expected"):
        summary[column] = summary[column].fillna(0).astype(np.int64)
    summary["missing_share"] = summary["missing_share"].fillna(0.0).astype(float)
    for column in ("first", "last"):
        summary[column] = pd.to_datetime(summary[column])
    non_sessions = pd.DataFrame(off, columns=["exchange", "calendar", "date", "bars"])
    empty_sessions = pd.DataFrame(gaps, columns=["exchange", "calendar", "date"])
    return CalendarReport(
        summary=summary, non_sessions=non_sessions, empty_sessions=empty_sessions, missing=scan.missing
    )
