"""Typed errors of the index package: the store's (missing, corrupt) and the query side's.

Query errors carry the facts a caller needs to answer well (close matches, the valid values, the
date range that does exist) as attributes, so the service can turn each into a precise 404/422
without parsing messages. All query errors are `QueryError` (a ValueError); all store errors are
`IndexStoreError` (an OSError would be wrong: the file is there, its content is not what was
published).
"""

from __future__ import annotations

import datetime as dt


class IndexStoreError(Exception):
    """The artifact store could not do what was asked."""


class VersionNotFound(IndexStoreError, LookupError):
    def __init__(self, version: str | None, root, available: list[str]):
        self.version, self.root, self.available = version, root, available
        if version is None:
            msg = f"no index version under {root}; build one with `fascl index build`"
        else:
            known = ", ".join(available[-5:]) or "none"
            msg = f"no index version {version!r} under {root} (latest: {known})"
        super().__init__(msg)


class IndexCorruptError(IndexStoreError):
    """A published file is missing, truncated or altered: its bytes are not what the manifest recorded."""

    def __init__(self, path, problem: str, expected: str | None = None, actual: str | None = None):
        self.path, self.problem, self.expected, self.actual = str(path), problem, expected, actual
        msg = f"index file {path} is corrupt: {problem}"
        if expected is not None:
            msg += f" (expected {expected}, found {actual})"
        super().__init__(msg)


class QueryError(ValueError):
    """A similarity query cannot be answered as asked."""


class UnknownTicker(QueryError, KeyError):
    def __init__(self, ticker: str, suggestions: list[str]):
        self.ticker, self.suggestions = ticker, suggestions
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"unknown ticker {ticker!r}{hint}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class NoDataOnDate(QueryError):
    def __init__(
        self,
        ticker: str,
        date: dt.date,
        first: dt.date | None,
        last: dt.date | None,
        requested: dt.date | None = None,
    ):
        self.ticker, self.date, self.first, self.last, self.requested = ticker, date, first, last, requested
        asof = f" (as of {requested})" if requested is not None and requested != date else ""
        if first is None:
            span = "it has no vectors in this index"
        else:
            span = f"it has vectors from {first} to {last}, not on every date in between"
        super().__init__(f"{ticker} has no vector on {date}{asof}: {span}")


class DateOutOfRange(QueryError):
    def __init__(self, date: dt.date, first: dt.date, last: dt.date):
        self.date, self.first, self.last = date, first, last
        super().__init__(f"{date} is before the first indexed date {first} (index covers {first} to {last})")


class UnknownSector(QueryError):
    def __init__(self, value: str, valid: list[str]):
        self.value, self.valid = value, valid
        super().__init__(f"unknown sector {value!r}; sectors are {', '.join(valid) or '(none)'}")


class UnknownExchange(QueryError):
    def __init__(self, value: str, valid: list[str]):
        self.value, self.valid = value, valid
        super().__init__(f"unknown exchange {value!r}; exchanges are {', '.join(valid) or '(none)'}")


class UnknownTickers(QueryError):
    """Tickers of a peer universe (`among`) that the index does not hold."""

    def __init__(self, values: list[str], suggestions: dict[str, list[str]]):
        self.values, self.suggestions = values, suggestions
        hints = [
            f"{v} (did you mean {', '.join(suggestions[v])}?)" if suggestions.get(v) else v for v in values
        ]
        super().__init__(
            f"{len(values)} ticker(s) of the peer universe are not in the index: {'; '.join(hints[:20])}"
        )
