"""One error shape for every failure: {"error": {"code", "message", "detail"}}.

`error_body` makes the inner object, for the handlers here and for the per-item errors of
POST /similar; `to_api_error` turns the index's query errors into API errors."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from index.errors import (
    DateOutOfRange,
    IndexCorruptError,
    NoDataOnDate,
    QueryError,
    UnknownExchange,
    UnknownSector,
    UnknownTicker,
    UnknownTickers,
)

log = logging.getLogger("fascl.service")


EXCERPT_CHARS = 40
UNKNOWN_LISTED = 20  # unknown tickers of an `among` universe named in an error


def excerpt(value: object) -> str:
    """A bad value as an error may echo it: quoted, and cut to its first characters when long."""
    text = str(value)
    if len(text) <= EXCERPT_CHARS:
        return repr(text)
    return f"{text[:EXCERPT_CHARS]!r}... ({len(text):,} characters)"


class APIError(Exception):
    def __init__(self, status: int, code: str, message: str, detail: Any = None):
        super().__init__(message)
        self.status, self.code, self.message, self.detail = status, code, message, detail


def error_body(code: str, message: str, detail: Any = None) -> dict:
    """The error object: under "error" in a response, or in a batch item in place of its result."""
    return {"code": code, "message": message, "detail": detail}


def error_response(status: int, code: str, message: str, detail: Any = None, headers=None) -> Response:
    body = orjson.dumps({"error": error_body(code, message, detail)})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def prices_unavailable(index_version: str) -> APIError:
    """The answer of a route that needs the served index's market data when the service cannot read it
    (a deployment without the data directory the manifest names)."""
    return APIError(
        404,
        "prices_unavailable",
        "no prices are loaded for the served index: its market data cannot be read by the service",
        {"index_version": index_version},
    )


def to_api_error(exc: QueryError) -> APIError:
    """The API error of an index query error: its status, code and a detail a client can act on."""
    if isinstance(exc, UnknownTicker):
        return APIError(
            404, "unknown_ticker", str(exc), {"ticker": exc.ticker, "close_matches": exc.suggestions}
        )
    if isinstance(exc, NoDataOnDate):
        detail = {
            "ticker": exc.ticker,
            "date": exc.date.isoformat(),
            "available_from": exc.first.isoformat() if exc.first else None,
            "available_to": exc.last.isoformat() if exc.last else None,
        }
        return APIError(404, "no_data_on_date", str(exc), detail)
    if isinstance(exc, DateOutOfRange):
        detail = {"date": exc.date.isoformat(), "first": exc.first.isoformat(), "last": exc.last.isoformat()}
        return APIError(404, "date_out_of_range", str(exc), detail)
    if isinstance(exc, UnknownSector):
        return APIError(422, "unknown_sector", str(exc), {"sector": exc.value, "valid": exc.valid})
    if isinstance(exc, UnknownTickers):
        # A long universe of unknown tickers names the first few: the answer stays small.
        detail = {
            "unknown": exc.values[:UNKNOWN_LISTED],
            "unknown_count": len(exc.values),
            "close_matches": {t: m for t, m in exc.suggestions.items() if t in exc.values[:UNKNOWN_LISTED]},
        }
        return APIError(422, "unknown_tickers", str(exc), detail)
    if isinstance(exc, UnknownExchange):
        return APIError(422, "unknown_exchange", str(exc), {"exchange": exc.value, "valid": exc.valid})
    return APIError(422, "invalid_query", str(exc))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> Response:
        problems = [
            {"field": ".".join(str(p) for p in err["loc"][1:]) or str(err["loc"][0]), "problem": err["msg"]}
            for err in exc.errors()
        ]
        message = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
        return error_response(422, "invalid_request", message, problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> Response:
        code = {
            400: "invalid_request",
            404: "not_found",
            405: "method_not_allowed",
            401: "unauthorized",
            403: "forbidden",
            408: "body_timeout",
            413: "body_too_large",
        }.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 400:  # FastAPI's only 400: a body it cannot decode
            message += "; the body must be JSON encoded as UTF-8"
        detail = getattr(exc, "error_detail", None)
        return error_response(exc.status_code, code, message, detail, getattr(exc, "headers", None))

    @app.exception_handler(IndexCorruptError)
    async def _corrupt(_request: Request, exc: IndexCorruptError) -> Response:
        # A date of a large version is checked when first loaded: a bad file fails that date's
        # queries (the rest of the version keeps serving) and says which file and how.
        # The response names the file within the store (version/kind/file); the log has its full path.
        log.error("%s", exc)
        file = "/".join(Path(exc.path).parts[-3:])
        detail = {"file": file, "problem": exc.problem, "expected": exc.expected, "found": exc.actual}
        found = f" (expected {exc.expected}, found {exc.actual})" if exc.expected is not None else ""
        message = (
            f"index file {file} is corrupt: {exc.problem}{found}; "
            "check it with `fascl index verify` and rebuild or activate another version"
        )
        return error_response(500, "index_corrupt", message, detail)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        # Still a bug, and still logged with its traceback by the server; the client gets the one shape.
        return error_response(500, "internal_error", "the server failed to answer this request", None)
