"""The served index's assets and dates: GET /assets, /assets/{ticker} and /dates."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from index.errors import UnknownTicker
from service.deps import SnapshotDep
from service.errors import to_api_error
from service.params import parse_ticker
from service.registry import Snapshot
from service.routing import ERRORS, json_response
from service.schemas import MAX_NAME, MAX_OFFSET, AssetOut, AssetPage, DatesOut

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
