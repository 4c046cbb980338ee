"""The served index's assets, their prices and the dates: GET /assets, /assets/{ticker},
/assets/{ticker}/prices and /dates."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query
from starlette.responses import Response

from index.errors import UnknownTicker
from service.deps import SnapshotDep
from service.errors import APIError, prices_unavailable, to_api_error
from service.params import parse_date, parse_ticker
from service.registry import Snapshot
from service.routing import ERRORS, json_response
from service.schemas import (
    MAX_DATE,
    MAX_NAME,
    MAX_OFFSET,
    AssetOut,
    AssetPage,
    DatesOut,
    ErrorResponse,
    PricesOut,
)

router = APIRouter(tags=["assets"])


def asset_out(snap: Snapshot, aid: int) -> dict:
    first, last = snap.first_last[aid]
    return {**snap.meta[aid], "first_date": first, "last_date": last}


@router.get("/assets", response_model=AssetPage)
def assets(
    snap: SnapshotDep,
    q: Annotated[
        str | None, Query(max_length=MAX_NAME, description="Ticker prefix or part of the name, any case")
    ] = None,
    sector: Annotated[str | None, Query(max_length=MAX_NAME)] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """Assets of the served index, searchable by ticker prefix or name."""
    needle = (q or "").strip().lower()
    rows = [
        (aid, m)
        for aid, m in enumerate(snap.meta)
        if (not needle or m["ticker"].lower().startswith(needle) or needle in m["name"].lower())
        and (sector is None or m["sector"] == sector)
    ]
    page = [asset_out(snap, aid) for aid, _ in rows[offset : offset + limit]]
    return json_response({"total": len(rows), "offset": offset, "limit": limit, "items": page})


@router.get("/assets/{ticker}", response_model=AssetOut, responses=ERRORS)
def asset(snap: SnapshotDep, ticker: str) -> Response:
    """One asset's metadata and the dates it has vectors for."""
    try:
        aid = snap.reader.asset_id(parse_ticker(ticker))
    except UnknownTicker as exc:
        raise to_api_error(exc) from None
    return json_response(asset_out(snap, aid))


@router.get("/dates", response_model=DatesOut)
def dates(snap: SnapshotDep) -> Response:
    """The indexed trading dates."""
    iso = snap.dates_iso
    return json_response(
        {
            "index_version": snap.index_version,
            "first": iso[0],
            "last": iso[-1],
            "count": len(iso),
            "dates": iso,
        }
    )


# GET /assets/{ticker}/prices without `from`: the 64 trading days before `to` (65 closes, 64
# returns), the length of the window the model reads.
PRICE_DAYS = 64

PRICE_ERRORS = {
    404: {
        "model": ErrorResponse,
        "description": "Unknown ticker (with close matches), no close in the range (with the asset's "
        "available range), or no prices loaded for the served index",
    },
    422: {"model": ErrorResponse, "description": "A malformed date, or `from` after `to`"},
    503: {"model": ErrorResponse, "description": "No index loaded yet"},
}

DATE_QUERY = {"format": "date"}


def _date(value: str | None, field: str) -> dt.date | None:
    """parse_date, with the parameter named in the error: a request has two dates. An empty value
    is refused, not taken for the default: the parameter is documented as a date."""
    if value == "":
        raise APIError(
            422,
            "invalid_date",
            f"{field}: an empty value is not a YYYY-MM-DD date; leave {field} out for its default",
            {"field": field, "date": ""},
        )
    try:
        return parse_date(value)
    except APIError as exc:
        raise APIError(
            exc.status, exc.code, f"{field}: {exc.message}", {"field": field, **exc.detail}
        ) from None


@router.get("/assets/{ticker}/prices", response_model=PricesOut, responses=PRICE_ERRORS)
def prices(
    snap: SnapshotDep,
    ticker: str,
    start: Annotated[
        str | None,
        Query(
            alias="from",
            max_length=MAX_DATE,
            json_schema_extra=DATE_QUERY,
            description=f"YYYY-MM-DD, the first date. Default: {PRICE_DAYS} trading days before `to`",
        ),
    ] = None,
    end: Annotated[
        str | None,
        Query(
            alias="to",
            max_length=MAX_DATE,
            json_schema_extra=DATE_QUERY,
            description="YYYY-MM-DD, the last date. Default: the newest indexed date",
        ),
    ] = None,
) -> Response:
    """The asset's daily closes over [from, to], clipped to the dates of the market data the index
    was built from, and the same normalised to 1.0 on the first returned date. Dates on which the
    asset has no close are left out; a range in which it has none is a 404 `no_data_in_range`."""
    ticker = parse_ticker(ticker)
    first, last = _date(start, "from"), _date(end, "to")
    try:
        aid = snap.reader.asset_id(ticker)
    except UnknownTicker as exc:
        raise to_api_error(exc) from None
    if snap.close is None:
        # The index's market data is not where its manifest says (a deployment without the data
        # directory): nothing to answer from until the service can read it.
        raise prices_unavailable(snap.index_version)
    dates = snap.close_dates
    if last is None:
        last = snap.newest_date
    hi = int(np.searchsorted(dates, np.datetime64(last, "D"), side="right"))  # rows up to `to`
    if first is None:
        first = dates[max(hi - 1 - PRICE_DAYS, 0)].item() if hi else last
    if first > last:
        problem = f"from {first.isoformat()} is after to {last.isoformat()}"
        if end is None:
            problem += " (the newest indexed date, to's default)"
        raise APIError(422, "invalid_request", problem, [{"field": "from", "problem": problem}])
    lo = int(np.searchsorted(dates, np.datetime64(first, "D"), side="left"))
    column = int(snap.close_column[aid])
    # An asset of the index missing from the panel has no close on any date.
    closes = snap.close[:, column] if column >= 0 else np.full(len(dates), np.nan, dtype=np.float32)
    window = closes[lo:hi]
    # A missing bar is NaN; a non-positive close is no price to normalise by.
    keep = np.isfinite(window) & (window > 0)
    if not keep.any():
        present = np.flatnonzero(np.isfinite(closes) & (closes > 0))
        detail = {
            "ticker": snap.meta[aid]["ticker"],
            "from": first.isoformat(),
            "to": last.isoformat(),
            "available_from": str(dates[present[0]]) if len(present) else None,
            "available_to": str(dates[present[-1]]) if len(present) else None,
        }
        raise APIError(
            404, "no_data_in_range", f"{detail['ticker']} has no close from {first} to {last}", detail
        )
    days = np.datetime_as_string(dates[lo:hi][keep], unit="D").tolist()
    # float32 closes as their shortest decimals (93.59, not 93.58999633789062).
    values = [float(v) for v in window[keep].astype(str)]
    base = values[0]
    points = [
        {"date": day, "close": value, "normalized": value / base}
        for day, value in zip(days, values, strict=True)
    ]
    return json_response(
        {"ticker": snap.meta[aid]["ticker"], "from": days[0], "to": days[-1], "points": points}
    )
