"""End-to-end trainer runs on a tiny synthetic market: files, checkpoints, resume, seeds, loss kinds."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil

import numpy as np
import pytest
import torch
from rich.console import Console

from market.synthetic import generate
from model.checkpoint import CheckpointError, load_encoder, read_checkpoint
from model.encoder import PatchTransformer, encoder_config
from model.features import build_cube
from model.splits import default_splits
from model.targets import future_complete
from model.train import TrainConfig, Validator, train

BASE = TrainConfig(
    encoder="tiny", batch_size=32, epochs=2, steps_per_epoch=5, warmup_epochs=1, threads=1, seed=0
)


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


def _run(panel, out_dir, config=BASE, **kwargs):
    return train(panel, config, out_dir, console=_quiet(), **kwargs)


def _log(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def panel():
    return generate(40, 3, seed=0).panel


@pytest.fixture(scope="module")
def run(panel, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = _run(panel, out, data_source="synthetic:test")
    return out, result


# ------------------------------------------------------------------ outputs
def test_run_writes_checkpoints_logs_and_summary(run):
    out, result = run
    for name in ("best.pt", "last.pt", "log.jsonl", "config.json", "summary.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.tmp"))
    log = _log(out)
    assert [r["epoch"] for r in log] == [-1, 0, 1]
    start = log.pop(0)  # step 0: the encoder before training, scored beside the classical retrievers
    assert start["step"] == 0 and start["valid_frc1"] == pytest.approx(
        start["baseline_valid_frc1"]["shrink_market32"]
    )
    assert result.start_valid_frc == start["valid_frc1"]
    assert set(result.baseline_valid_frc) == {"pearson", "shrink_market32"}
    for record in log:
        assert 0.0 < record["valid_frc1"] <= 1.0
        assert 0.0 < record["pearson_valid_frc1"] <= 1.0
        assert np.isfinite(record["loss"]) and record["loss"] >= 0
    assert log[0]["pearson_valid_frc1"] == log[1]["pearson_valid_frc1"]
    assert log[0]["samples"] == 5 * 32 and log[1]["samples"] == 10 * 32
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["steps"] == 10
    assert summary["stopped_because"] == "finished all epochs"
    assert summary["best_valid_frc"] == pytest.approx(max(r["valid_frc1"] for r in [start, *log]))
    assert summary["gain_over_start"] == pytest.approx(summary["best_valid_frc"] - start["valid_frc1"])
    assert summary["classical_start"] == "shrink_market32"
    assert 0 < summary["valid_share"] < 1
    assert summary["out_dir"] == str(out)
    assert result.epochs_run == 2 and result.steps == 10
    config = json.loads((out / "config.json").read_text())
    assert config["train_config"] == BASE.to_dict()
    assert config["encoder_config"]["width"] == 32 and config["encoder_config"]["in_channels"] == 6
    assert config["data"]["source"] == "synthetic:test"


def test_checkpoint_contents(run, panel):
    out, _ = run
    last = read_checkpoint(out / "last.pt")
    keys = ("model_state", "optimizer_state", "scheduler_state", "encoder_config", "train_config", "splits")
    for key in keys:
        assert key in last, key
    assert last["epoch"] == 1
    assert last["train_config"] == BASE.to_dict()
    assert last["encoder_config"] == encoder_config("tiny", in_channels=6).to_dict()
    assert last["data"]["fingerprint"] == panel.fingerprint()
    assert last["data"]["assets"] == 40
    assert last["data"]["first_date"] == str(panel.dates[0])
    assert last["data"]["last_date"] == str(panel.dates[-1])
    assert last["splits"] == default_splits(panel.dates).to_dict()
    assert last["scheduler_state"]["step"] == 10 and last["scheduler_state"]["seconds"] > 0
    assert last["optimizer_state"]["state"]  # AdamW moments were saved
    assert [h["epoch"] for h in last["history"]] == [0, 1]
    assert last["tau"] == pytest.approx(BASE.tau)  # a fixed temperature stays fixed
    model = PatchTransformer(encoder_config("tiny", in_channels=6))
    model.load_state_dict(last["model_state"])  # strict: every key present, shapes right
    best = read_checkpoint(out)  # a directory means its best.pt
    log = _log(out)
    assert best["best_valid_frc"] == pytest.approx(max(r["valid_frc1"] for r in log))
    assert {r["epoch"]: r for r in log}[best["epoch"]]["valid_frc1"] == pytest.approx(best["best_valid_frc"])


def test_load_encoder_reproduces_the_trained_models_validation_score(run, panel):
    out, _ = run
    for name in ("best.pt", "last.pt"):
        model, meta = load_encoder(out / name)
        assert not model.training
        assert not any(key.endswith("_state") for key in meta)
        assert meta["data"]["fingerprint"] == panel.fingerprint()
        cube = build_cube(panel, BASE.channels, history=model.config.history)
        pool = cube.eligible & future_complete(cube.close)
        positions = default_splits(panel.dates).positions(panel.dates)["valid"]
        validator = Validator(cube, positions, BASE, pool, model.config)
        score = validator.frc_at_1(model, torch.device("cpu"))
        assert score == pytest.approx(
            {r["epoch"]: r for r in _log(out)}[meta["epoch"]]["valid_frc1"], abs=1e-9
        )
        assert validator.pearson_frc == pytest.approx(meta["pearson_valid_frc"])
        # embeddings equal the raw state dict loaded by hand
        state = torch.load(out / name, weights_only=False)
        twin = PatchTransformer(encoder_config("tiny", in_channels=6))
        twin.load_state_dict(state["model_state"])
        twin.eval()
        x = cube.model_inputs(400, np.arange(10))
        with torch.no_grad():
            assert torch.equal(model(*x), twin(*x))


# -------------------------------------------------------------------- resume
def test_resume_continues_where_it_stopped(run, panel, tmp_path):
    out, _ = run
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    before = read_checkpoint(resumed / "last.pt")
    result = _run(panel, resumed, dataclasses.replace(BASE, epochs=3), resume=True)
    assert result.epochs_run == 1 and result.steps == 5
    log = _log(resumed)
    assert [r["epoch"] for r in log] == [-1, 0, 1, 2]
    assert log[:3] == _log(out)  # the first lines are the old run's
    after = read_checkpoint(resumed / "last.pt")
    assert after["epoch"] == 2
    assert after["scheduler_state"]["step"] == 15
    # AdamW's step count continued from the checkpoint (a restart would be at 5)
    assert float(after["optimizer_state"]["state"][0]["step"]) == 15
    assert [h["epoch"] for h in after["history"]] == [0, 1, 2]
    assert not _states_equal(before["model_state"], after["model_state"])
    # nothing left to do: a second resume at epochs=3 trains no more
    again = _run(panel, resumed, dataclasses.replace(BASE, epochs=3), resume=True)
    assert again.epochs_run == 0 and again.steps == 0
    assert len(_log(resumed)) == 4


def test_resume_with_another_configuration_raises(run, panel, tmp_path):
    out, _ = run
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    with pytest.raises(ValueError, match="another configuration"):
        _run(panel, resumed, dataclasses.replace(BASE, epochs=3, channels="close"), resume=True)
    with pytest.raises(ValueError, match="another configuration"):
        _run(panel, resumed, dataclasses.replace(BASE, epochs=3, encoder="small"), resume=True)


def test_resume_from_an_earlier_trainers_checkpoint_raises(run, panel, tmp_path):
    out, _ = run
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    state = read_checkpoint(resumed / "last.pt")
    del state["tau"]
    state["scheduler_state"] = {"last_epoch": 10}  # what LambdaLR saved
    torch.save(state, resumed / "last.pt")
    with pytest.raises(ValueError, match="earlier version of the trainer"):
        _run(panel, resumed, dataclasses.replace(BASE, epochs=3), resume=True)


def test_resume_from_a_corrupt_checkpoint_raises(run, panel, tmp_path):
    out, _ = run
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    data = (resumed / "last.pt").read_bytes()
    (resumed / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="last.pt"):
        _run(panel, resumed, dataclasses.replace(BASE, epochs=3), resume=True)


# ---------------------------------------------------------------- seeds
def test_same_seed_gives_identical_weights(run, panel, tmp_path):
    out, _ = run
    _run(panel, tmp_path / "again")
    first = read_checkpoint(out / "last.pt")
    second = read_checkpoint(tmp_path / "again" / "last.pt")
    assert _states_equal(first["model_state"], second["model_state"])
    assert [r.get("loss") for r in _log(out)] == [r.get("loss") for r in _log(tmp_path / "again")]
    _run(panel, tmp_path / "other", dataclasses.replace(BASE, seed=1))
    third = read_checkpoint(tmp_path / "other" / "last.pt")
    assert not _states_equal(first["model_state"], third["model_state"])


# ------------------------------------------------------------ checkpoints
def test_corrupt_checkpoint_raises_checkpoint_error_with_the_path(run, tmp_path):
    out, _ = run
    data = (out / "best.pt").read_bytes()
    for size in (len(data) // 2, 100, 0):
        broken = tmp_path / f"broken_{size}.pt"
        broken.write_bytes(data[:size])
        with pytest.raises(CheckpointError) as info:
            read_checkpoint(broken)
        assert str(broken) in str(info.value)
        with pytest.raises(CheckpointError):
            load_encoder(broken)


def test_missing_or_foreign_checkpoint_raises(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        read_checkpoint(tmp_path / "nothing.pt")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        read_checkpoint(tmp_path)  # a directory without best.pt
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a FASCL checkpoint"):
        read_checkpoint(foreign)


# ------------------------------------------------------------ other runs
@pytest.mark.parametrize("loss", ["hard", "observed"])
def test_other_loss_kinds_train(panel, tmp_path, loss):
    config = dataclasses.replace(BASE, loss=loss, epochs=1, steps_per_epoch=4, tau=None)
    result = _run(panel, tmp_path, config)
    assert result.steps == 4
    log = _log(tmp_path)[1:]
    assert len(log) == 1 and np.isfinite(log[0]["loss"]) and log[0]["loss"] > 0
    state = read_checkpoint(tmp_path / "last.pt")
    assert state["train_config"]["loss"] == loss
    assert 0.002 <= state["tau"] <= 0.6  # calibrated with this loss and its targets, then learned


def test_close_only_channels_train(panel, tmp_path):
    config = dataclasses.replace(BASE, channels="close", epochs=1, steps_per_epoch=3)
    _run(panel, tmp_path, config)
    model, meta = load_encoder(tmp_path)
    assert meta["encoder_config"]["in_channels"] == 1
    cube = build_cube(panel, "close", history=model.config.history)
    assert model(*cube.model_inputs(400, np.arange(2))).shape == (2, model.dim)


def test_training_lowers_the_loss(panel, tmp_path):
    """The paper's encoder (no history path) from random weights: the loss must fall."""
    config = dataclasses.replace(BASE, epochs=4, steps_per_epoch=15, seed=3, encoder_overrides={"history": 0})
    _run(panel, tmp_path, config)
    log = _log(tmp_path)[1:]
    assert len(log) == 4
    assert log[-1]["loss"] < 0.7 * log[0]["loss"]
    assert log[-1]["lr"] == pytest.approx(config.min_lr)


