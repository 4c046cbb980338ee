"""The evaluation job's policy (fascl/jobs/evaluation.py): which methods run, over which dates,
and what the report warns about."""

from __future__ import annotations

import pytest

from fascl.jobs.errors import EvaluationRefused
from fascl.jobs.evaluation import REQUIRED, parse_model_specs, plan_evaluation


def test_unknown_methods_are_refused_with_the_valid_ones(sample):
    with pytest.raises(EvaluationRefused, match=r"unknown method\(s\) nope; choose from .*pearson"):
        plan_evaluation(sample.panel, methods="pearson,nope")


def test_the_baselines_the_report_needs_are_added_and_the_oracle_runs_last(sample):
    plan = plan_evaluation(sample.panel, methods="pearson_w", stride=8, bootstrap=0)
    assert plan.added == [m for m in REQUIRED if m != "pearson_w"]
    names = [r.name for r in plan.retrievers]
    assert names[0] == "pearson_w" and names[-1] == "oracle"
    assert set(REQUIRED) <= set(names)
    assert len(plan.positions) > 0 and (plan.positions[1:] - plan.positions[:-1] == 8).all()


def test_a_model_is_labelled_and_its_splits_set_the_default_test_period(sample):
    plan = plan_evaluation(sample.panel, methods="pearson", models=[str(sample.checkpoint)], bootstrap=0)
    assert [m.name for m in plan.models] == ["fascl"]
    assert plan.test_start == "2011-03-01"  # the sample model's test split
    assert not plan.notes  # trained on this very panel, validated before its test start


def test_a_model_validated_past_the_test_start_is_warned_about(sample):
    plan = plan_evaluation(
        sample.panel,
        methods="pearson",
        models=[f"m={sample.checkpoint}"],
        test_start="2010-12-01",
        bootstrap=0,
    )
    assert any("after the test start 2010-12-01" in note for note in plan.notes)


def test_labels_must_be_unique_and_must_not_shadow_a_baseline(sample):
    with pytest.raises(EvaluationRefused, match="model labels must be unique"):
        parse_model_specs([f"a={sample.checkpoint}", f"a={sample.checkpoint}"])
    with pytest.raises(EvaluationRefused, match="clash with baseline names"):
        plan_evaluation(sample.panel, methods="pearson", models=[f"pearson={sample.checkpoint}"])


def test_a_models_classical_start_is_evaluated_beside_it(sample):
    """What training added needs the model's start on the same queries: it is added when not asked for
    (built with the encoder's own history length and shrinkage), and counts as a classical retriever."""
    from model.evaluate import best_classical, evaluate
    from model.retrievers import EvalContext

    plan = plan_evaluation(sample.panel, methods="pearson", models=[str(sample.checkpoint)], bootstrap=0)
    model = plan.models[0]
    assert model.start == "shrink_market32" and plan.starts == [model.start]  # not a registered baseline
    start = next(r for r in plan.retrievers if r.name == model.start)
    assert (start.length, start.shrink) == (32, model.model.config.history_shrink)
    assert [r.name for r in plan.retrievers][-2:] == ["fascl", "oracle"]
    result = evaluate(EvalContext(sample.panel), plan.retrievers, plan.positions[:2], plan.config)
    assert result.starts == {"fascl": model.start}
    assert best_classical(result) in ("pearson", model.start)  # the start counts as classical
