"""The evaluation job: which methods run, over which dates, what the report warns about.

Policy lives here, not in the command: the default baselines, the ones the report cannot do
without (random, Pearson, the oracle), the default test period (the first model's test split, else
the data's), the warnings (a model validated past the test start, a model trained on other data,
DTW's subsample), and the report written under `out`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fascl.jobs.errors import EvaluationRefused
from market.panel import Panel
from model.checkpoint import CheckpointError
from model.evaluate import EvalConfig, history_needed, prepare_context, query_positions, summarize
from model.evaluate import evaluate as score_methods
from model.report import write_report
from model.retrievers import BASELINES, DTWRetriever, FasclRetriever, make_baseline, start_retriever
from model.splits import default_splits

DEFAULT_METHODS = (
    "random,oracle,pearson,pearson_w,pearson_w126,pearson_w252,pearson_w504,ewma504,"
    "shrink_market504,shrink_pca504,sector,pca,window,dtw"
)
REQUIRED = ("random", "pearson", "oracle")  # the report's gap closed and differences need them


@dataclass
class EvaluationPlan:
    """What will be scored: the retrievers, the query positions and the period, with the notes the
    report carries. `added` names the required baselines that were not asked for, `starts` the models'
    classical starts that were not (what training added is measured against them)."""

    panel: Panel
    retrievers: list
    models: list[FasclRetriever]
    positions: object
    config: EvalConfig
    test_start: str
    test_end: str | None
    added: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    starts: list[str] = field(default_factory=list)


@dataclass
class EvaluationOutcome:
    summary: dict
    files: dict[str, Path]
    notes: list[str]
    config: EvalConfig
    seconds: float


def parse_model_specs(specs: list[str] | None) -> list[tuple[str, Path]]:
    """`LABEL=PATH` or `PATH` (labelled fascl, or by its folder when several are unlabelled)."""
    parsed = []
    for spec in specs or []:
        label, sep, path = spec.partition("=")
        if not sep:
            label, path = "", spec
        parsed.append((label.strip(), Path(path.strip())))
    unlabelled = [p for label, p in parsed if not label]
    out = []
    for label, path in parsed:
        if not label:
            label = "fascl" if len(unlabelled) == 1 else (path.parent.name if path.suffix else path.name)
        out.append((label, path))
    labels = [label for label, _ in out]
    if len(set(labels)) != len(labels):
        raise EvaluationRefused(f"model labels must be unique, got {labels}; use --model LABEL=PATH")
    return out


def plan_evaluation(
    panel: Panel,
    *,
    methods: str = DEFAULT_METHODS,
    models: list[str] | None = None,
    test_start: str | None = None,
    test_end: str | None = None,
    stride: int = 16,
    bootstrap: int = 1000,
    dtw_queries: int = 1500,
    seed: int = 0,
) -> EvaluationPlan:
    """Check the request and decide what runs; raises EvaluationRefused with the reason."""
    names = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in BASELINES]
    if unknown:
        raise EvaluationRefused(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
    added = [m for m in REQUIRED if m not in names]
    names = [m for m in names if m != "oracle"] + [m for m in added if m != "oracle"]

    loaded = []
    try:
        for label, path in parse_model_specs(models):
            loaded.append(FasclRetriever.from_checkpoint(path, name=label))
    except (CheckpointError, ValueError) as exc:
        raise EvaluationRefused(str(exc)) from None
    clash = [r.name for r in loaded if r.name in BASELINES]
    if clash:
        raise EvaluationRefused(f"model label(s) {', '.join(clash)} clash with baseline names")

    if test_start is None:
        splits = loaded[0].meta.get("splits") if loaded else None
        if splits:
            test_start, test_end = splits["test_start"], test_end or splits.get("test_end")
        else:
            test_start = default_splits(panel.dates).test_start
    notes = model_warnings(panel, loaded, test_start)

    config = EvalConfig(stride=stride, bootstrap=bootstrap, seed=seed)
    positions = query_positions(panel.dates, test_start, test_end, config.horizon)[::stride]
    retrievers = [
        make_baseline(n, **({"max_queries": dtw_queries or None} if n == "dtw" else {})) for n in names
    ]
    # What training added is measured against each model's classical start: evaluate it too.
    starts = []
    for model in loaded:
        if model.start is not None and model.start not in [r.name for r in retrievers]:
            retrievers.append(start_retriever(model.model.config))
            starts.append(model.start)
    retrievers += loaded + [make_baseline("oracle")]
    return EvaluationPlan(
        panel, retrievers, loaded, positions, config, str(test_start), test_end, added, notes, starts
    )


def model_warnings(panel: Panel, models: list[FasclRetriever], test_start) -> list[str]:
    """What the report should say about models that may have seen the test period or other data."""
    notes = []
    fingerprint = panel.fingerprint() if models else None
    for r in models:
        model_test = (r.meta.get("splits") or {}).get("test_start")
        if model_test and str(model_test) > str(test_start):
            notes.append(
                f"warning: `{r.name}` was trained/validated up to {model_test}, after the test start {test_start}"
            )
        seen = (r.meta.get("data") or {}).get("fingerprint")
        if seen and seen != fingerprint:
            notes.append(
                f"`{r.name}` was trained on other data (fingerprint {seen}, this panel {fingerprint})"
            )
    return notes


def run_evaluation(
    plan: EvaluationPlan,
    out: Path,
    *,
    data_name: str,
    data_path: Path,
    on_step: Callable[[str, int], None] | None = None,
) -> EvaluationOutcome:
    """Score every retriever of the plan on its query dates, summarise with the date-block
    bootstrap and write the report (metrics.json, report.md, figures) to `out`."""
    started = time.perf_counter()
    config = plan.config
    try:
        ctx, local = prepare_context(
            plan.panel, plan.positions, config, lookback=history_needed(plan.retrievers, config.window)
        )
        result = score_methods(ctx, plan.retrievers, local, config, on_step=on_step)
        notes = list(plan.notes)
        dtw = next((r for r in plan.retrievers if isinstance(r, DTWRetriever)), None)
        if dtw is not None and dtw.max_queries and result.queries_per_date.max() > 2 * dtw.max_queries:
            notes.append(
                f"DTW (Sakoe-Chiba band {dtw.band} days, z-scored close path) scores a random subsample of "
                f"{dtw.max_queries} queries, against every candidate, on dates with more than "
                f"{2 * dtw.max_queries} eligible assets; its metrics are over the queries it scored and its "
                "difference to Pearson is paired on them"
            )
        summary = summarize(result)
        info = {
            "data": data_name,
            "data_path": str(data_path),
            "assets": int(plan.panel.n_assets),
            "test_start": plan.test_start,
            "test_end": str(plan.test_end) if plan.test_end else None,
            "models": {r.name: r.path for r in plan.models},
            "notes": notes,
            "elapsed_s": time.perf_counter() - started,
        }
        files = write_report(summary, result, out, info)
    except ValueError as exc:
        raise EvaluationRefused(str(exc)) from None
    return EvaluationOutcome(summary, files, notes, config, time.perf_counter() - started)
