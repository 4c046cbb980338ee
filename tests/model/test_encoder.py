"""The patch Transformer encoder: shapes, unit norm, sizes, ablation switches and determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from model.encoder import CONFIGS, WINSOR, EncoderConfig, PatchTransformer, count_parameters, encoder_config
from model.features import zscore


def _x(batch: int, channels: int = 6, window: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, channels, window, generator=torch.Generator().manual_seed(seed))


def _model(name: str, seed: int = 0, **overrides) -> PatchTransformer:
    torch.manual_seed(seed)
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
    model = PatchTransformer(dataclasses.replace(CONFIGS["tiny"], window=32, patch=8)).eval()
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


def test_return_skip_starts_from_the_winsorised_pearson_retriever():
    """With the skip path dominant, embedding cosine equals the correlation of the winsorised returns."""
    torch.manual_seed(0)
    config = encoder_config("tiny", in_channels=7, return_skip=6)
    model = PatchTransformer(config).eval()
    assert model.dim == config.width + config.window
    with torch.no_grad():
        model.skip_scale.fill_(8.0)  # e^8: the Transformer's share of the cosine is ~1e-7
        x = zscore(torch.randn(12, 7, 64))
        z = model(x)
    pearson = np.corrcoef(np.clip(x[:, 6].numpy(), -WINSOR, WINSOR))
    np.testing.assert_allclose((z @ z.T).numpy(), pearson, atol=1e-4)


def test_return_skip_must_name_an_input_channel():
    with pytest.raises(ValueError, match="return_skip channel 6"):
        PatchTransformer(encoder_config("tiny", in_channels=6, return_skip=6))
