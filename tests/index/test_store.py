"""The artifact store: atomic publish, checksums on load, resume after an interrupted build, retention."""

from __future__ import annotations

import json

import numpy as np
import pytest

from index import store as store_module
from index.errors import IndexCorruptError, VersionNotFound
from index.query import IndexReader
from index.store import IndexStore
from tests.index.conftest import build


class Interrupt(RuntimeError):
    pass


def stop_after(n: int):
    """A progress hook that interrupts the build once `n` dates are done (a crash, as far as the build knows)."""

    def hook(date: str, done: int) -> None:
        if done == n:
            raise Interrupt(date)

    return hook


def test_layout_and_manifest(built):
    root, result = built
    path = root / result.version
    assert result.version.startswith(result.model_version + "-")
    assert result.model_version == f"synthetic-tiny-{result.model_version.rsplit('-', 1)[1]}"
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["model"]["checkpoint_sha256"].startswith(result.model_version.rsplit("-", 1)[1])
    assert manifest["dim"] == result.dim and len(manifest["dates"]) == result.n_dates
    assert sum(manifest["counts"]) == result.vectors
    assert set(manifest["tickers"]) >= {"ticker", "name", "sector", "industry", "exchange", "first_date"}
    date = manifest["dates"][0]
    vectors = np.load(path / "vectors" / f"{date}.npy", mmap_mode="r")
    ids = np.load(path / "ids" / f"{date}.npy")
    assert vectors.dtype == np.float32 and ids.dtype == np.int32 and len(ids) == manifest["counts"][0]
    # the tiny model has a history path: vectors in the unit ball, scored by inner product
    assert manifest["model"]["unit_norm"] is False and manifest["model"]["history"] == 32
    norms = np.linalg.norm(vectors, axis=1)
    assert (norms <= 1 + 1e-6).all() and (norms > 0.5).all()
    assert (np.diff(ids) > 0).all()
    for rel, meta in manifest["files"].items():
        assert store_module.sha256_file(path / rel) == meta["sha256"]
    assert not (path / "progress.jsonl").exists() and not (path / "build.json").exists()
    assert [p.name for p in (root / ".staging").iterdir()] == []  # consumed by the publish


def test_corrupt_or_truncated_file_is_refused_previous_version_serves(checkpoint, panel, tmp_path):
    old = build(checkpoint, panel, tmp_path)
    new = build(checkpoint, panel, tmp_path)
    store = IndexStore(tmp_path)
    assert store.latest_version() == new.version
    newest = store.open_version(new.version).manifest["dates"][-1]
    target = tmp_path / new.version / "vectors" / f"{newest}.npy"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError) as err:
        IndexReader(new.version, root=tmp_path)
    assert str(target) in str(err.value) and "checksum mismatch" in str(err.value)
    assert err.value.expected.startswith("sha256 ")
    problems = store.verify(new.version)
    assert [p.path for p in problems] == [str(target)]

    target.write_bytes(bytes(data[:-100]))  # truncated
    with pytest.raises(IndexCorruptError, match="truncated") as err:
        IndexReader(new.version, root=tmp_path)
    assert err.value.expected == f"{len(data)} bytes" and err.value.actual == f"{len(data) - 100} bytes"

    previous = IndexReader(old.version, root=tmp_path)  # the previous version still serves
    assert previous.similar(previous.tickers[0], k=3).neighbors
    assert store.verify(old.version) == []


def test_corrupt_manifest_is_refused(checkpoint, panel, tmp_path):
    result = build(checkpoint, panel, tmp_path)
    manifest = tmp_path / result.version / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"dim": ', '"dim": 1'))
    with pytest.raises(IndexCorruptError, match="manifest.json is corrupt: checksum mismatch"):
        IndexStore(tmp_path).open_version(result.version)
    assert not IndexStore(tmp_path).list_versions()[0].readable
    assert IndexStore(tmp_path).latest_version() is None
    with pytest.raises(VersionNotFound):
        IndexStore(tmp_path).open_version("no-such-version")


def test_large_versions_verify_lazily_per_date(checkpoint, panel, tmp_path, monkeypatch):
    result = build(checkpoint, panel, tmp_path)
    store = IndexStore(tmp_path)
    first = store.open_version(result.version).manifest["dates"][0]
    target = tmp_path / result.version / "vectors" / f"{first}.npy"
    target.write_bytes(target.read_bytes()[:-8])
    monkeypatch.setattr(store_module, "EAGER_VERIFY_BYTES", 0)
    reader = IndexReader(result.version, root=tmp_path)  # opens: only the newest date is checked
    assert reader.similar(reader.tickers[0], k=2).neighbors
    with pytest.raises(IndexCorruptError, match="truncated"):
        reader.similar(reader.tickers[0], first, k=2)
    assert len(store.verify(result.version)) == 1  # verify() checks everything
    monkeypatch.setattr(store_module, "EAGER_VERIFY_BYTES", 2**40)
    with pytest.raises(IndexCorruptError):
        IndexReader(result.version, root=tmp_path)  # small versions are checked in full at open


