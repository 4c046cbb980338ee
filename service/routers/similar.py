"""Similarity: GET /similar/{ticker}, the hot route, and POST /similar, many queries in one call."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from index import ann
from service.deps import SettingsDep, SnapshotDep, current_snapshot
from service.errors import APIError, error_body
from service.params import SIMILAR_PARAMETERS, parse_similar_query, parse_ticker, peer_query
from service.routing import ERRORS, DirectRoute, json_response
from service.schemas import ErrorResponse, SimilarBatch, SimilarBatchResponse, SimilarResponse
from service.similar import answer

router = APIRouter(tags=["similarity"])


async def similar(request: Request) -> Response:
    """The k assets whose future returns the model expects to move most like `ticker`'s after `date`."""
    # Checked in this order: the ticker, an index to answer from, then the query parameters.
    ticker = parse_ticker(request.path_params["ticker"])
    snap = current_snapshot(request)
    return json_response(answer(snap, parse_similar_query(ticker, request.query_params)))


router.add_api_route(
    "/similar/{ticker}",
    similar,
    methods=["GET"],
    response_model=None,
    responses={200: {"model": SimilarResponse, "description": "Peers, best first"}, **ERRORS},
    openapi_extra={"parameters": SIMILAR_PARAMETERS},
    route_class_override=DirectRoute,
)


@router.post(
    "/similar",
    response_model=SimilarBatchResponse,
    responses={
        **ERRORS,
        400: {"model": ErrorResponse, "description": "The body is not JSON encoded as UTF-8"},
        413: {"model": ErrorResponse, "description": "The body is over FASCL_MAX_BODY_BYTES"},
    },
)
def similar_batch(snap: SnapshotDep, settings: SettingsDep, batch: SimilarBatch) -> Response:
    """Many queries in one call; each item carries its result or the error it would have returned."""
    # A sync route: up to 1,000 searches stay off the event loop, on a threadpool thread whose
    # OpenMP thread count is its own (set here, as the loop's is in the lifespan).
    ann.set_threads(settings.omp_threads)
    items = []
    for item in batch.queries:
        try:
            items.append({"result": answer(snap, peer_query(item)), "error": None})
        except APIError as exc:
            items.append({"result": None, "error": error_body(exc.code, exc.message, exc.detail)})
    return json_response({"results": items})
