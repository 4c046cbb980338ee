"""The patch Transformer encoder: shapes, unit norm, sizes, ablation switches and determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from model.encoder import (
    CONFIGS,
    EncoderConfig,
    PatchTransformer,
    count_parameters,
    encoder_config,
    recent_rows,
)
from model.history import daily_returns, history_zscores, market_direction, shrink_to_market, winsorized_rows
from model.loss import as_queries, similarity


def _x(batch: int, channels: int = 6, window: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, channels, window, generator=torch.Generator().manual_seed(seed))


def _model(name: str, seed: int = 0, **overrides) -> PatchTransformer:
    """The Transformer alone (no history path) unless `history` is given."""
    torch.manual_seed(seed)
    overrides.setdefault("history", 0)
    return PatchTransformer(encoder_config(name, **overrides)).eval()


@pytest.mark.parametrize("name, width", [("tiny", 32), ("small", 128)])
def test_output_shape_and_unit_norm(name, width):
    model = _model(name)
    assert model.dim == width
    with torch.no_grad():
        z = model(_x(7))
    assert z.shape == (7, width)
    assert z.dtype == torch.float32
    torch.testing.assert_close(z.norm(dim=1), torch.ones(7))
    # different windows give different embeddings
    assert (z[0] - z[1]).abs().max() > 1e-4


def test_paper_config_has_about_14m_parameters_and_matches_the_spec():
    config = CONFIGS["paper"]
    assert (config.width, config.depth, config.heads, config.patch, config.window) == (384, 8, 8, 4, 64)
    assert config.pooling == "mean" and not config.projection_head and config.dropout > 0
    n = count_parameters(PatchTransformer(config))
    assert 13_000_000 < n < 15_000_000


def test_small_config_is_under_2m_parameters():
    n = count_parameters(PatchTransformer(CONFIGS["small"]))
    assert 500_000 < n < 2_000_000
    assert count_parameters(PatchTransformer(CONFIGS["tiny"])) < n
    assert CONFIGS["small"].history == 504 and CONFIGS["paper"].history == 0


def test_paper_config_forward():
    model = _model("paper")
    with torch.no_grad():
        z = model(_x(2))
    assert z.shape == (2, 384)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2))


def test_encoder_config_overrides_and_unknown_name():
    config = encoder_config("small", in_channels=1, dropout=None, width=64)
    assert config.in_channels == 1 and config.width == 64
    assert config.dropout == CONFIGS["small"].dropout  # None means "keep"
    with pytest.raises(ValueError, match="choose one of paper, small, tiny"):
        encoder_config("huge")
    assert EncoderConfig(**config.to_dict()) == config


@pytest.mark.parametrize("channels", [1, 7])
def test_other_channel_counts(channels):
    model = _model("tiny", in_channels=channels)
    with torch.no_grad():
        assert model(_x(3, channels)).shape == (3, 32)
    with pytest.raises(RuntimeError):
        model(_x(3, 6 if channels != 6 else 1))


def test_cls_pooling():
    model = _model("tiny", pooling="cls")
    assert model.cls is not None
    assert model.position.shape == (1, 64 // 4 + 1, 32)
    with torch.no_grad():
        z = model(_x(4))
    assert z.shape == (4, 32)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(4))
    assert _model("tiny").cls is None
    with pytest.raises(ValueError, match="pooling"):
        PatchTransformer(encoder_config("tiny", pooling="max"))


def test_projection_head():
    plain, headed = _model("tiny"), _model("tiny", projection_head=True)
    assert plain.head is None and headed.head is not None
    assert count_parameters(headed) == count_parameters(plain) + 2 * (32 * 32 + 32)
    with torch.no_grad():
        z = headed(_x(4))
    assert z.shape == (4, 32)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(4))


@pytest.mark.parametrize("window, patch", [(62, 4), (64, 5), (64, 128)])
def test_window_not_divisible_by_patch_raises(window, patch):
    with pytest.raises(ValueError, match=f"window {window} is not a multiple of patch {patch}"):
        PatchTransformer(dataclasses.replace(CONFIGS["tiny"], window=window, patch=patch))


def test_other_window_and_patch():
    model = PatchTransformer(dataclasses.replace(CONFIGS["tiny"], window=32, patch=8, history=0)).eval()
    with torch.no_grad():
        assert model(_x(2, window=32)).shape == (2, 32)


def test_eval_mode_is_deterministic_and_train_mode_drops_out():
    model = _model("tiny", dropout=0.5)  # eval() already
    x = _x(6)
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a, b)
    model.train()
    with torch.no_grad():
        c, d = model(x), model(x)
    assert not torch.equal(c, d)  # so eval mode is what makes a and b equal


def test_same_seed_same_weights():
    a, b, c = _model("tiny", seed=1), _model("tiny", seed=1), _model("tiny", seed=2)
    x = _x(3)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert not torch.equal(a(x), c(x))


def test_batch_of_one_matches_the_batched_output():
    model = _model("tiny")
    x = _x(5)
    with torch.no_grad():
        batched = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(5)])
    assert single.shape == (5, 32)
    torch.testing.assert_close(single, batched, atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_parameter():
    model = _model("tiny").train()
    z = model(_x(4))
    (z @ z.T).triu(1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


# ------------------------------------------------------------ history path
def _history_inputs(batch: int, length: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    # heavy tails, so that the winsorising bound matters, and a common factor, so the market does
    factor = torch.randn(1, length, generator=g)
    z = factor + torch.distributions.StudentT(3.0).sample((batch, length)) * 0.8
    z = (z - z.mean(dim=1, keepdim=True)) / z.std(dim=1, keepdim=True)
    rows = winsorized_rows(z.double().numpy())
    return z, torch.from_numpy(market_direction(rows)).float()


@pytest.mark.parametrize("prior", [True, False])
def test_history_path_at_start_scores_exactly_the_shrunk_correlation_retriever(prior):
    model = _model("tiny", history=48, seed=3, prior=prior)
    assert not model.unit_norm and model.dim == 48 + prior and model.query_prior == prior
    z, market = _history_inputs(20, 48)
    with torch.no_grad():
        e = model(_x(20), z, market)
    scores = similarity(e, unit_norm=False, query_prior=prior).numpy()
    rows = winsorized_rows(z.double().numpy(), 2.5)
    classical = shrink_to_market(rows, market.double().numpy(), 0.2)
    np.testing.assert_allclose(scores, classical @ classical.T, atol=1e-6)
    # the same ranking for every query, not just close scores
    np.testing.assert_array_equal(
        np.argsort(-scores, axis=1)[:, :5], np.argsort(-(classical @ classical.T), axis=1)[:, :5]
    )
    body = e[:, :-1] if prior else e
    assert (body.norm(dim=1) <= 1 + 1e-6).all()
    if prior:  # the recent block's gain and the prior start at zero
        assert (e[:, -1] == 0).all()
    # market given per row (as the feature cube gives it for batches of several dates) is the same
    with torch.no_grad():
        torch.testing.assert_close(model(_x(20), z, market.expand(20, -1)), e)


def test_history_path_with_another_bound_and_shrink():
    model = _model("tiny", history=48, history_bound=1.5, history_shrink=0.5)
    z, market = _history_inputs(10, 48, seed=1)
    with torch.no_grad():
        e = model(_x(10), z, market)
    classical = shrink_to_market(winsorized_rows(z.double().numpy(), 1.5), market.double().numpy(), 0.5)
    np.testing.assert_allclose((e @ e.T).numpy(), classical @ classical.T, atol=1e-6)


def test_gate_at_zero_means_the_transformer_changes_nothing_until_it_opens():
    model = _model("tiny", history=48).train()
    z, market = _history_inputs(8, 48)
    e = model(_x(8), z, market)
    e2 = model(_x(8, seed=9), z, market)  # other windows, same history
    torch.testing.assert_close(e, e2)
    similarity(e, False, True).triu(1).sum().backward()
    # the zero gates learn from step 0: the join, the prior's join, the recent gain, the prior weight
    assert model.join.weight.grad.abs().sum() > 0
    assert model.prior_join.weight.grad.abs().sum() > 0
    assert model.history.recent_gain.grad.abs() > 0 and model.history.prior_weight.grad.abs() > 0
    assert model.history.log_day_weight.grad.abs().sum() > 0
    assert model.patch_embed.weight.grad.abs().sum() == 0  # the Transformer waits for the gate
    model.zero_grad()
    with torch.no_grad():
        model.join.weight.normal_(0, 0.01)
        model.prior_join.weight.normal_(0, 0.01)
        model.history.up.fill_(0.01)  # like LoRA, `down` learns once `up` has left 0
    e = model(_x(8), z, market)
    assert not torch.allclose(e, model(_x(8, seed=9), z, market))
    similarity(e, False, True).triu(1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_inference_with_a_zero_join_skips_the_transformer_exactly(monkeypatch):
    """With the join still zero (training kept the classical start) the Transformer cannot change an
    embedding: inference does not run it and gives the same bits; training always runs it."""
    model = _model("small", history=504, seed=2)
    z, market = _history_inputs(16, 504)
    with torch.enable_grad():  # the full path, Transformer included
        full = model(_x(16), z, market).detach()
    calls = []
    monkeypatch.setattr(model.blocks, "forward", lambda x: calls.append(1) or x)
    with torch.inference_mode():
        fast = model(_x(16), z, market)
    assert calls == [] and torch.equal(fast, full)
    with torch.no_grad():
        model.join.weight[0, 0] = 1e-3  # one weight off zero: the Transformer counts again
        model(_x(16), z, market)
        model.join.weight.zero_()
        model.prior_join.weight[0, 0] = 1e-3  # and through the candidate prior as well
        model(_x(16), z, market)
    assert calls == [1, 1]


def test_recent_rows_are_the_winsorised_rows_of_the_last_days_alone():
    """The recent block re-scores the long-history z-scores of its last days: the same rows as
    z-scoring those days' returns directly, gaps (missing closes) included."""
    rng = np.random.default_rng(4)
    close = 50 * np.exp(np.cumsum(rng.standard_t(3, size=(120, 6)) * 0.02, axis=0))
    close[[30, 95, 96, 110], [1, 2, 2, 4]] = np.nan
    close[:40, 5] = np.nan  # an asset younger than the history
    returns, t, assets = daily_returns(close), 119, np.arange(6)
    z = torch.from_numpy(history_zscores(returns, t, assets, 100))
    got = recent_rows(z[:, -30:], 2.5).numpy()
    np.testing.assert_allclose(got, winsorized_rows(history_zscores(returns, t, assets, 30), 2.5), atol=1e-12)


