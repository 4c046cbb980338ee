"""`fascl retrain` end to end on the synthetic market: a candidate promoted, a weakened one refused,
both recorded in model_versions with the gate's evidence."""

from __future__ import annotations

import torch
from sqlalchemy import select
from typer.testing import CliRunner

from catalogue.models import ModelVersion
from catalogue.repository import active_index
from catalogue.sessions import make_engine, session_factory
from fascl.cli.main import app
from fascl.jobs.retrain import run_retrain
from fascl.jobs.sample import SampleSpec, build_sample
from fascl.settings import Settings, get_settings
from index.store import IndexStore, sha256_file
from model.checkpoint import read_checkpoint, save_checkpoint

GATE = ["--window-days", "60", "--stride", "4"]


def test_a_weakened_candidate_is_refused_and_a_retrained_one_promoted(tmp_path, database_url, monkeypatch):
    home = tmp_path / "home"
    sample = build_sample(home, SampleSpec(database_url=database_url))
    settings = Settings(home=home, database_url=database_url)
    factory = session_factory(make_engine(database_url))
    with factory() as session:
        row = active_index(session)
        served, active_model = row.version, session.get(ModelVersion, row.model_version_id).version
    first_dates = IndexStore(settings.indexes_dir).open_version(served).manifest["dates"]

    # Weakened on purpose: every weight zero, so every peer scores alike.
    weak = home / "models" / "weakened" / "best.pt"
    state = read_checkpoint(sample.checkpoint)
    state["model_state"] = {k: torch.zeros_like(v) for k, v in state["model_state"].items()}
    save_checkpoint(state, weak)
    weakened = f"weakened-{sha256_file(weak)[:8]}"
    refused = run_retrain(settings, candidate=weak, window_days=60, stride=4, margin=0.01)
    assert refused.status == "refused", refused.message
    assert refused.gate.difference < -0.01 and refused.gate.dates >= 10
    assert "kept at" in refused.message and weak.exists()
    with factory() as session:
        assert active_index(session).version == served
        rows = {m.version: m for m in session.scalars(select(ModelVersion))}
    assert rows[weakened].promoted is False and rows[weakened].metrics["decision"] == "refused"
    assert rows[weakened].metrics["gate"]["difference"] == refused.gate.difference
    assert (
        rows[active_model].promoted is True
        and rows[active_model].metrics["valid_frc"] == refused.gate.active_frc
    )

    # A candidate retrained on the latest data with the default recipe (tiny here), through the CLI.
    monkeypatch.setenv("FASCL_HOME", str(home))
    monkeypatch.setenv("FASCL_DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["retrain", "--config", "tiny", "--margin", "0.05", *GATE])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "retrain promoted" in result.output and "validation FRC@1 over" in result.output
    with factory() as session:
        now = active_index(session)
        rows = {m.version: m for m in session.scalars(select(ModelVersion))}
    assert now.version != served
    candidate = next(m.version for m in rows.values() if m.id == now.model_version_id)
    assert "-tiny-candidate-" in candidate
    assert rows[candidate].promoted is True and rows[active_model].promoted is False, {
        k: (v.promoted, v.metrics.get("decision")) for k, v in rows.items()
    }
    assert rows[candidate].metrics["decision"] == "promoted"
    rebuilt = IndexStore(settings.indexes_dir).open_version(now.version)
    assert rebuilt.manifest["dates"] == first_dates  # the kept history, rebuilt with the candidate
    assert rebuilt.manifest["model"]["version"] == candidate
    factory.kw["bind"].dispose()