def test_time_budget_stops_cleanly(panel, tmp_path):
    result = _run(panel, tmp_path, dataclasses.replace(BASE, epochs=5, max_minutes=0.0))
    assert result.epochs_run == 1
    assert "time budget" in result.stopped_because
    assert (tmp_path / "last.pt").is_file() and len(_log(tmp_path)) == 2


def test_explicit_splits_are_recorded(panel, tmp_path):
    config = dataclasses.replace(
        BASE, epochs=1, steps_per_epoch=2, valid_start="2010-10-01", test_start="2011-09-01"
    )
    _run(panel, tmp_path, config)
    splits = read_checkpoint(tmp_path / "last.pt")["splits"]
    assert (splits["valid_start"], splits["test_start"]) == ("2010-10-01", "2011-09-01")


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    from model.train import lr_factor

    assert lr_factor(0.0, 0.1, 0.01) == pytest.approx(1e-3)  # a first step is never at exactly 0
    assert lr_factor(0.05, 0.1, 0.01) == pytest.approx(0.5)
    assert lr_factor(0.1, 0.1, 0.01) == pytest.approx(1.0)
    assert lr_factor(0.55, 0.1, 0.01) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(1.0, 0.1, 0.01) == pytest.approx(0.01)
    assert lr_factor(3.0, 0.1, 0.01) == pytest.approx(0.01)  # past the budget it stays at the floor
    factors = [lr_factor(p, 0.1, 0.01) for p in np.linspace(0.1, 1, 50)]
    assert all(a >= b for a, b in zip(factors, factors[1:], strict=False))


