"""`build_version`: export embeddings for a date range, index each date, publish a version.

The build is resumable: each finished date is durable in the staging directory
(indexes/.staging/<model version>-<spec hash>/) before the next begins, and a rerun with the same
checkpoint, data, range and index kind embeds only the dates not yet done. Nothing is visible under
indexes/ until every date is done and the version is renamed into place (index/store.py).

The build is incremental: given an earlier version (`reuse`) built by the same checkpoint with the
same index settings, a date whose input is unchanged -- the same eligible tickers with the same
window bars, compared by `window_digest` -- takes that version's files as they are instead of being
embedded again. A nightly reindex therefore embeds only the new dates, while a correction to past
bars (a split found later, say) re-embeds exactly the dates whose windows it touches.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from index import ann
from index.embed import iter_embeddings, load_model, resolve_precision, spec_key
from index.errors import IndexCorruptError, IndexStoreError
from index.shards import current_shard, shard_device
from index.store import FORMAT, VECTOR_DTYPES, IndexStore, IndexVersion, finished_dates, utcnow_iso
from market.panel import Panel
from model.features import build_cube
from model.history import history_window

# Each date's top-NEIGHBORS table is stored beside its index: a query for k <= NEIGHBORS on any
# date is then a row lookup rather than a search (about 5 us against 100-250 us at 5,000 assets),
# for 8 bytes per neighbor (about a fifth of the vectors' size at 192 dimensions and K = 20).
NEIGHBORS = 20

# Finished dates are made durable (fsynced and recorded in the staging progress file) at least this
# often: an interrupted build loses at most this much work, and fsyncs are batched.
COMMIT_SECONDS = 5.0


@dataclass
class BuildResult:
    version: str
    path: Path
    model_version: str
    first_date: str
    last_date: str
    n_dates: int
    vectors: int
    dim: int
    embedded_dates: int  # by this run
    resumed_dates: int  # found done in the staging directory
    reused_dates: int  # taken over from the `reuse` version
    seconds: float
    disk_bytes: int
    device: str
    kinds: list[str]
    # seconds by stage: prepare (model, features, digests, reuse), embed (inputs and forward
    # passes), index (neighbor tables, approximate indexes, file writes), commit (fsyncs), publish
    stages: dict[str, float] = field(default_factory=dict)


def _day(value) -> np.datetime64 | None:
    return None if value is None else np.datetime64(pd.Timestamp(value).date(), "D")


def date_positions(dates: np.ndarray, eligible: np.ndarray, start=None, end=None) -> np.ndarray:
    """Positions of the dates in [start, end] that have at least one complete window."""
    lo = 0 if start is None else int(np.searchsorted(dates, _day(start)))
    hi = len(dates) if end is None else int(np.searchsorted(dates, _day(end), side="right"))
    pos = np.arange(lo, hi)
    return pos[eligible[lo:hi].any(axis=1)]


def ticker_table(
    panel: Panel, eligible: np.ndarray, positions: np.ndarray, prior: list[str] | None = None
) -> tuple[dict, np.ndarray]:
    """The version's ticker table (assets with a vector on some date of the build) and the map
    panel column -> asset id (-1 for assets never indexed).

    With `prior` (an earlier version's tickers), its tickers keep their order and new ones follow,
    so asset ids stay those of the earlier version and its files can be reused unchanged."""
    sub = eligible[positions]
    cols = np.flatnonzero(sub.any(axis=0))
    if prior:
        rank = {t: i for i, t in enumerate(prior)}
        tickers = panel.tickers
        cols = np.array(sorted(cols, key=lambda c: (rank.get(tickers[c], len(rank)), c)), dtype=np.int64)
    asset_of_col = np.full(panel.n_assets, -1, dtype=np.int64)
    asset_of_col[cols] = np.arange(len(cols))
    covered = sub[:, cols]
    first = positions[covered.argmax(axis=0)]
    last = positions[len(positions) - 1 - covered[::-1].argmax(axis=0)]
    meta = panel.assets.iloc[cols]
    table = {
        name: [str(v) for v in meta[name]] for name in ("ticker", "name", "sector", "industry", "exchange")
    }
    table["first_date"] = [str(d) for d in panel.dates[first]]
    table["last_date"] = [str(d) for d in panel.dates[last]]
    table["n_dates"] = [int(n) for n in covered.sum(axis=0)]
    return table, asset_of_col


def window_digest(cube, pos: int, cols: np.ndarray) -> str:
    """sha256 of what a date's vectors are computed from: the eligible tickers, their window bars and,
    for an encoder with a history path, their long-history returns (the market direction is computed
    from those of the same eligible assets, so it is covered too)."""
    digest = hashlib.sha256("\x1f".join(cube.tickers[cols]).encode())
    window = cube.series[:, pos - cube.window + 1 : pos + 1, torch.from_numpy(cols)]
    digest.update(window.contiguous().numpy().tobytes())
    if cube.history:
        digest.update(np.ascontiguousarray(history_window(cube.returns, pos, cols, cube.history)).tobytes())
    return digest.hexdigest()


def reusable_dates(
    reuse,
    info,
    index_kind: str,
    params: ann.AnnParams,
    digests: dict[str, str],
    neighbors: int = NEIGHBORS,
    *,
    vector_dtype: str = "float32",
    precision: str = "fp32",
) -> list[str]:
    """Dates of `reuse` (an IndexVersion) whose vectors this build can take over unchanged: the same
    checkpoint, run at the same precision, stored in the same dtype, indexed the same way."""
    if reuse is None:
        return []
    m = reuse.manifest
    same_build = (
        m["model"].get("checkpoint_sha256") == info.sha256
        and m["index"].get("requested_kind") == index_kind
        and m["index"].get("params") == params.to_dict()
        and m["index"].get("neighbors", 0) == neighbors
        and m["index"].get("vector_dtype", "float32") == vector_dtype
        and m.get("build", {}).get("precision", "fp32") == precision
    )
    if not same_build:
        return []
    old = dict(zip(m["dates"], m.get("windows") or [None] * len(m["dates"]), strict=True))
    return [d for d, digest in digests.items() if old.get(d) is not None and old[d] == digest]


def neighbors_of(
    vectors: np.ndarray, ids: np.ndarray, k: int, query_prior: bool = False
) -> np.ndarray | None:
    """The date's stored neighbor table, or None where it has none (k = 0, or too many assets)."""
    if k <= 0 or len(ids) > ann.NEIGHBOR_TABLE_MAX:
        return None
    return ann.neighbor_table(vectors, ids, k, query_prior)


def store_date(
    staging,
    date: str,
    vectors: np.ndarray,
    ids: np.ndarray,
    kind: str,
    *,
    params: ann.AnnParams,
    use_gpu: bool = False,
    vector_dtype: str = "float32",
    window: str | None = None,
    neighbors: int = NEIGHBORS,
    query_prior: bool = False,
) -> dict:
    """Write one date into `staging`, each vector once: a flat date as its vectors (in `vector_dtype`;
    its exact index is built from them at load), an approximate date as its index, which holds them.
    The neighbor table is computed from the vectors as stored, so a lookup and a search agree
    (`query_prior`: the model's last coordinate is a candidate prior, read as 1 by queries)."""
    if kind == "flat":
        stored = vectors.astype(vector_dtype, copy=False)
        exact = stored if stored.dtype == np.float32 else stored.astype(np.float32)
        table = neighbors_of(exact, ids, neighbors, query_prior)
        return staging.write_date(date, ids, kind, vectors=stored, window=window, neighbors=table)
    index = ann.build_index(vectors, ids, kind, params=params, use_gpu=use_gpu)
    table = neighbors_of(vectors, ids, neighbors, query_prior)
    return staging.write_date(
        date, ids, kind, index_bytes=faiss.serialize_index(index), window=window, neighbors=table
    )


def build_version(
    checkpoint: str | Path,
    panel: Panel,
    *,
    store: IndexStore,
    start=None,
    end=None,
    keep: int | None = None,
    index_kind: str = "auto",
    params: ann.AnnParams | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    threads: int | None = None,
    data_source: str | None = None,
    console: Console | None = None,
    progress: bool = True,
    on_date: Callable[[str, int], None] | None = None,
    reuse: IndexVersion | None = None,
    neighbors: int = NEIGHBORS,
    on_stage: Callable[[str], None] | None = None,
    vector_dtype: str = "float32",
    precision: str = "auto",
) -> BuildResult:
    """Embed, index and publish the dates of `panel` in [start, end] with `checkpoint`.

    `panel` must hold the 63 trading days before `start` for the first dates to have windows.
    `on_date(date, done_so_far)` is called after each date is durable (progress hooks; tests use it
    to interrupt a build). Nothing is pruned here: the caller prunes after activating the version
    (fascl.jobs.retention), since only it knows which versions are served. `keep` sets the store's
    retention for that later prune (the store's own otherwise).
    `reuse`: an earlier version whose unchanged dates are taken over rather than embedded again.
    `neighbors`: K of each date's stored top-K table (0: none). `on_stage(name)` is called on
    reaching "embed" (embedding starts), "write" (the first date embedded here is written, not yet
    durable) and "publish" (about to publish).
    `vector_dtype`: float32 or float16 for flat dates' vector files (index/store.py).
    `precision`: auto, fp32 or bf16 for the encoder's forward passes (index/embed.py).
    Under `torchrun` the dates are shared out between the ranks and rank 0 publishes (index/shards.py);
    every rank returns the published version's result."""
    if vector_dtype not in VECTOR_DTYPES:
        raise ValueError(f"unknown vector dtype {vector_dtype!r}; choose one of {', '.join(VECTOR_DTYPES)}")
    on_stage = on_stage or (lambda stage: None)
    started = time.perf_counter()
    params = params or ann.AnnParams()
    console = console or Console(quiet=not progress)
    if keep is not None:
        store.keep = keep
    faiss_threads = ann.set_threads(threads) if threads is not None else faiss.omp_get_max_threads()
    shard = current_shard()
    if not shard.main:  # one progress display and one report of the stages, rank 0's
        console, progress, on_stage = Console(quiet=True), False, lambda stage: None
    model, info = load_model(checkpoint, device if device is not None else shard_device(shard))
    device = next(model.parameters()).device
    precision = resolve_precision(precision, device)
    batch_size = batch_size or (4096 if device.type == "cuda" else 1024)
    use_gpu = ann.gpu_count() > 0

    cube = build_cube(panel, info.channels, window=info.window, history=info.history)
    positions = date_positions(panel.dates, cube.eligible, start, end)
    if len(positions) == 0:
        raise ValueError(
            f"no date in [{start or panel.dates[0]}, {end or panel.dates[-1]}] has an asset with "
            f"{info.window} days of history in this panel"
        )
    day = [str(d) for d in panel.dates[positions]]

    def digests_of(where) -> dict[str, str]:
        return {str(panel.dates[p]): window_digest(cube, int(p), cube.eligible_assets(int(p))) for p in where}

    # Rank 0 plans (index/shards.py): it digests every date to find the reusable ones; the other
    # ranks take that list and digest only the dates they embed.
    digests = digests_of(positions) if shard.main else {}
    reusable = shard.from_main(
        reusable_dates(
            reuse,
            info,
            index_kind,
            params,
            digests,
            neighbors,
            vector_dtype=vector_dtype,
            precision=precision,
        )
        if shard.main
        else None
    )
    prior = reuse.manifest["tickers"]["ticker"] if reusable else None
    tickers, asset_of_col = ticker_table(panel, cube.eligible, positions, prior)
    id_of_old = None
    if reusable:  # asset ids of the earlier version -> ids of this one (-1: not in this one)
        col_of = {t: c for c, t in enumerate(panel.tickers)}
        id_of_old = np.array([asset_of_col[col_of[t]] if t in col_of else -1 for t in prior], dtype=np.int64)
    spec = {
        "checkpoint_sha256": info.sha256,
        "data_fingerprint": panel.fingerprint(),
        "first_date": day[0],
        "last_date": day[-1],
        "n_dates": len(day),
        "index_kind": index_kind,
        "params": params.to_dict(),
        "neighbors": neighbors,
        "vector_dtype": vector_dtype,
        "precision": precision,
        "tickers_sha256": hashlib.sha256("\n".join(tickers["ticker"]).encode()).hexdigest(),
        "reuse": reuse.version if reusable else None,
    }
    key = f"{info.version}-{spec_key(spec)}"
    records: dict[str, dict] = {}
    resumed = reused = 0
    if shard.main:  # plans for every rank: what is done (by any rank, earlier), what is reused
        staging = store.staging(key, spec)
        records = {d: r for d, r in staging.done().items() if d in set(day)}
        resumed = len(records)
        for date in reusable:
            if date not in records:
                try:
                    records[date] = _take_over(
                        staging, reuse, date, id_of_old, params, digests[date], neighbors, vector_dtype
                    )
                    reused += 1
                except IndexCorruptError as exc:  # embed it again instead
                    console.print(f"[yellow]not reusing {date}: {exc}[/]")
        staging.commit()
        done_elsewhere = {d for path in store.staging_parts(key) for d in finished_dates(path)}
        resumed += len(done_elsewhere - set(records))
        if resumed:
            console.print(f"resuming {staging.path}: {resumed} of {len(day)} dates already done")
        if reused:
            console.print(f"reusing {reused} unchanged dates of {reuse.version}")
        todo = [
            int(p)
            for p, d in zip(positions, day, strict=True)
            if d not in records and d not in done_elsewhere
        ]
    todo = shard.from_main(todo if shard.main else None)
    if not shard.main:
        staging = store.staging(shard.staging_key(key), spec)
    all_todo, todo = todo, shard.share(todo)
    if not shard.main:
        digests = digests_of(todo)
    stages = {"prepare": time.perf_counter() - started, "embed": 0.0, "index": 0.0, "commit": 0.0}
    on_stage("embed")
    columns = (
        TextColumn("[bold]embed+index"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("dates {task.fields[vectors]:,} vectors"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=not progress) as bar:
        task = bar.add_task("export", total=len(todo), vectors=0)
        vectors_done, last_commit = 0, time.monotonic()
        try:
            stream = iter_embeddings(
                model, cube, todo, batch_size=batch_size, device=device, precision=precision
            )
            while True:
                clock = time.perf_counter()
                try:
                    pos, cols, vectors = next(stream)
                except StopIteration:
                    break
                stages["embed"] += time.perf_counter() - clock
                clock = time.perf_counter()
                ids = asset_of_col[cols]
                order = np.argsort(ids, kind="stable")  # ids ascending (the store's layout)
                ids, vectors = ids[order], vectors[order]
                date = str(panel.dates[pos])
                # Written on this thread: a writer thread overlapping the next forward pass measured
                # no faster on 2 cores, since writing a date is mostly its neighbor search (compute),
                # and fsyncs are batched (COMMIT_SECONDS).
                records[date] = store_date(
                    staging,
                    date,
                    vectors,
                    ids,
                    ann.choose_kind(len(ids), index_kind, gpu=use_gpu),
                    params=params,
                    use_gpu=use_gpu,
                    vector_dtype=vector_dtype,
                    window=digests[date],
                    neighbors=neighbors,
                    query_prior=info.query_prior,
                )
                stages["index"] += time.perf_counter() - clock
                if vectors_done == 0:
                    on_stage("write")
                vectors_done += len(ids)
                bar.update(task, advance=1, vectors=vectors_done)
                if time.monotonic() - last_commit > COMMIT_SECONDS:
                    clock = time.perf_counter()
                    staging.commit()
                    stages["commit"] += time.perf_counter() - clock
                    last_commit = time.monotonic()
                if on_date is not None:
                    on_date(date, len(records))
        except BaseException:
            staging.commit()  # what was fully written survives an interruption
            staging.close()
            raise

    staging.commit()  # every rank's dates durable before rank 0 takes them
    if not shard.main:
        staging.close()
        shard.barrier()
        result = shard.from_main(None)
        shard.close()
        return result
    shard.barrier()
    for path in store.staging_parts(key):
        part = store.staging(path.name, spec)
        records.update(staging.adopt(part))
        part.close()
        shutil.rmtree(path)
    staging.commit()
    missing = sorted(set(day) - set(records))
    if missing:  # a rank's share lost (its directory removed meanwhile): nothing half-built is published
        staging.close()
        raise IndexStoreError(
            f"{len(missing)} dates ({missing[0]} ..) were not written by any rank; rerun the build to "
            "embed them (finished dates are kept)"
        )

    manifest = {
        "version": store.new_version_name(info.version),
        "created": utcnow_iso(),
        "model": info.to_manifest(),
        "data": {
            "source": data_source,
            "fingerprint": spec["data_fingerprint"],
            "panel_first_date": str(panel.dates[0]),
            "panel_last_date": str(panel.dates[-1]),
            "panel_assets": int(panel.n_assets),
        },
        "index": {
            "requested_kind": index_kind,
            "metric": "inner_product",
            "params": params.to_dict(),
            "neighbors": neighbors,
            "vector_dtype": vector_dtype,
            "faiss_version": faiss.__version__,
            "built_with": "faiss-gpu" if use_gpu else "faiss-cpu",
            "omp_threads": faiss_threads,
        },
        "dim": info.dim,
        "tickers": tickers,
        "build": {
            "device": str(device),
            "precision": precision,
            "batch_size": batch_size,
            "embedded_dates": len(all_todo),
            "ranks": shard.world,
            "resumed_dates": resumed,
            "reused_dates": reused,
            "reused_from": reuse.version if reused else None,
            "seconds": round(time.perf_counter() - started, 3),
            "host_time": dt.datetime.now().isoformat(timespec="seconds"),
        },
    }
    on_stage("publish")
    clock = time.perf_counter()
    try:
        published = store.publish(staging, manifest, records)
    finally:
        staging.close()
    stages["publish"] = time.perf_counter() - clock
    result = BuildResult(
        version=published.version,
        path=published.path,
        model_version=info.version,
        first_date=day[0],
        last_date=day[-1],
        n_dates=len(day),
        vectors=int(published.counts.sum()),
        dim=info.dim,
        embedded_dates=len(all_todo),
        resumed_dates=resumed,
        reused_dates=reused,
        seconds=time.perf_counter() - started,
        disk_bytes=store.disk_bytes(published.version),
        device=str(device),
        kinds=sorted(set(published.kinds)),
        stages={name: round(seconds, 3) for name, seconds in stages.items()},
    )
    result = shard.from_main(result)
    shard.close()
    return result


def _take_over(
    staging,
    source: IndexVersion,
    date: str,
    id_of_old,
    params,
    window: str,
    neighbors: int,
    vector_dtype: str,
) -> dict:
    """One unchanged date of `source` into `staging`, without embedding: copies of its files when its
    asset ids and layout are unchanged, otherwise its vectors rewritten under the new ids (or from an
    older store format) with the index and table rebuilt from them."""
    ids, vectors = source.read_vectors(date)  # a flat date's memory-mapped: read only if rewritten
    new_ids = id_of_old[ids]
    if np.array_equal(new_ids, ids) and source.format == FORMAT:
        return staging.copy_date(date, source, window=window)
    # tickers kept their relative order (ticker_table's `prior`), so the new ids stay ascending
    kind = source.kinds[source.position(date)]
    return store_date(
        staging,
        date,
        np.ascontiguousarray(vectors, dtype=np.float32),
        new_ids,
        kind,
        params=params,
        vector_dtype=vector_dtype,
        window=window,
        neighbors=neighbors,
        query_prior=source.query_prior,
    )


def publish_arrays(
    store: IndexStore,
    arrays: dict[str, tuple[np.ndarray, np.ndarray]],
    tickers: dict[str, list],
    *,
    model: dict,
    index_kind: str = "auto",
    params: ann.AnnParams | None = None,
    data: dict | None = None,
) -> IndexVersion:
    """Publish precomputed vectors as a version (benchmarks, imports): `arrays` maps YYYY-MM-DD to
    (asset ids, float32 vectors of at most unit length); `tickers` is the columnar ticker table (ticker, name,
    sector, industry, exchange, first_date, last_date, n_dates); `model` needs at least "version".
    Returns the published IndexVersion."""
    params = params or ann.AnnParams()
    dims = {v.shape[1] for _, v in arrays.values()}
    if len(dims) != 1:
        raise ValueError(f"all dates must share one dimension, found {sorted(dims)}")
    spec = {"arrays": hashlib.sha256(repr(sorted(arrays)).encode()).hexdigest(), "at": utcnow_iso()}
    staging = store.staging(f"{model['version']}-{spec_key(spec)}", spec)
    records = {}
    for date, (ids, vectors) in sorted(arrays.items()):
        kind = ann.choose_kind(len(ids), index_kind, gpu=ann.gpu_count() > 0)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        records[date] = store_date(staging, date, vectors, ids, kind, params=params, neighbors=0)
    manifest = {
        "version": store.new_version_name(model["version"]),
        "created": utcnow_iso(),
        "model": model,
        "data": data or {},
        "index": {"requested_kind": index_kind, "metric": "inner_product", "params": params.to_dict()},
        "dim": dims.pop(),
        "tickers": tickers,
        "build": {},
    }
    try:
        return store.publish(staging, manifest, records)
    finally:
        staging.close()