def test_the_prior_is_an_additive_score_of_the_candidate():
    """With the prior's coordinate p, the score of j for i is e_i . e_j + p_j, for any query."""
    model = _model("tiny", history=48, seed=5)
    z, market = _history_inputs(12, 48)
    with torch.no_grad():
        model.history.prior_weight.fill_(0.3)
        model.history.recent_gain.fill_(0.2)
        v = model(_x(12), z, market)
    e, p = v[:, :-1], v[:, -1]
    assert p.abs().max() > 0
    torch.testing.assert_close(similarity(v, False, True), e @ e.T + p[None, :])
    torch.testing.assert_close(as_queries(v, True)[:, -1], torch.ones(12))
    assert torch.equal(as_queries(v, False), v)


def test_history_path_needs_its_inputs():
    model = _model("tiny", history=48)
    with pytest.raises(ValueError, match="history path"):
        model(_x(2))
    with pytest.raises(ValueError, match="history_shrink"):
        PatchTransformer(encoder_config("tiny", history=48, history_shrink=1.0))


def test_history_path_stays_exact_under_bf16_autocast():
    model = _model("tiny", history=48, seed=3)
    z, market = _history_inputs(20, 48)
    with torch.no_grad():
        model.history.up.normal_(0, 0.05)  # a learned low-rank correction: a matmul autocast would take
        plain = model(_x(20), z, market)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            mixed = model(_x(20), z, market)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain, atol=1e-6, rtol=1e-6)