def test_the_start_is_chosen_on_validation(panel, tmp_path):
    """With candidates, the history path starts as the classical estimator of best validation FRC@1,
    and step 0 scores exactly that estimator."""
    config = dataclasses.replace(
        BASE, epochs=1, steps_per_epoch=2, history_choices=(16, 32, 96), shrink_choices=(0.0, 0.2)
    )
    result = _run(panel, tmp_path, config)
    summary = json.loads((tmp_path / "summary.json").read_text())
    choices = summary["start_choices"]
    assert set(choices) == {
        "pearson_w16",
        "shrink_market16",
        "pearson_w32",
        "shrink_market32",
        "pearson_w96",
        "shrink_market96",
    }
    chosen = max(choices, key=choices.get)
    assert summary["classical_start"] == chosen
    assert result.start_valid_frc == pytest.approx(choices[chosen], abs=1e-12)
    assert result.baseline_valid_frc[chosen] == pytest.approx(choices[chosen], abs=1e-12)
    state = read_checkpoint(tmp_path / "last.pt")
    length = int(chosen.removeprefix("shrink_market").removeprefix("pearson_w"))
    assert state["encoder_config"]["history"] == length
    assert state["encoder_config"]["history_shrink"] == (0.2 if chosen.startswith("shrink") else 0.0)
    # the same choice again on resume: the configuration matches and training continues
    again = _run(panel, tmp_path, dataclasses.replace(config, epochs=2), resume=True)
    assert again.epochs_run == 1


