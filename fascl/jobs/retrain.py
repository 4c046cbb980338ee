"""Retrain with a promotion gate: a candidate is served only if it is not worse than the active model.

`fascl retrain` trains a candidate on the latest data with the default recipe (or takes one trained
elsewhere, on a GPU say, with --candidate), scores candidate and active model on the same recent
validation window with the date-level evaluation (FRC@1 per query date, the paired difference and
its date-block bootstrap interval), and promotes the candidate only if its FRC@1 is not below the
active model's by more than `margin`. Both are recorded in `model_versions` with their metrics.
Promoted: the kept history (the active version's dates) is rebuilt with it and the active version
flips atomically. Refused: the candidate stays under HOME/models for inspection and is not served.

The candidate trains on dates before the window (purged of the 64-day future that overlaps it), so
the window is out of its sample, as it is for the active model trained earlier."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from sqlalchemy import select

from catalogue.models import ModelVersion
from catalogue.repository import active_index, register_model
from catalogue.sessions import session_scope
from fascl.jobs.activation import activate_version, prune
from fascl.jobs.database import catalogue_sessions
from fascl.jobs.errors import JobError
from fascl.jobs.lock import RunLocked, run_lock
from fascl.jobs.publish import publish_version
from fascl.settings import Settings
from index.store import IndexStore, sha256_file
from market.panel import Panel
from model import metrics as M
from model.checkpoint import read_checkpoint
from model.evaluate import EvalConfig, evaluate, history_needed, prepare_context, query_positions
from model.retrievers import FasclRetriever, make_baseline
from model.targets import HORIZON
from model.train import preset_config, train

WINDOW_DAYS = 252  # trading days of the validation window: a year, ending where the future is known
STRIDE = 16  # trading days between its query dates: a year gives 12 or more


@dataclass
class GateResult:
    """The gate's evidence: FRC@1 of both models on the same queries, and their paired difference."""

    candidate_frc: float
    active_frc: float
    pearson_frc: float
    difference: float  # candidate - active
    lo: float  # date-block bootstrap 95% interval of the difference
    hi: float
    dates: int
    dates_better: int
    window: tuple[str, str]  # first and last query date


@dataclass
class RetrainOutcome:
    status: str  # "promoted" | "refused" | "failed" ("refused" also when another job holds the lock)
    candidate: str | None
    active_model: str | None
    gate: GateResult | None
    index_version: str | None
    message: str


def window_start(panel: Panel, window_days: int = WINDOW_DAYS) -> np.datetime64:
    """First date of the gate's window: `window_days` trading days before the last date whose 64-day
    future is known. The candidate trains on the dates before it."""
    last = panel.n_dates - HORIZON - 1
    if last < 1:
        raise JobError("the panel is shorter than the 64-day future window: nothing to score on")
    return panel.dates[max(0, last - window_days)]


def score_models(
    panel: Panel,
    active: Path,
    candidate: Path,
    *,
    window_days: int = WINDOW_DAYS,
    stride: int = STRIDE,
    seed: int = 0,
) -> GateResult:
    """FRC@1 of both checkpoints and of plain Pearson on the query dates of the last `window_days`
    trading days whose future is known, with the date-block interval of candidate - active."""
    config = EvalConfig(stride=stride, ks=(1,), bootstrap=0, seed=seed)
    positions = query_positions(panel.dates, str(window_start(panel, window_days)))[::stride]
    retrievers = [
        FasclRetriever.from_checkpoint(active, name="active"),
        FasclRetriever.from_checkpoint(candidate, name="candidate"),
        make_baseline("pearson"),
    ]
    ctx, local = prepare_context(panel, positions, config, lookback=history_needed(retrievers, config.window))
    result = evaluate(ctx, retrievers, local, config)
    frc = result.frc[:, 0, :]  # (methods, queries) at K = 1
    per_date = M.group_means(frc, result.query_date)
    diff = frc[1] - frc[0]
    samples = M.date_block_bootstrap_means(diff[None, :], result.query_date, n_resamples=1000, seed=seed)
    lo, hi = M.interval(samples[0])
    daily = per_date[1] - per_date[0]
    return GateResult(
        candidate_frc=float(np.nanmean(frc[1])),
        active_frc=float(np.nanmean(frc[0])),
        pearson_frc=float(np.nanmean(frc[2])),
        difference=float(np.nanmean(diff)),
        lo=float(lo),
        hi=float(hi),
        dates=int(np.isfinite(daily).sum()),
        dates_better=int((daily > 0).sum()),
        window=(str(result.dates[0]), str(result.dates[-1])),
    )


