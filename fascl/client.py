"""A Python client of the FASCL service, for notebooks and scripts: answers as pandas DataFrames,
errors as typed exceptions.

    from fascl.client import Client

    with Client("http://127.0.0.1:8000", api_key="...") as fascl:
        peers = fascl.similar("AAPL", "2016-06-30", k=5)   # a DataFrame, best first
        prices = fascl.prices("AAPL")                      # closes of the last 65 sessions

`AsyncClient` has the same methods, as coroutines. Only httpx and pandas are needed: this module
imports nothing of the service's own packages, so a notebook installs the client's dependencies only.

Errors: every failure is a `FasclError`; an answer of the service in its error shape is an
`ApiError` (status, code, message, detail) of the class its code maps to (`CODES`). A 503 and a
connection error or timeout are retried `retries` times with exponential backoff; nothing else is.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import pandas as pd

__all__ = [
    "ApiError",
    "AsyncClient",
    "Client",
    "FasclError",
    "Forbidden",
    "InvalidDate",
    "InvalidRequest",
    "NoData",
    "NotFound",
    "ServerError",
    "ServiceUnavailable",
    "Unauthorized",
    "UnknownTicker",
    "UnknownValue",
]


# ------------------------------------------------------------------------------------------ errors
class FasclError(Exception):
    """Any failure of a call: an error answer of the service (`ApiError`), or no answer at all (the
    connection refused or timed out after every retry: `status` None, `code` "connection_error" or
    "timeout", the transport's exception as `__cause__`)."""

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None, detail: Any = None
    ):
        super().__init__(message)
        self.status, self.code, self.message, self.detail = status, code, message, detail

    def __str__(self) -> str:
        prefix = f"{self.status} {self.code}" if self.status is not None else self.code
        return f"{prefix}: {self.message}" if prefix else self.message


class ApiError(FasclError):
    """The service answered with an error: {"error": {"code", "message", "detail"}}."""


class NotFound(ApiError):
    """404: no such route or resource."""


class UnknownTicker(NotFound):
    """404 unknown_ticker: `detail["close_matches"]` lists tickers the index does hold."""


class NoData(NotFound):
    """404: the asset has no data there (no_data_on_date, no_data_in_range: `detail` has the
    available range), a date before the index's first (date_out_of_range), or no prices loaded."""


class InvalidRequest(ApiError):
    """4xx: the request is wrong as sent (422 invalid_request names the field in `detail`)."""


class InvalidDate(InvalidRequest):
    """422 invalid_date: not a real YYYY-MM-DD date."""


class UnknownValue(InvalidRequest):
    """422: a sector, an exchange or `among` tickers the index does not hold (`detail` says which
    would be valid)."""


class Unauthorized(ApiError):
    """401: no X-API-Key, or one the service does not know."""


class Forbidden(ApiError):
    """403: the key lacks the route's scope."""


class ServiceUnavailable(ApiError):
    """503: no index loaded yet, not ready, the database unreachable: worth retrying later."""


class ServerError(ApiError):
    """500: a damaged index file (index_corrupt) or a bug (internal_error)."""


