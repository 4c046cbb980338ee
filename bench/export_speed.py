"""Embedding export: float32 against bfloat16 forward passes and float16 vector files, on real data.

    .venv/bin/python bench/export_speed.py --data us_nasdaq --model PATH/last.pt [--from 2016-01-04 --to 2016-02-29]

Builds the same dates three times in one run, each from scratch into its own store: the baseline
(float32 forward passes, float32 vectors), bfloat16 forward passes, and bfloat16 with float16 vector
files. Prints vectors/s, the seconds by stage (index.build.BuildResult.stages), disk per vector,
each variant's speed as a ratio to the baseline, and what each costs in retrieval: recall@10 of every
asset's exact top-10 on every date against the baseline's (1.0: the same peers). bfloat16 is only
faster where the hardware multiplies it natively (index/embed.py); elsewhere expect a ratio below 1.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from index import ann
from index.build import build_version
from index.embed import native_bf16
from index.store import IndexStore
from market.panel import Panel

console = Console(width=150)
VARIANTS = (
    ("baseline", "fp32", "float32"),
    ("bf16", "bf16", "float32"),
    ("bf16 + float16", "bf16", "float16"),
)


def top10(vectors: np.ndarray, query_prior: bool) -> np.ndarray:
    """Each asset's 10 best peers, as the reader ranks them (queries read a candidate prior as 1)."""
    _, rows = ann.exact_topk(vectors, ann.as_queries(vectors, query_prior), 11)
    rows = [row[row != i][:10] for i, row in enumerate(rows)]  # without the asset itself
    return np.array(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="Panel name under FASCL_HOME/market or a directory")
    parser.add_argument("--model", required=True, help="Checkpoint file")
    parser.add_argument("--from", dest="start", default="2016-01-04")
    parser.add_argument("--to", dest="end", default="2016-02-29")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "fascl-bench-export")
    args = parser.parse_args()
    import torch

    from fascl.cli.panels import resolve_panel_path

    panel = Panel.load(resolve_panel_path(args.data))
    console.print(f"native bfloat16 on this CPU: {native_bf16(torch.device('cpu'))}")
    results, versions = {}, {}
    shutil.rmtree(args.home, ignore_errors=True)
    for label, precision, dtype in VARIANTS:
        store = IndexStore(args.home / label.replace(" ", ""))
        result = build_version(
            args.model,
            panel,
            start=args.start,
            end=args.end,
            store=store,
            threads=args.threads,
            precision=precision,
            vector_dtype=dtype,
            progress=False,
        )
        results[label], versions[label] = result, store.open_version(result.version)
        console.print(f"{label}: {result.vectors / result.seconds:,.0f} vectors/s")

    base = results["baseline"]
    table = Table(
        title=f"export of {args.data} {base.first_date} .. {base.last_date}: {base.n_dates} dates, "
        f"{base.vectors:,} vectors x {base.dim}, {args.threads} threads"
    )
    stages = list(base.stages)
    for column in ("variant", "vectors/s", "x baseline", *stages, "bytes/vector", "recall@10"):
        table.add_column(column, justify="right")
    dates = versions["baseline"].manifest["dates"]
    reference = {
        d: top10(np.asarray(versions["baseline"].read_vectors(d)[1]), versions["baseline"].query_prior)
        for d in dates
    }
    for label, result in results.items():
        hits = total = 0
        for d in dates:
            found = top10(np.asarray(versions[label].read_vectors(d)[1]), versions[label].query_prior)
            hits += sum(len(np.intersect1d(a, b)) for a, b in zip(found, reference[d], strict=True))
            total += reference[d].size
        table.add_row(
            label,
            f"{result.vectors / result.seconds:,.0f}",
            f"{base.seconds / result.seconds:.2f}",
            *(f"{result.stages.get(s, 0.0):.1f}" for s in stages),
            f"{result.disk_bytes / result.vectors:,.0f}",
            f"{hits / total:.4f}",
        )
    console.print(table)
    embed_share = base.stages["embed"] / base.seconds
    console.print(
        f"the baseline spends {embed_share:.0%} of its time in the encoder's forward passes (stage embed)"
    )


if __name__ == "__main__":
    main()
