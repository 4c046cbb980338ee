"""Research export: the (date, ticker, vector) rows of .npz and Parquet equal the index's vectors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from index.research import export_vectors


def expected_rows(reader, dates):
    rows = []
    for date in dates:
        _, ids, vectors = reader.vectors(date)
        for aid, vector in zip(ids, vectors, strict=True):
            rows.append((date.isoformat(), reader.tickers[aid], np.asarray(vector)))
    return rows


def test_npz_matches_index(reader, tmp_path):
    dates = reader.dates[10:14]
    out = export_vectors(reader.index_version, tmp_path / "v.npz", start=dates[0], end=dates[-1])
    want = expected_rows(reader, dates)
    assert out.rows == len(want) and out.dates == 4 and out.format == "npz"
    with np.load(out.path) as data:
        assert set(data.files) == {"row_date", "tickers", "vectors", "score"}
        assert str(data["score"]) == "inner_product_prior"  # the tiny model has a history path and a prior
        assert data["vectors"].dtype == np.float32 and data["vectors"].shape == (len(want), reader.dim)
        assert data["row_date"].tolist() == [r[0] for r in want]
        assert data["tickers"].tolist() == [r[1] for r in want]
        np.testing.assert_array_equal(data["vectors"], np.stack([r[2] for r in want]))
        # the exported vectors are the ones the index searches
        row = 7
        aid = reader.tickers.index(str(data["tickers"][row]))
        entry = reader._entry(reader.dates.index(dates[0]))
        np.testing.assert_array_equal(entry.index.reconstruct(aid), data["vectors"][row])


def test_parquet_matches_index(reader, tmp_path):
    out = export_vectors(reader.index_version, tmp_path / "v.parquet", start="2012-05-20")
    dates = [d for d in reader.dates if d.isoformat() >= "2012-05-20"]
    want = expected_rows(reader, dates)
    frame = pd.read_parquet(out.path)
    metadata = pq.read_schema(out.path).metadata
    assert metadata[b"fascl.score"] == b"inner_product_prior"
    assert metadata[b"fascl.version"] == reader.index_version.version.encode()
    assert list(frame.columns) == ["date", "ticker", "vector"] and len(frame) == out.rows == len(want)
    assert [d.isoformat() for d in frame["date"]] == [r[0] for r in want]
    assert frame["ticker"].tolist() == [r[1] for r in want]
    np.testing.assert_array_equal(np.stack(frame["vector"].to_numpy()), np.stack([r[2] for r in want]))


def test_export_refuses_bad_requests(reader, tmp_path):
    with pytest.raises(ValueError, match="unknown export format"):
        export_vectors(reader.index_version, tmp_path / "v.csv")
    with pytest.raises(ValueError, match="no indexed date"):
        export_vectors(reader.index_version, tmp_path / "v.npz", start="2020-01-01")
    assert not list(tmp_path.iterdir())
