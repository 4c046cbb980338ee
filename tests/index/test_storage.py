"""Each vector on disk once: flat dates as vector files (float32 or float16), approximate dates inside
their index; versions of the earlier two-copy format still served; bfloat16 export."""

from __future__ import annotations

import hashlib
import json
import shutil

import faiss
import numpy as np
import pytest
import torch

from index import ann
from index.embed import native_bf16, resolve_precision
from index.errors import NoDataOnDate
from index.query import IndexReader
from index.store import FORMAT, IndexStore, sha256_file
from tests.index.conftest import build


def opened(root, result):
    return IndexStore(root).open_version(result.version)


def top_ids(reader: IndexReader, date, k: int, *, search: bool) -> dict[str, list[str]]:
    """Every asset's top-k on `date` (not the newest: its table is widened at open); `search` asks for
    more than the stored table holds, which searches the index, and keeps the first k."""
    wide = 25 if search else k
    out = {}
    for ticker in reader.tickers:
        try:
            result = reader.similar(ticker, date, k=wide)
        except NoDataOnDate:
            continue
        out[ticker] = [n.ticker for n in result.neighbors][:k]
    return out


def recall(approx: dict, exact: dict, k: int = 10) -> float:
    hits = sum(len(set(approx[t][:k]) & set(exact[t][:k])) for t in exact)
    return hits / sum(len(exact[t][:k]) for t in exact)


def test_a_flat_date_stores_its_vectors_once(built):
    root, result = built
    version = opened(root, result)
    assert version.format == FORMAT == "fascl-index/2" and set(version.kinds) == {"flat"}
    for date in version.manifest["dates"]:
        assert set(version.date_files(date)) == {"ids", "vectors", "neighbors"}
    assert not any((root / result.version / "faiss").iterdir())
    per_vector = version.data_bytes / result.vectors
    # the vector (4 bytes a dimension), its id, its neighbor row (8 bytes a neighbor), npy headers
    k = version.manifest["index"]["neighbors"]
    assert 4 * result.dim + 4 + 8 * k <= per_vector < 4 * result.dim + 4 + 8 * k + 20


def test_the_index_built_at_load_answers_from_the_stored_vectors(built, reader):
    root, result = built
    date = reader.dates[-10]
    ids, vectors = reader.index_version.read_vectors(str(date), mmap=False)
    index = reader.index_version.read_index(str(date))
    assert index.ntotal == len(ids)
    assert np.array_equal(faiss.vector_to_array(index.id_map), ids)
    np.testing.assert_array_equal(index.reconstruct(int(ids[3])), vectors[3])
    query = reader.tickers[int(ids[0])]
    got = reader.similar(query, date, k=30)  # wider than the table: a search of the built index
    scores, rows = ann.exact_topk(vectors, ann.as_queries(vectors[:1], reader.index_version.query_prior), 31)
    expected = [reader.tickers[int(ids[r])] for r in rows[0] if ids[r] != ids[0]][:30]
    assert [n.ticker for n in got.neighbors] == expected


def test_approximate_dates_keep_their_vectors_inside_the_index(checkpoint, panel, tmp_path):
    flat = build(checkpoint, panel, tmp_path / "flat", precision="fp32")
    hnsw = build(checkpoint, panel, tmp_path / "hnsw", index_kind="hnsw", precision="fp32")
    a, b = opened(tmp_path / "flat", flat), opened(tmp_path / "hnsw", hnsw)
    assert not any((tmp_path / "hnsw" / hnsw.version / "vectors").iterdir())
    for date in a.manifest["dates"][::5]:
        assert set(b.date_files(date)) == {"ids", "index", "neighbors"}
        ids_a, va = a.read_vectors(date)
        ids_b, vb = b.read_vectors(date)  # reconstructed from the HNSW graph's storage
        assert np.array_equal(ids_a, ids_b) and vb.dtype == np.float32
        np.testing.assert_array_equal(va, vb)
    reader = IndexReader(hnsw.version, root=tmp_path / "hnsw")
    assert len(reader.similar(reader.tickers[0], k=30).neighbors) == 30


