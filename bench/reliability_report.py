"""Render docs/RELIABILITY.md from the reliability suite's results (one JSON line per test run).

`make reliability` runs tests/reliability at the full level with FASCL_RELIABILITY_RESULTS pointing
at a fresh results file, then calls this script. One table row per scenario and database: the load,
the failures injected, what was lost, the outcome and the command that reproduces it; then each
row's checks and figures. When a test ran more than once into the same file, its last run counts.

    .venv/bin/python bench/reliability_report.py [var/reliability/results.jsonl] [--out docs/RELIABILITY.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATABASES = {"sqlite": 0, "postgresql": 1}
OUTCOME = {
    "passed": "passed",
    "failed": "**FAILED**",
    "xfail": "expected failure (pending fix)",
    "skipped": "skipped",
}


def load_rows(path: Path) -> list[dict]:
    """The results' rows, the last run of each test only, ordered by scenario number then database."""
    latest: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        latest[row.get("nodeid") or row["scenario"] + row.get("database", "")] = row
    return sorted(latest.values(), key=_order)


def _order(row: dict) -> tuple:
    match = re.match(r"\s*(\d+)", row.get("scenario", ""))
    number = int(match.group(1)) if match else 99
    return number, row.get("scenario", ""), DATABASES.get(row.get("database"), 9), row.get("nodeid", "")


def cell(text) -> str:
    """Text fit for one Markdown table cell."""
    return str(text if text not in (None, "") else "-").replace("|", "\\|").replace("\n", " ").strip()


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _flatten(value, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        items = []
        for key, inner in value.items():
            items += _flatten(inner, f"{prefix}.{key}" if prefix else str(key))
        return items
    if isinstance(value, list) and len(value) > 12:
        return [(prefix, f"{len(value)} values")]
    return [(prefix, json.dumps(value) if isinstance(value, list | bool) or value is None else str(value))]


def render(rows: list[dict], *, figures_dir: Path | None = None, commit: str | None = None) -> str:
    modes = sorted({row.get("mode", "?") for row in rows})
    lines = [
        "# Reliability",
        "",
        "Written by `make reliability` (bench/reliability_report.py) from the suite under `tests/reliability`: "
        "each scenario runs against a real `fascl serve` on a real index (a synthetic market, a trained "
        "checkpoint, versions published by the index store), on SQLite and on PostgreSQL where the scenario "
        "involves the database.",
        "",
        f"Rendered on {dt.date.today().isoformat()} at commit `{commit or _commit()}` (when a scenario was rerun "
        "alone, its row is its last run: each row's details give when it finished), on "
        f"{os.cpu_count()} CPU cores "
        f"({platform.machine()}, Python {platform.python_version()}); level: {', '.join(modes)}"
        + (
            " (the fast level of `make test`: smaller loads and shorter runs than documented)"
            if modes != ["full"]
            else ""
        )
        + ".",
        "",
        "| scenario | database | load | failures injected | lost | result | reproduce |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        result = OUTCOME.get(row.get("outcome"), row.get("outcome"))
        failed = [c["what"] for c in row.get("checks") or [] if not c["ok"] and not c.get("pending")]
        if row.get("outcome") == "failed" and failed:
            result += ", failed check: " + "; ".join(failed)[:300]
        elif row.get("outcome") not in ("passed", None) and row.get("message"):
            result += f": {row['message'][:300]}"
        lines.append(
            "| "
            + " | ".join(
                [
                    cell(row.get("scenario")),
                    cell(row.get("database")),
                    cell(row.get("load")),
                    cell(row.get("faults")),
                    cell(row.get("lost")),
                    cell(result),
                    f"`{cell(row.get('command'))}`",
                ]
            )
            + " |"
        )
    counts = {}
    for row in rows:
        counts[row.get("outcome")] = counts.get(row.get("outcome"), 0) + 1
    lines += ["", "Outcomes: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + ".", ""]

    lines += ["## Details", ""]
    for row in rows:
        lines += [f"### {row.get('scenario')} ({row.get('database')})", ""]
        lines.append(
            f"{row.get('seconds', '?')} s, finished {row.get('finished', '?')}, `{row.get('nodeid')}`."
        )
        lines.append("")
        checks = row.get("checks") or []
        if checks:
            lines.append("Checks:")
            lines.append("")
            for check in checks:
                mark = "ok" if check["ok"] else ("pending" if check.get("pending") else "FAILED")
                suffix = f" (pending: {check['pending']})" if check.get("pending") and not check["ok"] else ""
                lines.append(f"- {mark}: {check['what']}{suffix}")
            lines.append("")
        metrics = _flatten({k: v for k, v in (row.get("metrics") or {}).items() if k != "samples"})
        if metrics:
            lines.append("Figures:")
            lines.append("")
            lines += [f"- `{key}`: {value}" for key, value in metrics]
            lines.append("")
        for artifact in row.get("artifacts") or []:
            path = Path(artifact)
            if figures_dir is not None and path.parent.resolve() == figures_dir.resolve() and path.exists():
                lines += [f"![{path.stem}]({path.name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", default="var/reliability/results.jsonl", type=Path)
    parser.add_argument("--out", default=REPO / "docs" / "RELIABILITY.md", type=Path)
    args = parser.parse_args()
    if not args.results.exists():
        raise SystemExit(
            f"no results at {args.results}: run `make reliability` (or the suite with FASCL_RELIABILITY_RESULTS)"
        )
    rows = load_rows(args.results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(rows, figures_dir=args.out.parent))
    print(f"{args.out}: {len(rows)} rows from {args.results}")


if __name__ == "__main__":
    main()
