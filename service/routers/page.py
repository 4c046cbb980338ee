"""The web page (GET /, its files under /static/page/) and the data only it needs besides the
other routes: plain Pearson's answer (GET /similar/{ticker}/pearson), the track record
(GET /track-record) and the filter values (GET /filters)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from service.deps import SnapshotDep, current_snapshot
from service.errors import APIError, excerpt, prices_unavailable
from service.params import SIMILAR_PARAMETERS, parse_similar_query, parse_ticker
from service.pearson import pearson_answer
from service.routing import ERRORS, json_response
from service.schemas import MAX_K, ErrorResponse, FiltersOut, PearsonResponse, TrackRecordOut
from service.track_record import track_record

router = APIRouter(tags=["page"])

STATIC = Path(__file__).resolve().parent.parent / "static" / "page"
MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
# Read once: three small files, served from memory. Only these names are served.
FILES = {
    p.name: (p.read_bytes(), MEDIA_TYPES[p.suffix] + "; charset=utf-8")
    for p in sorted(STATIC.iterdir())
    if p.suffix in MEDIA_TYPES
}
# The page loads nothing from anywhere but the service; the browser enforces it.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",  # small files: revalidated, so a deployment's new page shows at once
}


def _file(name: str) -> Response:
    body, media_type = FILES[name]
    return Response(body, media_type=media_type, headers=PAGE_HEADERS)


@router.get("/", include_in_schema=False)
def page() -> Response:
    """The page: a query form, the peers, their prices, Pearson's peers beside them and the track record."""
    return _file("index.html")


@router.get("/static/page/{name}", include_in_schema=False)
def page_file(name: str) -> Response:
    if name == "index.html" or name not in FILES:
        raise APIError(404, "not_found", f"no page file {excerpt(name)}", {"files": sorted(FILES)})
    return _file(name)


def pearson(request: Request) -> Response:
    """Plain Pearson's top-k on the same query: peers ranked by the correlation of their trailing
    64 daily returns with the query's (65 closes ending at the date), among the assets with a
    vector on that date; the same parameters, filters, errors and shape as GET /similar."""
    ticker = parse_ticker(request.path_params["ticker"])
    snap = current_snapshot(request)
    return json_response(pearson_answer(snap, parse_similar_query(ticker, request.query_params)))


router.add_api_route(
    "/similar/{ticker}/pearson",
    pearson,
    methods=["GET"],
    response_model=None,
    responses={
        200: {"model": PearsonResponse, "description": "Pearson's peers, best first"},
        **ERRORS,
        404: {
            "model": ErrorResponse,
            "description": "Unknown ticker, no data on that date, or no prices loaded for the served index",
        },
    },
    openapi_extra={"parameters": SIMILAR_PARAMETERS},
)


@router.get(
    "/track-record",
    response_model=TrackRecordOut,
    responses={
        404: {"model": ErrorResponse, "description": "No prices loaded for the served index"},
        422: {"model": ErrorResponse, "description": f"k outside 1..{MAX_K}"},
        503: {"model": ErrorResponse, "description": "No index loaded yet"},
    },
)
def track(snap: SnapshotDep, k: Annotated[int, Query(ge=1, le=MAX_K)] = 10) -> Response:
    """Realised FRC@k of the model's peers by month, against plain 64-day Pearson and random peers,
    over a sample of the served index's dates whose 64-day future is known (the sample is
    described in the answer). Ranked once per index version, for every k at once: the first
    request waits."""
    if snap.close is None:
        raise prices_unavailable(snap.index_version)
    return json_response(track_record(snap, k))


@router.get("/filters", response_model=FiltersOut)
def filters(snap: SnapshotDep) -> Response:
    """The sectors and exchanges GET /similar can filter by."""
    return json_response(
        {
            "index_version": snap.index_version,
            "sectors": snap.reader.sectors,
            "exchanges": snap.reader.exchanges,
        }
    )