def test_train_days_trains_on_the_end_of_the_training_split_only(panel, tmp_path, monkeypatch):
    """`train_days`: every training step draws its date from the last N days of the training split."""
    import model.train as trainer

    drawn: list[int] = []
    real = trainer.training_target

    def spy(cube, t, assets, loss):
        drawn.append(int(t))
        return real(cube, t, assets, loss)

    monkeypatch.setattr(trainer, "training_target", spy)
    config = dataclasses.replace(BASE, epochs=1, steps_per_epoch=12, train_days=30)
    _run(panel, tmp_path, config)
    last = int(default_splits(panel.dates).positions(panel.dates)["train"][-1])
    assert len(drawn) == 12 and all(last - 30 < t <= last for t in drawn)
    assert len(set(drawn)) > 1


def test_the_prior_and_the_recent_block_learn_from_their_zero_start(panel, tmp_path):
    """The two scalars that start at zero (the recent block's gain and the prior's weight) move under
    the expected-correlation loss, and their group has its own learning rate."""
    config = dataclasses.replace(
        BASE, epochs=1, steps_per_epoch=5, loss="expected", tau=0.01, prior_lr_scale=10.0
    )
    _run(panel, tmp_path, config)
    state = read_checkpoint(tmp_path / "last.pt")["model_state"]
    assert state["history.prior_weight"].abs().item() > 1e-3
    assert state["history.recent_gain"].abs().item() > 1e-3
    assert state["prior_join.weight"].abs().sum().item() > 0
    record = _log(tmp_path)[-1]
    assert record["prior_weight"] == pytest.approx(state["history.prior_weight"].item())


def test_parameter_groups_give_the_zero_started_scalars_their_own_rate():
    from model.train import parameter_groups

    model = PatchTransformer(encoder_config("tiny", history=32))
    groups = parameter_groups(model, 0.05, history_lr_scale=0.1, prior_lr_scale=10.0)
    names = {id(p): n for n, p in model.named_parameters()}
    by_scale = {
        g.get("lr_scale", 1.0): {names[id(p)] for p in g["params"]} for g in groups if g.get("lr_scale")
    }
    assert by_scale[10.0] == {"history.recent_gain", "history.prior_weight"}
    assert "history.bound" in by_scale[0.1] and "history.recent_gain" not in by_scale[0.1]
    decayed = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert "prior_join.weight" not in decayed and "join.weight" not in decayed
    assert all(sum(id(p) in {id(q) for q in g["params"]} for g in groups) == 1 for p in model.parameters())


def test_the_small_preset_trains_with_the_expected_correlation_loss_and_calibrates_the_kl_losses():
    from model.train import preset_config

    small = preset_config("small")
    assert (small.loss, small.tau, small.train_days) == ("expected", 0.01, 252)
    assert preset_config("small", loss="soft").tau is None  # calibrated at step 0, then learned
    assert preset_config("small", loss="soft", tau=0.05).tau == 0.05
    assert preset_config("paper").loss == "soft" and preset_config("paper").tau == 0.01


@pytest.mark.parametrize("recorded, dropped", [(-1.0, True), (2.0, False)])
def test_a_transformer_that_adds_nothing_on_validation_is_dropped(run, panel, tmp_path, recorded, dropped):
    """best.pt is scored again with the Transformer's joins at zero: where that is not worse than the
    validation FRC@1 it was kept for, best.pt is rewritten without them; otherwise it stays as it is."""
    from model.checkpoint import save_checkpoint
    from model.train import drop_an_idle_transformer

    out, _ = run
    state = read_checkpoint(out / "last.pt")
    enc = encoder_config("tiny", **{k: v for k, v in state["encoder_config"].items() if k != "in_channels"})
    with torch.no_grad():
        state["model_state"]["join.weight"].normal_(0, 0.1)
        state["model_state"]["prior_join.weight"].normal_(0, 0.1)
    state["best_valid_frc"] = recorded
    file = tmp_path / "best.pt"
    save_checkpoint(state, file)
    cube = build_cube(panel, "ohlcva", history=enc.history)
    pool = cube.eligible & future_complete(cube.close)
    positions = default_splits(panel.dates).positions(panel.dates)["valid"]
    validator = Validator(cube, positions, BASE, pool)
    got = drop_an_idle_transformer(file, enc, validator, torch.device("cpu"), False)
    assert got["dropped"] == dropped and got["with"] == recorded
    kept = read_checkpoint(file)
    assert kept["model_state"]["join.weight"].any() != dropped
    assert kept["model_state"]["prior_join.weight"].any() != dropped
    if dropped:
        assert kept["best_valid_frc"] == got["without"] and kept["transformer_dropped"]["with"] == recorded
        assert drop_an_idle_transformer(file, enc, validator, torch.device("cpu"), False) is None
    else:
        assert kept["best_valid_frc"] == recorded