def run_retrain(
    settings: Settings,
    *,
    preset: str = "small",
    minutes: float | None = None,
    margin: float = 0.0,
    window_days: int = WINDOW_DAYS,
    stride: int = STRIDE,
    candidate: Path | None = None,
    console: Console | None = None,
) -> RetrainOutcome:
    """Train (or take) a candidate, gate it against the active model, promote or refuse it."""
    console = console or Console()
    try:
        with run_lock(settings.sqlalchemy_url, "retrain"):
            return _retrain(settings, preset, minutes, margin, window_days, stride, candidate, console)
    except RunLocked as exc:
        return RetrainOutcome("refused", None, None, None, None, str(exc))
    except (JobError, ValueError) as exc:  # CheckpointError is a ValueError: a bad --candidate
        return RetrainOutcome("failed", None, None, None, None, str(exc))


def _retrain(settings, preset, minutes, margin, window_days, stride, candidate, console) -> RetrainOutcome:
    store = IndexStore(settings.indexes_dir, keep=settings.index_keep)
    with catalogue_sessions(settings) as sessions:
        with sessions() as session:
            row = active_index(session)
        if row is None:
            raise JobError("no active index: build and activate one first (`fascl index build`)")
        old = store.open_version(Path(row.path).name, verify="lazy")
        active_checkpoint = Path(old.manifest["model"]["checkpoint"])
        panel_path = Path(old.manifest["data"]["source"])
        panel = Panel.load(panel_path)

        first = window_start(panel, window_days)
        if candidate is None:
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
            out = settings.models_dir / f"{panel_path.name}-{preset}-candidate-{stamp}"
            # Validation is the gate's window; the test split is the last date alone (its future is
            # unknown, so nothing is tested on it).
            config = preset_config(
                preset,
                valid_start=str(first),
                test_start=str(panel.dates[-1]),
                max_minutes=minutes,
            )
            console.print(f"training candidate {out.name} on dates before {first}")
            train(panel, config, out, resume=False, console=console, data_source=str(panel_path))
            candidate = out / "best.pt"
        candidate = candidate / "best.pt" if candidate.is_dir() else candidate
        started = time.perf_counter()
        gate = score_models(panel, active_checkpoint, candidate, window_days=window_days, stride=stride)
        promote = gate.difference >= -margin
        console.print(
            f"validation FRC@1 over {gate.dates} dates ({gate.window[0]} .. {gate.window[1]}): candidate "
            f"{gate.candidate_frc:.4f}, active {gate.active_frc:.4f}, Pearson {gate.pearson_frc:.4f}; "
            f"difference {gate.difference:+.4f} [{gate.lo:+.4f}, {gate.hi:+.4f}], candidate better on "
            f"{gate.dates_better} of {gate.dates} dates ({time.perf_counter() - started:.0f} s)"
        )
        candidate_name, active_name = _model_name(candidate), old.manifest["model"]["version"]
        decision = "promoted" if promote else "refused"
        with session_scope(sessions) as session:
            metrics = {"gate": asdict(gate), "margin": margin}
            mine = register_model(session, candidate_name, str(candidate), read_checkpoint(candidate))
            mine.metrics = {**mine.metrics, **metrics, "valid_frc": gate.candidate_frc, "decision": decision}
            theirs = register_model(
                session, active_name, str(active_checkpoint), read_checkpoint(active_checkpoint)
            )
            theirs.metrics = {**theirs.metrics, "valid_frc": gate.active_frc, "window": list(gate.window)}
            theirs.promoted = True
        if not promote:
            return RetrainOutcome(
                "refused",
                candidate_name,
                active_name,
                gate,
                old.version,
                f"{candidate_name} scores {gate.difference:+.4f} FRC@1 against {active_name}, below the margin "
                f"-{margin}; kept at {candidate.parent} for inspection, not served",
            )
        result = publish_version(
            store,
            candidate,
            panel,
            data_source=str(panel_path),
            reuse="none",  # another checkpoint: no date of the old version can be taken over
            start=old.manifest["dates"][0],
            vector_dtype=settings.index_vector_dtype,
            precision=settings.embed_precision,
            console=console,
            progress=False,
        )
        activate_version(sessions, store, result.version)
        with session_scope(sessions) as session:
            chosen = select(ModelVersion).where(ModelVersion.version.in_([candidate_name, active_name]))
            for row in session.scalars(chosen):
                row.promoted = row.version == candidate_name
        pruned = prune(sessions, store)
    return RetrainOutcome(
        "promoted",
        candidate_name,
        active_name,
        gate,
        result.version,
        f"{candidate_name} promoted ({gate.difference:+.4f} FRC@1 against {active_name}); {result.n_dates} dates "
        f"rebuilt as {result.version}, now active" + (f"; pruned {', '.join(pruned)}" if pruned else ""),
    )


def _model_name(checkpoint: Path) -> str:
    """A model's version id, as the index manifests and the catalogue name it (index/embed.py):
    its directory's name and the first 8 hex of the checkpoint's sha256."""
    return f"{checkpoint.parent.name}-{sha256_file(checkpoint)[:8]}"
