"""Embedding export, FAISS index build and the versioned artifact store.

Public API (the service needs only the store and the query side, which import no training code):

    from index import IndexReader, IndexStore, list_versions, latest_version, open_version
    reader = IndexReader(root="var/indexes")    # the latest version of that store
    reader.similar("AAPL", "2017-06-02", k=10, sector="Technology")

Building (`index.build.build_version`) imports model code and is reached through `fascl index build`.
"""

from index.errors import (
    DateOutOfRange,
    IndexCorruptError,
    IndexStoreError,
    NoDataOnDate,
    QueryError,
    UnknownExchange,
    UnknownSector,
    UnknownTicker,
    VersionNotFound,
)
from index.query import IndexReader, Neighbor, SimilarResult
from index.store import (
    IndexStore,
    IndexVersion,
    VersionInfo,
    latest_version,
    list_versions,
    open_version,
)

__all__ = [
    "DateOutOfRange",
    "IndexCorruptError",
    "IndexReader",
    "IndexStore",
    "IndexStoreError",
    "IndexVersion",
    "Neighbor",
    "NoDataOnDate",
    "QueryError",
    "SimilarResult",
    "UnknownExchange",
    "UnknownSector",
    "UnknownTicker",
    "VersionInfo",
    "VersionNotFound",
    "latest_version",
    "list_versions",
    "open_version",
]