def test_float16_vectors_take_half_the_disk_and_keep_the_neighbors(checkpoint, panel, tmp_path):
    single = build(checkpoint, panel, tmp_path / "f32", precision="fp32")
    half = build(checkpoint, panel, tmp_path / "f16", precision="fp32", vector_dtype="float16")
    a, b = opened(tmp_path / "f32", single), opened(tmp_path / "f16", half)
    assert b.vector_dtype == "float16" and b.manifest["index"]["vector_dtype"] == "float16"
    date = a.manifest["dates"][-1]
    stored = np.load(tmp_path / "f16" / half.version / "vectors" / f"{date}.npy")
    assert stored.dtype == np.float16
    vectors_bytes = {
        v: sum(m["bytes"] for rel, m in v.files.items() if rel.startswith("vectors/")) for v in (a, b)
    }
    assert vectors_bytes[b] < 0.52 * vectors_bytes[a]
    ids, widened = b.read_vectors(date)
    assert widened.dtype == np.float32
    np.testing.assert_allclose(widened, a.read_vectors(date)[1], atol=1e-3)

    r32 = IndexReader(single.version, root=tmp_path / "f32")
    r16 = IndexReader(half.version, root=tmp_path / "f16")
    on = r16.dates[-2]
    looked_up, searched = top_ids(r16, on, 10, search=False), top_ids(r16, on, 10, search=True)
    assert looked_up == searched  # the tables come from the vectors as stored
    assert recall(searched, top_ids(r32, on, 10, search=True)) >= 0.97


def as_format_1(root, result, target_root):
    """A copy of a published version in the earlier layout: every flat date's vectors also inside a
    serialised faiss index, format fascl-index/1 (what versions published before this one hold)."""
    source = root / result.version
    target = target_root / result.version
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    version = IndexStore(target_root).open_version(result.version)
    for date in manifest["dates"]:
        ids, vectors = version.read_vectors(date)
        index = ann.build_index(np.ascontiguousarray(vectors), ids, "flat", use_gpu=False)
        rel = f"faiss/{date}.faiss"
        (target / rel).write_bytes(faiss.serialize_index(index).tobytes())
        manifest["files"][rel] = {"sha256": sha256_file(target / rel), "bytes": (target / rel).stat().st_size}
    manifest["format"] = "fascl-index/1"
    raw = json.dumps(manifest, indent=1).encode()
    (target / "manifest.json").write_bytes(raw)
    (target / "manifest.sha256").write_text(f"{hashlib.sha256(raw).hexdigest()}  manifest.json\n")


def test_versions_of_the_two_copy_format_are_served_and_reused(checkpoint, panel, built, reader, tmp_path):
    root, result = built
    old_root = tmp_path / "indexes"
    old_root.mkdir()
    as_format_1(root, result, old_root)
    old = IndexReader(result.version, root=old_root)
    assert old.index_version.format == "fascl-index/1"
    for date in (reader.dates[-2], reader.dates[5]):
        assert top_ids(old, date, 10, search=True) == top_ids(reader, date, 10, search=True)

    # a build reusing it embeds nothing and writes the new layout
    again = build(
        checkpoint,
        panel,
        old_root,
        start=str(reader.dates[0]),
        end=str(reader.dates[-1]),
        reuse=old.index_version,
        precision=old.index_version.manifest["build"]["precision"],
    )
    assert again.embedded_dates == 0 and again.reused_dates == again.n_dates
    new = opened(old_root, again)
    assert new.format == FORMAT and not any((old_root / again.version / "faiss").iterdir())
    date = new.manifest["dates"][-1]
    np.testing.assert_array_equal(new.read_vectors(date)[1], old.index_version.read_vectors(date)[1])


def test_precision_resolves_to_what_the_hardware_has():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="unknown precision 'fp16'; choose one of auto, fp32, bf16"):
        resolve_precision("fp16", cpu)


def test_bf16_export_is_recorded_and_keeps_the_neighbors(checkpoint, panel, tmp_path):
    fp32 = build(checkpoint, panel, tmp_path / "fp32", precision="fp32")
    bf16 = build(checkpoint, panel, tmp_path / "bf16", precision="bf16")
    a, b = opened(tmp_path / "fp32", fp32), opened(tmp_path / "bf16", bf16)
    assert a.manifest["build"]["precision"] == "fp32" and b.manifest["build"]["precision"] == "bf16"
    for date in a.manifest["dates"][::4]:
        np.testing.assert_allclose(b.read_vectors(date)[1], a.read_vectors(date)[1], atol=0.02)
    ra, rb = (
        IndexReader(fp32.version, root=tmp_path / "fp32"),
        IndexReader(bf16.version, root=tmp_path / "bf16"),
    )
    on = ra.dates[-2]
    assert recall(top_ids(rb, on, 10, search=False), top_ids(ra, on, 10, search=False)) >= 0.95
