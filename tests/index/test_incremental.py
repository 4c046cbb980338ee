"""Incremental builds: dates whose input is unchanged are taken from an earlier version, not embedded again."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np

from index import ann
from index.build import reusable_dates
from index.query import IndexReader
from index.store import IndexStore
from market.panel import FIELDS, Panel
from tests.index.conftest import SHORT, build

CLOSE = FIELDS.index("close")


def opened(root, result):
    return IndexStore(root).open_version(result.version, verify="all")


def same_inode(a, b) -> bool:
    return os.stat(a).st_ino == os.stat(b).st_ino


def test_new_bars_embed_only_the_new_dates_and_copy_the_rest(checkpoint, panel, tmp_path):
    root = tmp_path / "indexes"
    yesterday = panel.slice_dates(end="2012-05-24")
    first = build(checkpoint, yesterday, root)
    second = build(checkpoint, panel, root, reuse=opened(root, first))
    assert second.reused_dates == first.n_dates
    assert second.embedded_dates == second.n_dates - first.n_dates > 0
    new, old = opened(root, second), opened(root, first)  # verify="all": copied files check out
    assert new.manifest["build"]["reused_from"] == first.version
    for date in old.manifest["dates"]:
        for rel in old.date_files(date).values():
            assert not same_inode(old.path / rel, new.path / rel), rel
            assert (old.path / rel).read_bytes() == (new.path / rel).read_bytes(), rel

    # The result is the version a full build would have made.
    fresh = build(checkpoint, panel, tmp_path / "fresh")
    full = opened(tmp_path / "fresh", fresh)
    assert new.manifest["dates"] == full.manifest["dates"]
    assert new.manifest["tickers"] == full.manifest["tickers"]
    assert new.manifest["windows"] == full.manifest["windows"]
    for date in full.manifest["dates"]:
        ids, vectors = new.read_vectors(date)
        full_ids, full_vectors = full.read_vectors(date)
        np.testing.assert_array_equal(ids, full_ids)
        np.testing.assert_allclose(vectors, full_vectors, atol=1e-5)


def test_a_corrected_bar_re_embeds_exactly_the_dates_whose_windows_hold_it(checkpoint, panel, tmp_path):
    root = tmp_path / "indexes"
    first = build(checkpoint, panel, root)
    dates = first_dates = opened(root, first).manifest["dates"]
    corrected_on = np.datetime64(dates[5])
    values = panel.values.copy()
    values[CLOSE, int(np.searchsorted(panel.dates, corrected_on)), 3] *= 1.1  # a bad tick fixed later
    corrected = Panel(panel.dates, panel.tickers, values, panel.assets)

    second = build(checkpoint, corrected, root, reuse=opened(root, first))
    # The windows ending on the corrected day and the 63 after it hold the bar: here the rest of the range.
    assert second.reused_dates == 5 and second.embedded_dates == len(first_dates) - 5
    new, old = opened(root, second), opened(root, first)
    changed = [
        d
        for d in dates
        if (old.path / f"vectors/{d}.npy").read_bytes() != (new.path / f"vectors/{d}.npy").read_bytes()
    ]
    assert changed == dates[5:]

    # A correction older than every window of the range touches nothing.
    values = panel.values.copy()
    values[CLOSE, int(np.searchsorted(panel.dates, corrected_on)) - 100, 3] *= 1.1
    third = build(checkpoint, Panel(panel.dates, panel.tickers, values, panel.assets), root, reuse=old)
    assert third.reused_dates == len(dates) and third.embedded_dates == 0


def test_a_dropped_ticker_renumbers_reused_dates_without_embedding(checkpoint, panel, tmp_path):
    """When the range moves past an asset, ids after it shift: reused dates get the new ids, same vectors."""
    gone = 2
    values = panel.values.copy()
    values[:, int(np.searchsorted(panel.dates, np.datetime64(SHORT[0]))) + 3 :, gone] = np.nan
    thinned = Panel(panel.dates, panel.tickers, values, panel.assets)
    root = tmp_path / "indexes"
    first = build(checkpoint, thinned, root)
    old = opened(root, first)
    start = old.manifest["dates"][8]
    second = build(checkpoint, thinned, root, start=start, reuse=old)
    new = opened(root, second)
    assert panel.tickers[gone] in old.manifest["tickers"]["ticker"]
    assert panel.tickers[gone] not in new.manifest["tickers"]["ticker"]
    assert second.reused_dates == second.n_dates and second.embedded_dates == 0

    old_reader = IndexReader(first.version, root=root, cache_bytes=2**26, omp_threads=1)
    new_reader = IndexReader(second.version, root=root, cache_bytes=2**26, omp_threads=1)
    for date in (start, new.manifest["dates"][-1]):
        for ticker in panel.tickers[[0, 10, 30]]:
            a, b = old_reader.similar(ticker, date, 10), new_reader.similar(ticker, date, 10)
            assert [n.ticker for n in a.neighbors] == [n.ticker for n in b.neighbors]
            np.testing.assert_allclose(
                [n.score for n in a.neighbors], [n.score for n in b.neighbors], atol=1e-6
            )


def test_a_corrupt_file_in_the_earlier_version_is_embedded_again(checkpoint, panel, tmp_path):
    root = tmp_path / "indexes"
    first = build(checkpoint, panel, root)
    old = opened(root, first)
    victim = old.manifest["dates"][3]
    file = old.path / f"vectors/{victim}.npy"
    data = bytearray(file.read_bytes())
    data[-8:] = b"\xff" * 8
    file.write_bytes(bytes(data))

    second = build(checkpoint, panel, root, reuse=IndexStore(root).open_version(first.version, verify="lazy"))
    assert second.embedded_dates == 1 and second.reused_dates == first.n_dates - 1
    opened(root, second)  # every file of the new version checks out


def test_damage_to_a_reused_file_stays_in_the_version_it_happened_in(checkpoint, panel, tmp_path):
    """A reused date is a copy: bytes damaged in place in one version leave the other intact, so
    rolling back to it helps."""
    root = tmp_path / "indexes"
    first = build(checkpoint, panel.slice_dates(end="2012-05-24"), root)
    second = build(checkpoint, panel, root, reuse=opened(root, first))
    assert second.reused_dates == first.n_dates
    victim = opened(root, first).manifest["dates"][2]
    for rel in (f"ids/{victim}.npy", f"vectors/{victim}.npy"):
        with open(root / second.version / rel, "r+b") as fh:  # in place: the same inode
            fh.seek(-8, os.SEEK_END)
            fh.write(b"\xff" * 8)
    damaged = IndexStore(root).open_version(second.version, verify="lazy").problems()
    assert sorted(e.problem for e in damaged) == ["checksum mismatch"] * 2
    assert IndexStore(root).open_version(first.version, verify="lazy").problems() == []


def test_other_build_settings_reuse_nothing(checkpoint, panel, tmp_path):
    root = tmp_path / "indexes"
    first = build(checkpoint, panel, root)
    old = opened(root, first)
    flat = build(checkpoint, panel, root, index_kind="flat", reuse=old)
    assert flat.reused_dates == 0 and flat.embedded_dates == flat.n_dates
    digests = dict(zip(old.manifest["dates"], old.manifest["windows"], strict=True))
    info = SimpleNamespace(sha256=old.manifest["model"]["checkpoint_sha256"])
    precision = old.manifest["build"]["precision"]
    same = {"precision": precision, "vector_dtype": "float32"}
    assert reusable_dates(old, info, "auto", ann.AnnParams(), digests, **same) == old.manifest["dates"]
    assert (
        reusable_dates(old, SimpleNamespace(sha256="0" * 64), "auto", ann.AnnParams(), digests, **same) == []
    )
    # vectors stored in another dtype, or computed at another precision, are other numbers
    assert (
        reusable_dates(
            old, info, "auto", ann.AnnParams(), digests, precision=precision, vector_dtype="float16"
        )
        == []
    )
    other = "fp32" if precision == "bf16" else "bf16"
    assert (
        reusable_dates(old, info, "auto", ann.AnnParams(), digests, precision=other, vector_dtype="float32")
        == []
    )
