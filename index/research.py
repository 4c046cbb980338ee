"""Research export: a version's vectors as (date, ticker, vector) rows in Parquet or .npz.

Parquet: columns date (date32), ticker (string), vector (fixed-size list of float32), one row group
per date, written date by date so memory stays at one date's vectors. `.npz`: arrays `row_date`
(YYYY-MM-DD strings), `tickers` and `vectors` (rows x d float32), one row per (date, asset); it is
built in memory, so prefer Parquet for long ranges. Both are written to a temp file and renamed, and
both say how vectors compare (`score_kind`: the Parquet schema's metadata `fascl.score`, the npz
array `score`): "cosine" or "inner_product", which a reader must not re-normalise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from index.store import IndexVersion

EXPORT_FORMATS = ("parquet", "npz")


@dataclass
class ExportResult:
    path: Path
    format: str
    rows: int
    dates: int
    dim: int
    bytes: int


def selected_dates(version: IndexVersion, start=None, end=None) -> list[str]:
    dates = version.dates
    lo = 0 if start is None else int(np.searchsorted(dates, np.datetime64(pd.Timestamp(start).date(), "D")))
    hi = (
        len(dates)
        if end is None
        else int(np.searchsorted(dates, np.datetime64(pd.Timestamp(end).date(), "D"), side="right"))
    )
    return [str(d) for d in dates[lo:hi]]


def export_vectors(
    version: IndexVersion, out: str | Path, fmt: str | None = None, *, start=None, end=None
) -> ExportResult:
    out = Path(out)
    fmt = fmt or out.suffix.lstrip(".").lower()
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose {' or '.join(EXPORT_FORMATS)}")
    dates = selected_dates(version, start, end)
    if not dates:
        raise ValueError(
            f"no indexed date in [{start}, {end}]; version {version.version} covers "
            f"{version.dates[0]} to {version.dates[-1]}"
        )
    tickers = np.array(version.manifest["tickers"]["ticker"], dtype=object)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        rows = (_parquet if fmt == "parquet" else _npz)(version, dates, tickers, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(out, fmt, rows, len(dates), version.dim, out.stat().st_size)


def score_kind(version: IndexVersion) -> str:
    """How a version's vectors are compared: "cosine" (unit vectors), "inner_product" (an encoder with
    a history path, whose vectors lie in the unit ball: re-normalising them changes the ranking), or
    "inner_product_prior" (the same, with the last coordinate a candidate prior that a query reads as
    1: the score of j for i is v_i[:-1] . v_j[:-1] + v_j[-1])."""
    if version.manifest["model"].get("unit_norm", True):
        return "cosine"
    return "inner_product_prior" if version.query_prior else "inner_product"


def _parquet(version: IndexVersion, dates: list[str], tickers: np.ndarray, tmp: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [("date", pa.date32()), ("ticker", pa.string()), ("vector", pa.list_(pa.float32(), version.dim))],
        metadata={"fascl.score": score_kind(version), "fascl.version": version.version},
    )
    rows = 0
    with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for date in dates:
            ids, vectors = version.read_vectors(date)
            flat = pa.array(np.ascontiguousarray(vectors).reshape(-1), type=pa.float32())
            table = pa.table(
                {
                    "date": pa.array(np.full(len(ids), np.datetime64(date, "D")), type=pa.date32()),
                    "ticker": pa.array(tickers[ids].tolist(), type=pa.string()),
                    "vector": pa.FixedSizeListArray.from_arrays(flat, version.dim),
                },
                schema=schema,
            )
            writer.write_table(table)
            rows += len(ids)
    return rows


def _npz(version: IndexVersion, dates: list[str], tickers: np.ndarray, tmp: Path) -> int:
    counts = dict(zip([str(d) for d in version.dates], version.counts.tolist(), strict=True))
    total = sum(counts[d] for d in dates)
    vectors = np.empty((total, version.dim), dtype=np.float32)
    row_date = np.empty(total, dtype="U10")
    names = np.empty(total, dtype=object)
    at = 0
    for date in dates:
        ids, v = version.read_vectors(date)
        vectors[at : at + len(ids)] = v
        row_date[at : at + len(ids)] = date
        names[at : at + len(ids)] = tickers[ids]
        at += len(ids)
    width = max((len(t) for t in tickers), default=1)
    with open(tmp, "wb") as fh:
        np.savez(
            fh,
            row_date=row_date,
            tickers=names.astype(f"U{width}"),
            vectors=vectors,
            score=np.array(score_kind(version)),
        )
    return total
