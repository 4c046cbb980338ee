"""Request and response models: they document the API (OpenAPI, with examples) and validate bodies."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

MAX_K = 100
# Bounds of request fields: generous for real values, and what keeps a hostile one cheap to refuse.
MAX_TICKER = 32
MAX_NAME = 100  # a sector or an exchange
MAX_DATE = 32
MAX_AMONG = 20_000
MAX_AMONG_QUERY = 32_768  # GET's comma-separated universe, in characters: it must fit in a request head
MAX_OFFSET = 2**31 - 1


class QueryInfo(BaseModel):
    ticker: str
    name: str
    sector: str
    requested_date: str | None = Field(description="The date asked for (None: the newest indexed date)")
    as_of: str = Field(
        description="The indexed trading date used: the latest on or before the requested date"
    )


class Peer(BaseModel):
    rank: int
    ticker: str
    name: str
    sector: str
    industry: str
    exchange: str
    score: float = Field(
        description="Similarity of the FASCL embeddings: their inner product, for the default model a shrunk "
        "correlation estimate plus the peer's learned prior, about [-1.3, 1.3] (cosine similarity in [-1, 1] "
        "for a model without a history path)"
    )
    realized_correlation: float | None = Field(
        None,
        description="With include_realized: Pearson correlation of the next 64 daily returns with the query's",
    )


class SimilarResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "query": {
                        "ticker": "AAPL",
                        "name": "Apple Inc.",
                        "sector": "Technology",
                        "requested_date": "2016-06-30",
                        "as_of": "2016-06-30",
                    },
                    "model_version": "us_nasdaq-small-1a2b3c4d",
                    "index_version": "us_nasdaq-small-1a2b3c4d-20161230",
                    "results": [
                        {
                            "rank": 1,
                            "ticker": "MSFT",
                            "name": "Microsoft Corporation",
                            "sector": "Technology",
                            "industry": "Computer Software",
                            "exchange": "NASDAQ",
                            "score": 0.83,
                            "realized_correlation": None,
                        }
                    ],
                }
            ]
        }
    )
    query: QueryInfo
    model_version: str
    index_version: str
    results: list[Peer]


def whole_number(value: object) -> object:
    """5.0 is the integer 5 in JSON (and to JSON Schema); 5.5, "5" and true are still refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class SimilarQuery(BaseModel):
    # Strict: a value of another type than documented (k as "5", a boolean as 0) is refused, not coerced.
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"ticker": "AAPL", "date": "2016-06-30", "k": 5}]},
    )
    ticker: str = Field(min_length=1, max_length=MAX_TICKER)
    date: str | None = Field(
        None, max_length=MAX_DATE, description="YYYY-MM-DD; default the newest indexed date"
    )
    k: Annotated[int, BeforeValidator(whole_number)] = Field(10, ge=1, le=MAX_K)
    sector: str | None = Field(None, max_length=MAX_NAME)
    exchange: str | None = Field(None, max_length=MAX_NAME)
    exclude_same_sector: bool = False
    min_score: float | None = Field(None, ge=-1, le=1)
    include_realized: bool = False
    among: list[Annotated[str, Field(min_length=1, max_length=MAX_TICKER)]] | None = Field(
        None, min_length=1, max_length=MAX_AMONG, description="Only peers among these tickers"
    )


class SimilarBatch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    queries: list[SimilarQuery] = Field(min_length=1, max_length=1000)


class BatchItem(BaseModel):
    result: SimilarResponse | None = None
    error: dict | None = Field(None, description="The error object this query would have returned alone")


class SimilarBatchResponse(BaseModel):
    results: list[BatchItem]


class AssetOut(BaseModel):
    ticker: str
    name: str
    sector: str
    industry: str
    exchange: str
    first_date: str | None
    last_date: str | None


class AssetPage(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[AssetOut]


class DatesOut(BaseModel):
    index_version: str
    first: str
    last: str
    count: int
    dates: list[str]


class PricePoint(BaseModel):
    date: str
    close: float = Field(description="The day's close, as in the panel the index was built from (cleaned)")
    normalized: float = Field(description="close / the first returned close: 1.0 on the first date")


class PricesOut(BaseModel):
    # "from" is a Python keyword: the field is from_, named "from" in JSON.
    model_config = ConfigDict(
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "ticker": "AAPL",
                    "from": "2016-06-28",
                    "to": "2016-06-30",
                    "points": [
                        {"date": "2016-06-28", "close": 93.59, "normalized": 1.0},
                        {"date": "2016-06-29", "close": 94.4, "normalized": 1.008655},
                        {"date": "2016-06-30", "close": 95.6, "normalized": 1.02147},
                    ],
                }
            ]
        },
    )
    ticker: str
    from_: str = Field(alias="from", description="The first returned date")
    to: str = Field(description="The last returned date")
    points: list[PricePoint] = Field(
        description="One per trading date of the range on which the asset has a close, ascending; "
        "dates without a close (a missing bar) are left out"
    )


class ErrorBody(BaseModel):
    code: str
    message: str
    detail: object | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class PearsonResponse(SimilarResponse):
    """GET /similar's answer ranked by plain Pearson instead of the model."""

    method: str = Field(description='"pearson"')
    window_returns: int = Field(
        description="Daily returns correlated: those of the closes ending at as_of (64 returns, 65 closes). "
        "Each result's score is that Pearson correlation with the query's returns"
    )


class TrackRecordMonth(BaseModel):
    month: str = Field(description="YYYY-MM")
    dates: int = Field(description="Sampled query dates in the month")
    queries: int
    model: float = Field(description="FRC@k of the model's peers: mean realised future correlation")
    pearson: float = Field(description="FRC@k of plain 64-day Pearson's peers")
    random: float = Field(description="FRC@k of random peers")


class TrackRecordOverall(BaseModel):
    dates: int
    queries: int
    model: float
    pearson: float
    random: float


class TrackRecordSample(BaseModel):
    date_stride: int
    max_queries_per_date: int
    description: str


class TrackRecordOut(BaseModel):
    index_version: str
    model_version: str
    k: int
    horizon: int = Field(description="Trading days of the realised future (64)")
    pearson_window_returns: int
    sample: TrackRecordSample
    months: list[TrackRecordMonth] = Field(
        description="Months with a sampled date whose future is known, ascending"
    )
    overall: TrackRecordOverall | None = Field(description="Over every sampled query; None without any")


class FiltersOut(BaseModel):
    index_version: str
    sectors: list[str] = Field(description="The values GET /similar's `sector` takes")
    exchanges: list[str] = Field(description="The values GET /similar's `exchange` takes")
