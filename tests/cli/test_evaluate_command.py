"""`fascl evaluate` end to end through the real CLI app: report files, methods, refusals."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from market.synthetic import generate
from model.retrievers import CLASSICAL
from model.train import TrainConfig, train


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    market = generate(40, 3, seed=0)
    root = tmp_path_factory.mktemp("evalcli")
    market.panel.save(root / "panel")
    config = TrainConfig(
        encoder="tiny", batch_size=32, epochs=1, steps_per_epoch=3, warmup_epochs=0, threads=1, seed=0
    )
    train(market.panel, config, root / "model", console=Console(file=io.StringIO()))
    return root


def test_cli_evaluate_writes_metrics_report_and_figures(tiny_model, monkeypatch):
    from fascl.cli.main import app
    from fascl.settings import get_settings

    monkeypatch.setenv("FASCL_HOME", str(tiny_model / "home"))
    get_settings.cache_clear()
    out = tiny_model / "report"
    checkpoint = tiny_model / "model" / "best.pt"
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--data",
            str(tiny_model / "panel"),
            "--model",
            str(checkpoint),
            "--model",
            f"again={tiny_model / 'model'}",
            "--bootstrap",
            "100",
            "--out",
            str(out),
        ],
    )
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "elapsed" in result.output and "FRC@1" in result.output
    for name in ("metrics.json", "report.md", "frc.png", "gap_closed.png", "spread_pnl.png", "example.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in ("frc.png", "spread_pnl.png", "example.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((out / "metrics.json").read_text())
    methods = metrics["methods"]
    assert list(methods) == [
        "random",
        "pearson",
        "pearson_w",
        "pearson_w126",
        "pearson_w252",
        "pearson_w504",
        "ewma504",
        "shrink_market504",
        "shrink_pca504",
        "sector",
        "pca",
        "window",
        "dtw",
        "shrink_market32",  # the tiny model's classical start, added once for both labels
        "fascl",
        "again",
        "oracle",
    ]
    assert metrics["config"]["stride"] == 16 and len(metrics["dates"]) >= 10
    best = metrics["best_classical"]
    assert (best in CLASSICAL or best == "shrink_market32") and best in methods
    assert "frc_minus_best_classical" in methods["fascl"] and "frc_minus_pearson" in methods["fascl"]
    assert methods["fascl"]["start"] == "shrink_market32" and "1" in methods["fascl"]["frc_minus_start"]
    assert methods["fascl"]["frc"] == methods["again"]["frc"]  # the same checkpoint twice
    splits = json.loads((tiny_model / "model" / "config.json").read_text())["splits"]
    assert metrics["info"]["test_start"] == splits["test_start"]  # the test split of the checkpoint
    assert all(d >= splits["test_start"] for d in metrics["dates"])
    for k in ("1", "5", "10", "20"):
        frc = methods["fascl"]["frc"][k]
        assert frc["lo"] <= frc["mean"] <= frc["hi"]
    report = (out / "report.md").read_text()
    for text in (
        "| fascl |",
        "| again |",
        "## What training added",
        "| oracle |",
        "FRC@1",
        "SP@",
        "TC@K",
        "IC@K",
        "Precision@1",
        "Tracking error",
        "gross Sharpe",
        "TS2Vec",
        "![",
        "example.png",
        f"## Best classical retriever: {best}",
        "date-block bootstrap",
        "per-query bootstrap (ignores within-date dependence)",
        "## FRC@K per query date",
    ):
        assert text in report, text


def test_cli_rejects_unknown_methods(tiny_model):
    from fascl.cli.main import app

    result = CliRunner().invoke(
        app, ["evaluate", "--data", str(tiny_model / "panel"), "--methods", "random,ts2vec"]
    )
    assert result.exit_code == 1 and "ts2vec" in result.output


def test_cli_evaluate_baselines_only(tmp_path, monkeypatch):
    from fascl.cli.main import app
    from fascl.settings import get_settings

    generate(40, 3, seed=1).panel.save(tmp_path / "panel")
    monkeypatch.setenv("FASCL_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    out = tmp_path / "report"
    methods = "pearson_w,pearson_w504,ewma504,shrink_market504,shrink_pca504,sector"
    result = CliRunner().invoke(
        app,
        ["evaluate", "--data", str(tmp_path / "panel"), "--methods", methods, "--test-start", "2011-09-01"]
        + ["--bootstrap", "200", "--out", str(out)],
    )
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "best classical retriever" in result.output and "dates" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["methods"]) == methods.split(",") + ["random", "pearson", "oracle"]
    assert metrics["best_classical"] in methods.split(",") + ["pearson"]
    assert len(metrics["dates"]) >= 10
    frc = metrics["methods"]["pearson_w504"]["frc"]["1"]
    assert frc["lo"] <= frc["mean"] <= frc["hi"] and frc["lo_per_query"] is not None
    report = (out / "report.md").read_text()
    assert f"## Best classical retriever: {metrics['best_classical']}" in report
