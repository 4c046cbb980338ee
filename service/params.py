"""A similarity query, parsed once: `PeerQuery`, from GET /similar's parameters or a POST /similar item.

The hot route reads its parameters here rather than through FastAPI's per-parameter validation,
which measured at most of the request's cost (eight parameters, each resolved through annotations
on every call). The rules and messages match what FastAPI would give, in the service's error shape;
SIMILAR_PARAMETERS documents them in the OpenAPI schema. A batch item, validated by its pydantic
model, becomes the same object; the date of either is parsed here, and only here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from starlette.datastructures import QueryParams

from service.errors import APIError, excerpt
from service.schemas import MAX_AMONG_QUERY, MAX_DATE, MAX_K, MAX_NAME, MAX_TICKER, SimilarQuery


@dataclass(frozen=True, slots=True)
class PeerQuery:
    """One similarity query, validated: what service.similar.answer takes. (Not the batch item's
    pydantic model, SimilarQuery, whose name the OpenAPI schema shows.)"""

    ticker: str
    date: dt.date | None  # None: the newest indexed date
    k: int = 10
    sector: str | None = None
    exchange: str | None = None
    exclude_same_sector: bool = False
    min_score: float | None = None
    include_realized: bool = False
    among: tuple[str, ...] | None = None  # only peers among these tickers


TRUE, FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}

SIMILAR_PARAMETERS = [
    {
        "name": "ticker",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_TICKER},
        "example": "AAPL",
    },
    {
        "name": "date",
        "in": "query",
        "schema": {"type": "string", "format": "date", "maxLength": MAX_DATE},
        "description": "YYYY-MM-DD; the latest indexed trading date on or before it is used. Default: the newest.",
    },
    {
        "name": "k",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10},
        "description": "Number of peers",
    },
    {
        "name": "sector",
        "in": "query",
        "schema": {"type": "string", "maxLength": MAX_NAME},
        "description": "Only peers in this sector",
    },
    {
        "name": "exchange",
        "in": "query",
        "schema": {"type": "string", "maxLength": MAX_NAME},
        "description": "Only peers on this exchange",
    },
    {
        "name": "exclude_same_sector",
        "in": "query",
        "schema": {"type": "boolean", "default": False},
        "description": "Drop peers in the query's sector",
    },
    {
        "name": "min_score",
        "in": "query",
        "schema": {"type": "number", "minimum": -1, "maximum": 1},
        "description": "Drop peers whose score is below this (scores lie in [-1, 1])",
    },
    {
        "name": "among",
        "in": "query",
        "schema": {"type": "string", "maxLength": MAX_AMONG_QUERY},
        "example": "MSFT,GOOG,AMZN",
        "description": "Only peers among these tickers (comma-separated): a portfolio or tradable universe. "
        "Larger universes go through POST /similar as a list",
    },
    {
        "name": "include_realized",
        "in": "query",
        "schema": {"type": "boolean", "default": False},
        "description": "Add each peer's realised 64-day future correlation with the query, where the future is known",
    },
]


def _invalid(field: str, problem: str) -> APIError:
    return APIError(422, "invalid_request", f"{field}: {problem}", [{"field": field, "problem": problem}])


def _bool(params: QueryParams, name: str) -> bool:
    value = params.get(name)
    if value is None:
        return False
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise _invalid(name, f"Input should be a valid boolean (true or false), not {excerpt(value)}")


def _text(params: QueryParams, name: str, limit: int) -> str | None:
    value = params.get(name) or None
    if value is not None and len(value) > limit:
        raise _invalid(name, f"Input should have at most {limit} characters, not {excerpt(value)}")
    return value


def parse_ticker(value: str, field: str = "ticker") -> str:
    """A ticker as asked for: 1 to MAX_TICKER characters (longer is no ticker, and not worth a search)."""
    if not 0 < len(value) <= MAX_TICKER:
        raise _invalid(
            field, f"Input should be a ticker of 1 to {MAX_TICKER} characters, not {excerpt(value)}"
        )
    return value


def parse_date(value: str | None) -> dt.date | None:
    """A YYYY-MM-DD date, None for none given (or empty), or a 422 `invalid_date`."""
    if value is None or value == "":
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise APIError(
            422, "invalid_date", f"date {excerpt(value)} is not a valid YYYY-MM-DD date", {"date": value[:40]}
        ) from None


def _tickers(value: str | None) -> tuple[str, ...] | None:
    if not value:
        return None
    if len(value) > MAX_AMONG_QUERY:
        raise _invalid(
            "among",
            f"Input should have at most {MAX_AMONG_QUERY:,} characters, not {len(value):,}; "
            "send a larger universe through POST /similar as a list",
        )
    tickers = tuple(parse_ticker(t.strip(), "among") for t in value.split(",") if t.strip())
    if not tickers:
        raise _invalid("among", f"Input should be comma-separated tickers, not {excerpt(value)}")
    return tickers


QUERY_NAMES = [p["name"] for p in SIMILAR_PARAMETERS if p["in"] == "query"]


def parse_similar_query(ticker: str, params: QueryParams) -> PeerQuery:
    """GET /similar/{ticker}'s query (the ticker checked by parse_ticker), or a 422 APIError naming
    the field. The date is parsed last: of several faults, the others are named first, as always."""
    if len(params) != len(params.multi_items()):  # a parameter given twice: which one was meant?
        for name in QUERY_NAMES:
            if len(params.getlist(name)) > 1:
                raise _invalid(name, "Input should be given once, not repeated")
    k_text = params.get("k")
    if k_text is None:
        k = 10
    else:
        try:
            k = int(k_text)
        except ValueError:
            raise _invalid("k", f"Input should be a valid integer, not {excerpt(k_text)}") from None
        if not 1 <= k <= MAX_K:
            raise _invalid("k", f"Input should be between 1 and {MAX_K}, not {excerpt(k)}")
    min_text = params.get("min_score")
    min_score = None
    if min_text is not None:
        try:
            min_score = float(min_text)
        except ValueError:
            raise _invalid("min_score", f"Input should be a valid number, not {excerpt(min_text)}") from None
        if not -1 <= min_score <= 1:
            raise _invalid("min_score", f"Input should be between -1 and 1, not {excerpt(min_text)}")
    date = _text(params, "date", MAX_DATE)
    sector = _text(params, "sector", MAX_NAME)
    exchange = _text(params, "exchange", MAX_NAME)
    exclude_same_sector = _bool(params, "exclude_same_sector")
    include_realized = _bool(params, "include_realized")
    among = _tickers(params.get("among"))
    # Positional, in the field order: a frozen dataclass's keyword init costs more, per request.
    return PeerQuery(
        ticker, parse_date(date), k, sector, exchange, exclude_same_sector, min_score, include_realized, among
    )


def peer_query(item: SimilarQuery) -> PeerQuery:
    """A POST /similar item (validated by its model) as the query GET would parse; its date is
    checked here, with GET's error."""
    return PeerQuery(
        ticker=item.ticker,
        date=parse_date(item.date),
        k=item.k,
        sector=item.sector,
        exchange=item.exchange,
        exclude_same_sector=item.exclude_same_sector,
        min_score=item.min_score,
        include_realized=item.include_realized,
        among=None if item.among is None else tuple(item.among),
    )
