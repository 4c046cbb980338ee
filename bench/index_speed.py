"""Index speed: query latency (library vs raw faiss), all-pairs top-20, HNSW/IVF recall, a real export.

    .venv/bin/python bench/index_speed.py [--model PATH] [--n 5000] [--ann-n 200000]
    .venv/bin/python bench/index_speed.py --data us_nasdaq --model /tmp/fh/models/us_nasdaq-small/best.pt
    .venv/bin/python bench/index_speed.py --ann-version VERSION --home DIR   # recall on real embeddings

1. Single-query latency at N assets x d dims (d from --model, else 504 = the small encoder's history
   path): `IndexReader.similar` against the raw `index.search` of the same vector, timed
   alternately in one loop so both see the same machine load. Target: library p50 < 100 us.
2. One date's all-pairs top-20 (all N vectors searched at once). Target: < 0.5 s.
3. HNSW and IVF against exact search at --ann-n vectors: build time, single-query latency, recall@10.
   Target (this project's): recall@10 >= 0.95. The synthetic mixture is an easy case (well separated
   clusters); `--ann-version V` takes real embeddings from a published version instead (dates spread
   over its history for the base, held-out dates in between for the queries).
4. With --data and --model: export + index + publish the panel's history, whole or --from/--to (time,
   disk size and bytes per vector), then the single-query latency on that real index.

Vectors for 1-3 are synthetic but clustered like embeddings (a random mixture of unit directions).
Threads: faiss uses --threads (default FASCL_OMP_THREADS, 1 per service worker) for queries; builds
use all cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from rich.console import Console
from rich.table import Table

from index import ann
from index.build import publish_arrays
from index.query import IndexReader
from index.store import IndexStore

console = Console()
SMALL_DIM = 504  # the small encoder: its history path embeds 504 days of returns
TARGET_P50_US = 100.0
TARGET_ALL_PAIRS_S = 0.5
TARGET_RECALL = 0.95


def verdict(ok: bool) -> str:
    return "[green]PASS[/]" if ok else "[red]FAIL[/]"


def clustered(n: int, d: int, seed: int = 0, clusters: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters or max(16, n // 250), d)).astype(np.float32)
    x = centers[rng.integers(len(centers), size=n)] + 0.8 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def pct(samples_ns: list[int], q: float) -> float:
    return float(np.percentile(np.asarray(samples_ns) / 1e3, q))


def dim_of(model: str | None) -> int:
    if not model:
        return SMALL_DIM
    from index.embed import load_model

    return load_model(model, "cpu")[1].dim


def synthetic_version(root: Path, n: int, d: int, dates: int = 3):
    rng = np.random.default_rng(1)
    sectors = [f"Sector {i}" for i in range(11)]
    tickers = {
        "ticker": [f"T{i:05d}" for i in range(n)],
        "name": [f"Company {i}" for i in range(n)],
        "sector": [sectors[i] for i in rng.integers(len(sectors), size=n)],
        "industry": [""] * n,
        "exchange": [("NYSE", "NASDAQ")[i] for i in rng.integers(2, size=n)],
        "first_date": ["2024-01-02"] * n,
        "last_date": ["2024-01-04"] * n,
        "n_dates": [dates] * n,
    }
    arrays = {
        f"2024-01-0{2 + t}": (np.arange(n, dtype=np.int32), clustered(n, d, seed=t)) for t in range(dates)
    }
    return publish_arrays(IndexStore(root, keep=5), arrays, tickers, model={"version": "bench-synthetic"})


def latency(reader: IndexReader, queries: int, seed: int = 0, **filters) -> dict:
    """Library and raw faiss latency, alternating per query; the raw call searches the same vector."""
    entry = reader._entry(len(reader.dates) - 1)
    index = entry.index
    ids = faiss.vector_to_array(index.id_map)
    rng = np.random.default_rng(seed)
    picks = ids[rng.integers(len(ids), size=queries + 200)]
    tickers = reader.tickers
    vectors = {int(a): index.reconstruct(int(a)).reshape(1, -1) for a in set(picks.tolist())}
    lib, raw = [], []
    clock = time.perf_counter_ns
    for i, aid in enumerate(picks.tolist()):
        ticker, q = tickers[aid], vectors[aid]
        t0 = clock()
        reader.similar(ticker, k=10, **filters)
        t1 = clock()
        index.search(q, 11)
        t2 = clock()
        if i >= 200:  # warm-up
            lib.append(t1 - t0)
            raw.append(t2 - t1)
    return {
        "lib_p50": pct(lib, 50),
        "lib_p99": pct(lib, 99),
        "raw_p50": pct(raw, 50),
        "raw_p99": pct(raw, 99),
    }


def bench_queries(n: int, d: int, queries: int, threads: int) -> list[tuple[str, bool]]:
    checks = []
    with tempfile.TemporaryDirectory() as tmp:
        version = synthetic_version(Path(tmp), n, d)
        t0 = time.perf_counter()
        reader = IndexReader(version.version, root=tmp, omp_threads=threads)
        open_s = time.perf_counter() - t0
        searching = IndexReader(version.version, root=tmp, omp_threads=threads, hot_neighbors=0)
        plain = latency(reader, queries)
        searched = latency(searching, queries)
        sector = latency(reader, queries // 2, sector="Sector 3")
        reader.similar(reader.tickers[0], reader.dates[0])  # load a historical date into the LRU
        history_ns = []
        for t in reader.tickers[: queries // 2]:
            t0 = time.perf_counter_ns()
            reader.similar(t, reader.dates[0], k=10)
            history_ns.append(time.perf_counter_ns() - t0)

        table = Table(title=f"single-query latency, N={n:,} d={d}, k=10, faiss threads={threads} (us)")
        for column in ("query", "library p50", "library p99", "raw faiss p50", "raw faiss p99", "ratio p50"):
            table.add_column(column, justify="right")
        rows = (
            ("similar(ticker), newest date (precomputed top-50)", plain),
            ("similar(ticker), newest date, searched (hot_neighbors=0)", searched),
            ("similar(ticker, sector=...)", sector),
        )
        for name, r in rows:
            table.add_row(
                name,
                f"{r['lib_p50']:.1f}",
                f"{r['lib_p99']:.1f}",
                f"{r['raw_p50']:.1f}",
                f"{r['raw_p99']:.1f}",
                f"{r['lib_p50'] / r['raw_p50']:.2f}x",
            )
        table.add_row(
            "similar(ticker, historical date)", f"{pct(history_ns, 50):.1f}", f"{pct(history_ns, 99):.1f}"
        )
        console.print(table)
        console.print(f"IndexReader open (newest date loaded + its all-pairs top-50): {open_s:.2f} s")
        for label, r in (
            ("library single-query p50", plain),
            ("library single-query p50, searched", searched),
        ):
            ok = r["lib_p50"] < TARGET_P50_US
            checks.append((f"{label} {r['lib_p50']:.1f} us < {TARGET_P50_US:.0f} us", ok))
        checks.append(
            (
                f"(baseline) raw faiss p50 {searched['raw_p50']:.1f} us < {TARGET_P50_US:.0f} us",
                searched["raw_p50"] < TARGET_P50_US,
            )
        )

        entry = reader._entry(len(reader.dates) - 1)
        x = np.ascontiguousarray(version.read_vectors(str(reader.dates[-1]))[1])
        runs_lib, runs_raw = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            reader.all_pairs(k=20)
            runs_lib.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            entry.index.search(x, 21)
            runs_raw.append(time.perf_counter() - t0)
        best = min(runs_lib)
        console.print(
            f"all-pairs top-20 on one date (N={n:,}, one search of all vectors, {threads} thread(s)): "
            f"library {best:.3f} s, raw faiss {min(runs_raw):.3f} s"
        )
        checks.append((f"all-pairs top-20 {best:.3f} s < {TARGET_ALL_PAIRS_S} s", best < TARGET_ALL_PAIRS_S))
        reader.close()
        searching.close()
    return checks


def real_vectors(version, n: int, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` stored embeddings from dates spread over the version's history (a wide universe made of real
    vectors), and `n_queries` from other dates between them (held out, as a new query would be)."""
    dates = version.manifest["dates"]
    step = max(2, int(len(dates) * float(np.mean(version.counts)) // (n * 1.05)))
    base, held = [], []
    for i in range(0, len(dates), step):
        base.append(np.asarray(version.read_vectors(dates[i])[1]))
        if i + step // 2 < len(dates):
            held.append(np.asarray(version.read_vectors(dates[i + step // 2])[1]))
        if sum(len(b) for b in base) >= n:
            break
    base_x = np.concatenate(base)[:n]
    held_x = np.concatenate(held)
    pick = np.random.default_rng(0).choice(len(held_x), min(n_queries, len(held_x)), replace=False)
    return np.ascontiguousarray(base_x), np.ascontiguousarray(held_x[pick])


def bench_ann(n: int, d: int, threads: int, n_queries: int = 1000, source=None) -> list[tuple[str, bool]]:
    checks = []
    if source is None:
        x = clustered(n + n_queries, d, seed=7)
        base, queries = x[:n], x[n:]
        origin = "synthetic clustered vectors"
    else:
        base, queries = real_vectors(source, n, n_queries)
        n, d = base.shape
        origin = f"real embeddings of {source.version}"
    ids = np.arange(n, dtype=np.int64)
    cores = os.cpu_count() or 1
    table = Table(
        title=f"approximate indexes vs exact at {n:,} vectors, d={d}, {origin} (queries: {threads} thread)"
    )
    for column in ("kind", "build s", "query p50 us", "query p99 us", "recall@10", "params"):
        table.add_column(column, justify="right")
    exact_labels = None
    for kind in ("flat", "hnsw", "ivf"):
        faiss.omp_set_num_threads(cores)
        params = ann.AnnParams()
        t0 = time.perf_counter()
        index = ann.build_index(base, ids, kind, params=params)
        build_s = time.perf_counter() - t0
        if kind == "flat":
            exact_labels = index.search(queries, 10)[1]
        faiss.omp_set_num_threads(threads)
        search = ann.search_params(kind, index)
        lat = []
        for q in queries[:300]:
            t0 = time.perf_counter_ns()
            index.search(q.reshape(1, -1), 10, params=search)
            lat.append(time.perf_counter_ns() - t0)
        labels = index.search(queries, 10, params=search)[1]
        recall = ann.recall_at_k(labels, exact_labels, 10)
        if kind == "hnsw":
            detail = f"M={params.hnsw_m} efC={params.hnsw_ef_construction} efS={params.hnsw_ef_search}"
        elif kind == "ivf":
            nlist = params.nlist(n)
            detail = f"nlist={nlist} nprobe={params.nprobe(nlist)}"
        else:
            detail = "exact"
        table.add_row(
            kind, f"{build_s:.1f}", f"{pct(lat, 50):.0f}", f"{pct(lat, 99):.0f}", f"{recall:.4f}", detail
        )
        if kind != "flat":
            checks.append((f"{kind} recall@10 {recall:.4f} >= {TARGET_RECALL}", recall >= TARGET_RECALL))
        del index
    console.print(table)
    return checks


def bench_export(
    data: str, model: str, home: Path, threads: int, queries: int, start: str | None, end: str | None
) -> None:
    from fascl.cli.panels import resolve_panel_path
    from index.build import build_version
    from market.panel import Panel

    path = resolve_panel_path(data)
    t0 = time.perf_counter()
    panel = Panel.load(path)
    load_s = time.perf_counter() - t0
    store = IndexStore(home / "indexes")
    result = build_version(
        model, panel, start=start, end=end, store=store, data_source=str(path), console=console
    )
    span = "whole history" if start is None and end is None else f"{start or 'start'} to {end or 'end'}"
    table = Table(title=f"export + index + publish of {path} ({span})", show_header=False)
    table.add_row("panel", f"{panel.n_assets:,} assets x {panel.n_dates:,} dates (load {load_s:.1f} s)")
    table.add_row("version", result.version)
    table.add_row("dates", f"{result.first_date} to {result.last_date} ({result.n_dates:,})")
    table.add_row("vectors", f"{result.vectors:,} x {result.dim}")
    table.add_row("embedded / resumed dates", f"{result.embedded_dates:,} / {result.resumed_dates:,}")
    table.add_row(
        "seconds", f"{result.seconds:,.1f} ({result.vectors / max(result.seconds, 1e-9):,.0f} vectors/s)"
    )
    table.add_row("disk size", f"{result.disk_bytes / 2**30:.2f} GiB")
    table.add_row(
        "disk per vector",
        f"{result.disk_bytes / max(result.vectors, 1):,.0f} bytes ({4 * result.dim:,} of them the float32 vector)",
    )
    table.add_row("device", result.device)
    console.print(table)
    reader = IndexReader(result.version, store=store, omp_threads=threads)
    r = latency(reader, queries)
    console.print(
        f"real index, newest date ({int(reader.index_version.counts[-1]):,} assets): library p50 "
        f"{r['lib_p50']:.1f} us / p99 {r['lib_p99']:.1f} us, raw faiss p50 {r['raw_p50']:.1f} us"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="Checkpoint (sets d; needed with --data)")
    parser.add_argument("--from", dest="start", help="With --data: first date to index (default: the first)")
    parser.add_argument("--to", dest="end", help="With --data: last date to index (default: the last)")
    parser.add_argument("--data", help="Panel name or directory to export and index in full")
    parser.add_argument("--home", type=Path, help="FASCL_HOME for --data (default: settings)")
    parser.add_argument("--n", type=int, default=5_000, help="Assets a date for the latency runs")
    parser.add_argument("--queries", type=int, default=3_000)
    parser.add_argument(
        "--ann-n", type=int, default=200_000, help="Vectors for the HNSW/IVF recall run (0: skip)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="faiss threads for queries (default: settings)"
    )
    parser.add_argument("--ann-version", help="Take the HNSW/IVF vectors from this version (under --home)")
    args = parser.parse_args()
    if args.threads is None:
        from fascl.settings import get_settings

        args.threads = get_settings().omp_threads
    threads = ann.set_threads(args.threads)
    d = dim_of(args.model)
    console.print(
        f"faiss {faiss.__version__}, GPUs seen by faiss: {ann.gpu_count()}, cores: {os.cpu_count()}"
    )
    checks = bench_queries(args.n, d, args.queries, threads)
    if args.ann_n:
        source = None
        if args.ann_version:
            from fascl.settings import get_settings

            home = args.home or get_settings().home
            source = IndexStore(home / "indexes").open_version(args.ann_version, verify="lazy")
        checks += bench_ann(args.ann_n, d, threads, source=source)
    if args.data:
        if not args.model:
            parser.error("--data needs --model")
        from fascl.settings import get_settings

        bench_export(
            args.data,
            args.model,
            args.home or get_settings().home,
            threads,
            args.queries,
            args.start,
            args.end,
        )
    for text, ok in checks:
        console.print(f"{verdict(ok)} {text}")


if __name__ == "__main__":
    main()