def test_interrupted_build_is_invisible_and_resumes(checkpoint, panel, tmp_path):
    with pytest.raises(Interrupt):
        build(checkpoint, panel, tmp_path, on_date=stop_after(5))
    store = IndexStore(tmp_path)
    assert store.list_versions() == [] and store.latest_version() is None
    assert [p.name for p in tmp_path.iterdir()] == [".staging"]

    resumed = build(checkpoint, panel, tmp_path)
    assert resumed.resumed_dates == 5 and resumed.embedded_dates == resumed.n_dates - 5
    fresh = build(checkpoint, panel, tmp_path / "fresh")
    assert resumed.n_dates == fresh.n_dates and resumed.vectors == fresh.vectors
    a = IndexStore(tmp_path).open_version(resumed.version)
    b = IndexStore(tmp_path / "fresh").open_version(fresh.version)
    for date in (a.manifest["dates"][0], a.manifest["dates"][4], a.manifest["dates"][-1]):
        ids_a, v_a = a.read_vectors(date)
        ids_b, v_b = b.read_vectors(date)
        np.testing.assert_array_equal(ids_a, ids_b)
        np.testing.assert_allclose(v_a, v_b, atol=1e-6)
    assert IndexStore(tmp_path).verify(resumed.version) == []


def test_a_torn_progress_line_is_redone(checkpoint, panel, tmp_path):
    with pytest.raises(Interrupt):
        build(checkpoint, panel, tmp_path, on_date=stop_after(3))
    staging = next((tmp_path / ".staging").iterdir())
    progress = staging / "progress.jsonl"
    lines = progress.read_text().splitlines()
    progress.write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])  # crash mid-line
    resumed = build(checkpoint, panel, tmp_path)
    assert resumed.resumed_dates == 2
    assert IndexStore(tmp_path).verify(resumed.version) == []


def test_retention_keeps_newest_and_every_protected_version(checkpoint, panel, tmp_path):
    names = [build(checkpoint, panel, tmp_path, keep=2, start="2012-05-20").version for _ in range(4)]
    store = IndexStore(tmp_path, keep=2)
    assert [v.version for v in store.list_versions()] == names  # publishing never prunes
    assert store.prune(protect={names[0]}) == [names[1]]  # the oldest is served: it stays
    assert [v.version for v in store.list_versions()] == [names[0], *names[2:]]
    assert store.latest_version() == names[-1]
    assert store.prune(1) == [names[0], names[2]]
    assert [v.version for v in store.list_versions()] == names[3:]
    assert not any(p.name.startswith(".trash") for p in tmp_path.iterdir())


def test_leftovers_of_interrupted_jobs_are_removed_once_old_unless_a_build_holds_them(tmp_path):
    store = IndexStore(tmp_path)
    held = store.staging("m-held", {"a": 1})  # a live build
    store.staging("m-abandoned", {"a": 2}).close()  # a build that died
    (tmp_path / ".trash-m-0").mkdir()  # a prune that died mid-delete
    (tmp_path / ".trash-m-0" / "f").write_bytes(b"x")
    assert store.remove_leftovers(3600) == []  # young: a rerun may still resume from it
    assert sorted(store.remove_leftovers(0)) == [".staging/m-abandoned", ".trash-m-0"]
    assert sorted(p.name for p in (tmp_path / ".staging").iterdir()) == ["m-held"]
    assert not any(p.name.startswith(".trash") for p in tmp_path.iterdir())
    held.close()
    assert store.remove_leftovers(0) == [".staging/m-held"]


def test_range_without_windows_is_refused(checkpoint, panel, tmp_path):
    with pytest.raises(ValueError, match="days of history"):
        build(checkpoint, panel, tmp_path, start="2010-01-01", end="2010-02-01")


def test_one_build_at_a_time_per_staging_directory(tmp_path):
    from index.errors import IndexStoreError

    store = IndexStore(tmp_path)
    first = store.staging("m-1", {"a": 1})
    with pytest.raises(IndexStoreError, match="another build is writing"):
        store.staging("m-1", {"a": 1})
    first.close()
    again = store.staging("m-1", {"a": 1})  # free once the first build lets go
    again.close()
