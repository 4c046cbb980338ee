"""bench/reliability_report.py: the rows of docs/RELIABILITY.md from the suite's results file."""

from __future__ import annotations

import importlib.util
import json

from tests.reliability.harness import REPO


def report_module():
    spec = importlib.util.spec_from_file_location(
        "reliability_report", REPO / "bench" / "reliability_report.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(nodeid: str, scenario: str, database: str, outcome: str = "passed", **extra) -> dict:
    return {
        "nodeid": nodeid,
        "scenario": scenario,
        "database": database,
        "mode": "full",
        "outcome": outcome,
        "message": extra.pop("message", ""),
        "load": "wrk -c16 | 60 s",
        "faults": "10 swaps",
        "lost": "0 non-2xx",
        "command": f"FASCL_RELIABILITY=full .venv/bin/python -m pytest '{nodeid}'",
        "metrics": {"p99_ms": 7.5, "samples": [[0, 1]] * 50, "nested": {"a": 1}},
        "checks": [{"what": "no socket errors", "ok": outcome == "passed", "pending": None}],
        "artifacts": [],
        **extra,
    }


def test_one_row_per_test_the_last_run_counting_in_scenario_order(tmp_path):
    report = report_module()
    results = tmp_path / "results.jsonl"
    rows = [
        row("t6.py::soak", "6. Bounded soak", "postgresql"),
        row("t3.py::swap[postgresql]", "3. Hot swap under load", "postgresql", "failed", message="first run"),
        row("t3.py::swap[sqlite]", "3. Hot swap under load", "sqlite"),
        row("t3.py::swap[postgresql]", "3. Hot swap under load", "postgresql"),  # the rerun
        row("t4.py::faults[sqlite]", "4. Database faults", "sqlite", "xfail", message="pending: D"),
    ]
    results.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    figure = tmp_path / "reliability-soak.png"
    figure.write_bytes(b"png")
    loaded = report.load_rows(results)
    assert [(r["scenario"][0], r["database"]) for r in loaded] == [
        ("3", "sqlite"),
        ("3", "postgresql"),
        ("4", "sqlite"),
        ("6", "postgresql"),
    ]
    loaded[-1]["artifacts"] = [str(figure)]
    text = report.render(loaded, figures_dir=tmp_path, commit="abc1234")
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 4  # the header, then one row per test
    assert "wrk -c16 \\| 60 s" in table[1]  # a pipe in a cell is escaped
    assert "first run" not in text and "FAILED" not in table[2]
    failed = row("t6.py::soak", "6. Bounded soak", "postgresql", "failed", message="Failed: slope")
    assert "**FAILED**, failed check: no socket errors |" in report.render([failed], commit="x")
    assert "expected failure (pending fix): pending: D" in table[3]
    assert "`FASCL_RELIABILITY=full .venv/bin/python -m pytest 't6.py::soak'`" in table[4]
    assert "![reliability-soak](reliability-soak.png)" in text
    assert "`nested.a`: 1" in text and "samples" not in text
    assert "commit `abc1234`" in text