# Every code the service sends, by the class it raises.
CODES: dict[str, type[ApiError]] = {
    "unknown_ticker": UnknownTicker,
    "no_data_on_date": NoData,
    "no_data_in_range": NoData,
    "date_out_of_range": NoData,
    "prices_unavailable": NoData,
    "not_found": NotFound,
    "invalid_date": InvalidDate,
    "invalid_request": InvalidRequest,
    "invalid_query": InvalidRequest,
    "method_not_allowed": InvalidRequest,
    "body_timeout": InvalidRequest,
    "body_too_large": InvalidRequest,
    "unknown_sector": UnknownValue,
    "unknown_exchange": UnknownValue,
    "unknown_tickers": UnknownValue,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "no_index": ServiceUnavailable,
    "not_ready": ServiceUnavailable,
    "database_unavailable": ServiceUnavailable,
    "refresh_in_progress": ServiceUnavailable,
    "keys_unavailable": ServiceUnavailable,
    "index_corrupt": ServerError,
    "internal_error": ServerError,
}
# A code this client does not know (a newer service), or an answer not in the error shape (a
# proxy's 502, the server's plain-text 408 or 431): the class of its status.
STATUSES: dict[int, type[ApiError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    503: ServiceUnavailable,
}


def error_of(status: int, body: Any, text: str = "") -> ApiError:
    """The exception of an error answer: `body` its JSON (None if it was not JSON)."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        code, message, detail = error["code"], str(error.get("message") or ""), error.get("detail")
    else:
        code, message, detail = None, (text.strip()[:200] or f"HTTP {status}"), None
    cls = CODES.get(code) or STATUSES.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else InvalidRequest if 400 <= status < 500 else ApiError
    return cls(message, status=status, code=code, detail=detail)


def _parse(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success and body is not None:
        return body
    if response.is_success:
        raise ApiError(f"the answer is not JSON: {response.text[:200]!r}", status=response.status_code)
    raise error_of(response.status_code, body, response.text)


# Transport failures that a retry may cure: the connection refused, reset or cut, or too slow. Not
# an invalid URL or a protocol this client cannot speak.
RETRIED = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def _transport_error(exc: httpx.HTTPError, url: str, attempts: int) -> FasclError:
    code = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection_error"
    what = exc.__class__.__name__ + (f": {exc}" if str(exc) else "")
    return FasclError(f"no answer from {url} after {attempts} attempt(s) ({what})", code=code)


# ------------------------------------------------------------------------------------ requests
# What a method asks for and how its answer becomes a DataFrame: the same for both clients.
MAX_BATCH = 1000  # POST /similar's bound: longer lists go in several calls
MAX_AMONG_GET = 8_000  # characters of `among` in a GET's query; a larger universe goes by POST
ASSET_PAGE = 500
PEER_COLUMNS = ["rank", "ticker", "name", "sector", "industry", "exchange", "score"]
# A query tuple's fields, in the order of similar()'s arguments.
QUERY_FIELDS = (
    "ticker",
    "date",
    "k",
    "sector",
    "exchange",
    "exclude_same_sector",
    "min_score",
    "among",
    "include_realized",
)


def _iso(value: Any) -> str | None:
    """A date as the service takes it: a date, datetime, pandas Timestamp or numpy datetime64 as
    YYYY-MM-DD; a string as given (the service says if it is not a date)."""
    if value is None or isinstance(value, str):
        return value
    return pd.Timestamp(value).date().isoformat()


def _plain(value: Any) -> Any:
    """A numpy scalar (a k read from a DataFrame) as the Python number JSON can carry."""
    if isinstance(value, (str, bool, int, float)) or not hasattr(value, "item"):
        return value
    return value.item()


def _path(*parts: str) -> str:
    # A ticker is one path segment whatever its characters ("BRK/A" stays one).
    return "/" + "/".join(quote(str(p), safe="") for p in parts)


def _query_item(query: Mapping[str, Any] | Sequence[Any] | str) -> dict:
    """A POST /similar item from a dict of its fields, a tuple (ticker, date, k, ...) in the order
    of QUERY_FIELDS, or a ticker alone."""
    if isinstance(query, str):
        item: dict[str, Any] = {"ticker": query}
    elif isinstance(query, Mapping):
        item = dict(query)
    else:
        if len(query) > len(QUERY_FIELDS):
            raise ValueError(
                f"a query tuple has at most {len(QUERY_FIELDS)} fields {QUERY_FIELDS}: {query!r}"
            )
        item = dict(zip(QUERY_FIELDS, query, strict=False))
    item = {name: _plain(value) for name, value in item.items()}
    if "date" in item:
        item["date"] = _iso(item["date"])
    if item.get("among") is not None and not isinstance(item["among"], list):
        item["among"] = [item["among"]] if isinstance(item["among"], str) else list(item["among"])
    return {k: v for k, v in item.items() if v is not None}


def _similar_item(ticker, date, k, sector, exchange, exclude_same_sector, min_score, among, include_realized):
    return _query_item(
        {
            "ticker": ticker,
            "date": date,
            "k": k,
            "sector": sector,
            "exchange": exchange,
            "exclude_same_sector": exclude_same_sector or None,
            "min_score": min_score,
            "among": None if among is None else ([among] if isinstance(among, str) else list(among)),
            "include_realized": include_realized or None,
        }
    )


def _similar_request(item: dict) -> tuple[str, str, dict | None, dict | None]:
    """(method, path, query parameters, JSON body) of one query: a GET, or a POST of a batch of
    one when its universe would not fit in a request head."""
    among = item.get("among")
    if among is not None and sum(len(t) + 1 for t in among) > MAX_AMONG_GET:
        return "POST", "/similar", None, {"queries": [item]}
    params = {}
    for name, value in item.items():
        if name == "ticker":
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif name == "among":
            value = ",".join(value)
        params[name] = value
    return "GET", _path("similar", item["ticker"]), params, None


# A batch answers 200; an item's error has the status the same query alone would get: these 404,
# every other a 422 (an item fails only as its query would: unknown, no data, or invalid).
ITEM_NOT_FOUND = {"unknown_ticker", "no_data_on_date", "date_out_of_range"}


def _item_error(error: dict) -> ApiError:
    return error_of(404 if error.get("code") in ITEM_NOT_FOUND else 422, {"error": error})


def _unwrap_one(body: dict) -> dict:
    """The answer of a batch of one, or the error it carries raised."""
    item = body["results"][0]
    if item.get("error") is not None:
        raise _item_error(item["error"])
    return item["result"]


def peers_frame(answer: dict) -> pd.DataFrame:
    """A GET /similar answer as a DataFrame of its peers, best first; the query, its as-of date and
    the versions in `attrs`."""
    results = answer["results"]
    columns = list(PEER_COLUMNS)
    if any("realized_correlation" in r for r in results):
        columns.append("realized_correlation")
    frame = pd.DataFrame(results, columns=columns)
    query = answer["query"]
    frame.attrs.update(
        query=dict(query),
        ticker=query["ticker"],
        as_of=dt.date.fromisoformat(query["as_of"]),
        requested_date=None
        if query["requested_date"] is None
        else dt.date.fromisoformat(query["requested_date"]),
        model_version=answer["model_version"],
        index_version=answer["index_version"],
    )
    return frame


def _batch_items(body: dict, raw: bool) -> list:
    """Each item of a POST /similar answer: a DataFrame (or the raw result), or the ApiError the
    query would have raised alone."""
    out: list = []
    for item in body["results"]:
        if item.get("error") is not None:
            out.append(_item_error(item["error"]))
        else:
            out.append(item["result"] if raw else peers_frame(item["result"]))
    return out


def assets_frame(items: list[dict]) -> pd.DataFrame:
    columns = ["ticker", "name", "sector", "industry", "exchange", "first_date", "last_date"]
    frame = pd.DataFrame(items, columns=columns)
    for column in ("first_date", "last_date"):
        frame[column] = [None if v is None else dt.date.fromisoformat(v) for v in frame[column]]
    return frame


def prices_frame(body: dict) -> pd.DataFrame:
    """GET /assets/{ticker}/prices as a DataFrame indexed by date (a DatetimeIndex named "date"),
    columns close and normalized; the ticker and the range in `attrs`."""
    points = body["points"]
    index = pd.DatetimeIndex(pd.to_datetime([p["date"] for p in points]), name="date")
    frame = pd.DataFrame(
        {"close": [p["close"] for p in points], "normalized": [p["normalized"] for p in points]},
        index=index,
        dtype=float,
    )
    frame.attrs.update(
        ticker=body["ticker"],
        start=dt.date.fromisoformat(body["from"]),
        end=dt.date.fromisoformat(body["to"]),
    )
    return frame


def _chunks(items: list, size: int) -> Iterable[list]:
    for at in range(0, len(items), size):
        yield items[at : at + size]


# ------------------------------------------------------------------------------------- clients
class _Base:
    _transport: type[httpx.Client] | type[httpx.AsyncClient]

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
    ):
        if retries < 0 or backoff < 0:
            raise ValueError("retries and backoff must not be negative")
        self.base_url = base_url.rstrip("/")
        self.retries, self.backoff = retries, backoff
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = self._transport(base_url=self.base_url, timeout=timeout, headers=headers)

    def _delay(self, attempt: int) -> float:
        """Seconds before retry number `attempt` (0, 1, ...): backoff, doubled each time."""
        return self.backoff * 2**attempt

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.base_url!r})"


class Client(_Base):
    """A blocking client: `with Client(url, api_key=...) as c: c.similar("AAPL")`.

    `timeout` is in seconds for each of connecting, reading and writing (or an httpx.Timeout);
    `retries` is how many times a 503, a refused or cut connection or a timeout is tried again,
    after `backoff`, then twice as long each time. 4xx answers are never retried."""

    _transport = httpx.Client

    def _call(self, method: str, path: str, params: dict | None = None, json: Any = None) -> Any:
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._http.request(method, path, params=params, json=json)
            except httpx.TransportError as exc:
                if last or not isinstance(exc, RETRIED):
                    raise _transport_error(exc, self.base_url + path, attempt + 1) from exc
            else:
                if response.status_code != 503 or last:
                    return _parse(response)
            time.sleep(self._delay(attempt))
        raise AssertionError("unreachable")

    def similar(
        self,
        ticker: str,
        date: str | dt.date | None = None,
        k: int = 10,
        *,
        sector: str | None = None,
        exchange: str | None = None,
        exclude_same_sector: bool = False,
        min_score: float | None = None,
        among: Iterable[str] | None = None,
        include_realized: bool = False,
        raw: bool = False,
    ) -> pd.DataFrame | dict:
        """The k peers of `ticker` as of `date` (default: the newest indexed date), best first: a
        DataFrame with columns rank, ticker, name, sector, industry, exchange, score (and
        realized_correlation with include_realized); `attrs` holds the query, `as_of` (the trading
        date used, a datetime.date) and the versions. raw=True: the JSON answer as a dict."""
        item = _similar_item(
            ticker, date, k, sector, exchange, exclude_same_sector, min_score, among, include_realized
        )
        method, path, params, body = _similar_request(item)
        answer = self._call(method, path, params, body)
        if method == "POST":
            answer = _unwrap_one(answer)
        return answer if raw else peers_frame(answer)

    def similar_many(self, queries: Iterable[Mapping | Sequence | str], *, raw: bool = False) -> list:
        """Many queries through POST /similar (1,000 per call). Each query is a dict of GET's
        fields ({"ticker": "AAPL", "date": "2016-06-30", "k": 5, "sector": ...}), a tuple
        (ticker, date, k, ...) or a ticker. Returns one entry per query, in order: its DataFrame (its
        dict with raw=True), or the ApiError it would have raised alone, returned, not raised."""
        items = [_query_item(q) for q in queries]
        out: list = []
        for chunk in _chunks(items, MAX_BATCH):
            out += _batch_items(self._call("POST", "/similar", json={"queries": chunk}), raw)
        return out

    def assets(self, q: str | None = None, sector: str | None = None) -> pd.DataFrame:
        """The served universe (matching a ticker prefix or part of the name `q`, and `sector`),
        every page: columns ticker, name, sector, industry, exchange, first_date, last_date."""
        items: list[dict] = []
        while True:
            params = {"q": q, "sector": sector, "offset": len(items), "limit": ASSET_PAGE}
            page = self._call("GET", "/assets", {k: v for k, v in params.items() if v is not None})
            items += page["items"]
            if not page["items"] or len(items) >= page["total"]:
                return assets_frame(items)

    def asset(self, ticker: str) -> dict:
        """One asset's metadata and its indexed range (GET /assets/{ticker})."""
        return self._call("GET", _path("assets", ticker))

    def dates(self) -> list[dt.date]:
        """The indexed trading dates, ascending."""
        return [dt.date.fromisoformat(d) for d in self._call("GET", "/dates")["dates"]]

    def prices(
        self, ticker: str, start: str | dt.date | None = None, end: str | dt.date | None = None
    ) -> pd.DataFrame:
        """Daily closes of `ticker` from `start` to `end` (defaults: the 64 sessions before the
        newest indexed date), indexed by date: close, and normalized (1.0 on the first date).
        A range without a close raises NoData, whose detail gives the asset's available range."""
        params = {"from": _iso(start), "to": _iso(end)}
        body = self._call("GET", _path("assets", ticker, "prices"), {k: v for k, v in params.items() if v})
        return prices_frame(body)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class AsyncClient(_Base):
    """Client's methods as coroutines: `async with AsyncClient(url) as c: await c.similar("AAPL")`."""

    _transport = httpx.AsyncClient

    async def _call(self, method: str, path: str, params: dict | None = None, json: Any = None) -> Any:
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = await self._http.request(method, path, params=params, json=json)
            except httpx.TransportError as exc:
                if last or not isinstance(exc, RETRIED):
                    raise _transport_error(exc, self.base_url + path, attempt + 1) from exc
            else:
                if response.status_code != 503 or last:
                    return _parse(response)
            await asyncio.sleep(self._delay(attempt))
        raise AssertionError("unreachable")

    async def similar(
        self,
        ticker: str,
        date: str | dt.date | None = None,
        k: int = 10,
        *,
        sector: str | None = None,
        exchange: str | None = None,
        exclude_same_sector: bool = False,
        min_score: float | None = None,
        among: Iterable[str] | None = None,
        include_realized: bool = False,
        raw: bool = False,
    ) -> pd.DataFrame | dict:
        """See Client.similar."""
        item = _similar_item(
            ticker, date, k, sector, exchange, exclude_same_sector, min_score, among, include_realized
        )
        method, path, params, body = _similar_request(item)
        answer = await self._call(method, path, params, body)
        if method == "POST":
            answer = _unwrap_one(answer)
        return answer if raw else peers_frame(answer)

    async def similar_many(self, queries: Iterable[Mapping | Sequence | str], *, raw: bool = False) -> list:
        """See Client.similar_many."""
        items = [_query_item(q) for q in queries]
        out: list = []
        for chunk in _chunks(items, MAX_BATCH):
            out += _batch_items(await self._call("POST", "/similar", json={"queries": chunk}), raw)
        return out

    async def assets(self, q: str | None = None, sector: str | None = None) -> pd.DataFrame:
        """See Client.assets."""
        items: list[dict] = []
        while True:
            params = {"q": q, "sector": sector, "offset": len(items), "limit": ASSET_PAGE}
            page = await self._call("GET", "/assets", {k: v for k, v in params.items() if v is not None})
            items += page["items"]
            if not page["items"] or len(items) >= page["total"]:
                return assets_frame(items)

    async def asset(self, ticker: str) -> dict:
        """See Client.asset."""
        return await self._call("GET", _path("assets", ticker))

    async def dates(self) -> list[dt.date]:
        """See Client.dates."""
        return [dt.date.fromisoformat(d) for d in (await self._call("GET", "/dates"))["dates"]]

    async def prices(
        self, ticker: str, start: str | dt.date | None = None, end: str | dt.date | None = None
    ) -> pd.DataFrame:
        """See Client.prices."""
        params = {"from": _iso(start), "to": _iso(end)}
        body = await self._call(
            "GET", _path("assets", ticker, "prices"), {k: v for k, v in params.items() if v}
        )
        return prices_frame(body)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()
