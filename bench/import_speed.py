"""Import speed and memory on the real us_nasdaq set (6.1M rows, 2,800 tickers, 3,257 dates).

    python bench/import_speed.py [--data PATH] [--keep DIR]

PATH is the shared data folder (holding us_nasdaq/), the us_nasdaq folder, or the
ohlcv.parquet file; default: $FASCL_SHARED_DATA or ../shared/data. Targets: under 30 s
and under 4 GiB peak RSS on a 2-core machine. Peak RSS is the whole process's
(ru_maxrss), so it includes the interpreter and libraries.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from market.importers import import_dataset  # noqa: E402

TARGET_SECONDS = 30.0
TARGET_RSS_MIB = 4096.0
REPO = Path(__file__).resolve().parents[1]


def resolve(path: Path) -> tuple[Path, Path | None]:
    """(bars file, assets file or None) from a data root, a dataset folder or a file."""
    if path.is_file():
        bars = path
    elif (path / "ohlcv.parquet").exists():
        bars = path / "ohlcv.parquet"
    else:
        bars = path / "us_nasdaq" / "ohlcv.parquet"
    if not bars.exists():
        raise SystemExit(f"us_nasdaq data not found at {path}; pass --data or set FASCL_SHARED_DATA")
    assets = bars.parent / "assets.csv"
    return bars, assets if assets.exists() else None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default = os.environ.get("FASCL_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    parser.add_argument("--data", type=Path, default=Path(default))
    parser.add_argument("--keep", type=Path, help="write the panel here instead of a temp dir")
    args = parser.parse_args()
    bars, assets = resolve(args.data)

    with tempfile.TemporaryDirectory(prefix="fascl-bench-") as tmp:
        dest = args.keep or Path(tmp) / "us_nasdaq"
        start = time.perf_counter()
        report = import_dataset(bars, dest, assets=assets)
        seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    table = Table(title=f"import_dataset({bars}) on {cpus} CPU(s)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("result")
    table.add_row("rows imported", f"{report.rows_imported:,}", "", "")
    table.add_row("tickers", f"{report.tickers:,}", "", "")
    table.add_row("dates", f"{report.dates:,}", "", "")
    ok_time, ok_rss = seconds < TARGET_SECONDS, peak_mib < TARGET_RSS_MIB
    table.add_row("seconds", f"{seconds:.1f}", f"< {TARGET_SECONDS:.0f}", "PASS" if ok_time else "FAIL")
    table.add_row(
        "peak RSS (MiB)", f"{peak_mib:,.0f}", f"< {TARGET_RSS_MIB:,.0f}", "PASS" if ok_rss else "FAIL"
    )
    for kind, count in report.correction_counts().items():
        table.add_row(f"corrections: {kind}", f"{count:,}", "", "")
    moves = report.after_cleaning
    table.add_row(
        "moves >= x2 (up / down), raw", f"{moves['up_x2_before']:,} / {moves['down_x2_before']:,}", "", ""
    )
    table.add_row("... after cleaning", f"{moves['up_x2_after']:,} / {moves['down_x2_after']:,}", "", "")
    Console().print(table)
    return 0 if ok_time and ok_rss else 1


if __name__ == "__main__":
    raise SystemExit(main())
