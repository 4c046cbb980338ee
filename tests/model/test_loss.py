"""The soft contrastive loss (and the hard InfoNCE ablation) against plain-loop references from the spec."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.loss import TAU, TAU_TARGET, expected_correlation_loss, hard_infonce_loss, soft_contrastive_loss


# ----------------------------------------------------------------- references
def _cos(a, b) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


def _log_softmax(values: list[float]) -> list[float]:
    top = max(values)
    lse = top + math.log(sum(math.exp(v - top) for v in values))
    return [v - lse for v in values]


def reference_soft(z: np.ndarray, c: np.ndarray, tau: float = TAU, tau_t: float = TAU_TARGET) -> float:
    """Spec: p_i = softmax_{j != i}(C_ij / tau_t), q_i = softmax_{j != i}(cos_ij / tau),
    L = mean_i KL(p_i || q_i)."""
    z, c = z.tolist(), c.tolist()
    n = len(z)
    total = 0.0
    for i in range(n):
        others = [j for j in range(n) if j != i]
        log_p = _log_softmax([c[i][j] / tau_t for j in others])
        log_q = _log_softmax([_cos(z[i], z[j]) / tau for j in others])
        total += sum(math.exp(lp) * (lp - lq) for lp, lq in zip(log_p, log_q, strict=True))
    return total / n


def reference_hard(z: np.ndarray, c: np.ndarray, tau: float = TAU) -> float:
    """Positive = argmax_{j != i} C_ij; cross entropy of q_i (softmax over j != i) at the positive."""
    z, c = z.tolist(), c.tolist()
    n = len(z)
    total = 0.0
    for i in range(n):
        others = [j for j in range(n) if j != i]
        positive = max(others, key=lambda j: c[i][j])
        log_q = _log_softmax([_cos(z[i], z[j]) / tau for j in others])
        total -= log_q[others.index(positive)]
    return total / n


def _inputs(seed: int, n: int, dim: int = 8, kind: str = "pearson"):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, dim))
    if kind == "pearson":  # a real future-correlation matrix
        common = rng.standard_normal(64)
        returns = rng.standard_normal((n, 64)) + rng.uniform(0, 1.5, (n, 1)) * common
        c = np.corrcoef(returns)
    else:  # any symmetric matrix in [-1, 1]
        a = rng.uniform(-1, 1, (n, n))
        c = (a + a.T) / 2
    return z, c


def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


# ------------------------------------------------------------------- soft loss
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n", [2, 3, 5, 8, 13, 20])
@pytest.mark.parametrize("kind", ["pearson", "uniform"])
def test_soft_loss_matches_loop_reference(seed, n, kind):
    z, c = _inputs(seed * 100 + n, n, kind=kind)
    got = soft_contrastive_loss(_t(z), _t(c)).item()
    want = reference_soft(z, c)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("tau, tau_t", [(0.1, 0.2), (0.05, 0.05), (1.0, 0.5)])
def test_soft_loss_honours_temperatures(tau, tau_t):
    z, c = _inputs(7, 9)
    got = soft_contrastive_loss(_t(z), _t(c), tau=tau, tau_target=tau_t).item()
    assert got == pytest.approx(reference_soft(z, c, tau, tau_t), rel=1e-5, abs=1e-6)
    # and the defaults are the spec's 0.01 / 0.05
    assert soft_contrastive_loss(_t(z), _t(c)).item() == pytest.approx(
        reference_soft(z, c, 0.01, 0.05), rel=1e-5, abs=1e-5
    )


def test_soft_loss_is_non_negative():
    for seed in range(30):
        n = 2 + seed % 19
        z, c = _inputs(seed, n, kind="pearson" if seed % 2 else "uniform")
        assert soft_contrastive_loss(_t(z), _t(c)).item() >= -1e-6


def test_soft_loss_is_zero_when_predictions_match_targets_and_minimal_there():
    rng = np.random.default_rng(3)
    z = rng.standard_normal((12, 6))
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    cos = zn @ zn.T
    # C / tau_t == cos / tau, plus a constant per row (softmax is shift invariant).
    c = cos * TAU_TARGET / TAU + rng.normal(size=(12, 1))
    base = soft_contrastive_loss(_t(z), _t(c)).item()
    assert abs(base) < 1e-5
    for seed in range(5):
        noise = np.random.default_rng(100 + seed).standard_normal(z.shape) * 0.1
        assert soft_contrastive_loss(_t(z + noise), _t(c)).item() > base + 1e-4


def test_soft_loss_is_invariant_to_permuting_the_batch():
    z, c = _inputs(11, 15)
    perm = np.random.default_rng(0).permutation(15)
    a = soft_contrastive_loss(_t(z), _t(c)).item()
    b = soft_contrastive_loss(_t(z[perm]), _t(c[np.ix_(perm, perm)])).item()
    assert a == pytest.approx(b, rel=1e-5)
    # permuting only the embeddings (breaking the pairing) changes it
    assert soft_contrastive_loss(_t(z[perm]), _t(c)).item() != pytest.approx(a, rel=1e-3)


def test_soft_loss_ignores_embedding_norm():
    z, c = _inputs(5, 10)
    scale = np.random.default_rng(1).uniform(0.1, 10, (10, 1))
    a = soft_contrastive_loss(_t(z), _t(c)).item()
    assert soft_contrastive_loss(_t(z * scale), _t(c)).item() == pytest.approx(a, rel=1e-5)


def test_gradient_pulls_together_the_strongly_correlated_pair():
    rng = np.random.default_rng(0)
    n = 10
    c = rng.uniform(-0.1, 0.1, (n, n))
    c = (c + c.T) / 2
    c[0, 1] = c[1, 0] = 0.95
    np.fill_diagonal(c, 1.0)
    z0 = torch.nn.functional.normalize(torch.randn(n, 16, generator=torch.Generator().manual_seed(0)), dim=1)

    def cosines(z):
        zn = torch.nn.functional.normalize(z, dim=1)
        return (zn @ zn.T).detach().numpy()

    z = z0.clone().requires_grad_(True)
    loss = soft_contrastive_loss(z, torch.as_tensor(c))
    loss.backward()
    assert torch.isfinite(z.grad).all()
    step = z.detach() - 1e-3 * z.grad / z.grad.norm()
    before, after = cosines(z0), cosines(step)
    delta = after - before
    off = ~np.eye(n, dtype=bool)
    off[0, 1] = off[1, 0] = False
    assert delta[0, 1] > 0
    assert delta[0, 1] > delta[off].max()


def test_self_pair_is_excluded():
    z, c = _inputs(2, 9)
    base = soft_contrastive_loss(_t(z), _t(c)).item()
    for diag in (-1.0, 0.0, 5.0, 1e3):
        c2 = c.copy()
        np.fill_diagonal(c2, diag)
        assert soft_contrastive_loss(_t(z), _t(c2)).item() == pytest.approx(base, rel=1e-6)
        assert hard_infonce_loss(_t(z), _t(c2)).item() == pytest.approx(
            hard_infonce_loss(_t(z), _t(c)).item()
        )
    # With two assets each row has a single peer, so p = q = 1 and the loss is 0 for any input.
    for seed in range(5):
        z2, c2 = _inputs(seed, 2, kind="uniform")
        assert abs(soft_contrastive_loss(_t(z2), _t(c2)).item()) < 1e-7
        assert abs(hard_infonce_loss(_t(z2), _t(c2)).item()) < 1e-7


def test_identical_embeddings_give_uniform_predictions():
    # All cosines are 1, so q_i is uniform over the B - 1 peers: L = mean_i KL(p_i || uniform).
    n = 8
    z = torch.ones(n, 4)
    _, c = _inputs(4, n)
    got = soft_contrastive_loss(z, _t(c)).item()
    assert got == pytest.approx(reference_soft(np.ones((n, 4)), c), rel=1e-5)
    assert got > 0
    # and zero when the targets are uniform too
    assert abs(soft_contrastive_loss(z, torch.full((n, n), 0.3)).item()) < 1e-6


def _extreme(case: str):
    g = torch.Generator().manual_seed(0)
    rand_c = torch.rand(16, 16, generator=g) * 2 - 1
    randn_z = torch.randn(16, 8, generator=g)
    return {
        "identical_z": (torch.ones(16, 8), rand_c),
        "equal_targets": (randn_z, torch.full((16, 16), 0.7)),
        "identical_z_equal_targets": (torch.ones(16, 8), torch.ones(16, 16)),
        "huge_z": (randn_z * 1e6, rand_c),
        "tiny_z": (randn_z * 1e-20, rand_c),
        "zero_z": (torch.zeros(16, 8), rand_c),
        "extreme_targets": (randn_z, rand_c * 1e4),
        "huge_diagonal": (randn_z, torch.eye(16) * 1e9),
    }[case]


@pytest.mark.parametrize(
    "case",
    [
        "identical_z",
        "equal_targets",
        "identical_z_equal_targets",
        "huge_z",
        "tiny_z",
        "zero_z",
        "extreme_targets",
        "huge_diagonal",
    ],
)
@pytest.mark.parametrize("loss_fn", [soft_contrastive_loss, hard_infonce_loss])
def test_numerically_stable(case, loss_fn):
    z, c = _extreme(case)
    z = z.clone().requires_grad_(True)
    loss = loss_fn(z, c, tau=0.01)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(z.grad).all()
    if loss_fn is soft_contrastive_loss:
        assert loss.item() >= -1e-6


def test_bf16_embeddings_are_accepted():
    z, c = _inputs(0, 6)
    z16 = _t(z).to(torch.bfloat16)
    loss = soft_contrastive_loss(z16, _t(c))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference_soft(z16.double().numpy(), c), rel=2e-2)


@pytest.mark.parametrize("loss_fn", [soft_contrastive_loss, hard_infonce_loss])
def test_batch_of_one_raises(loss_fn):
    with pytest.raises(ValueError, match="at least two"):
        loss_fn(torch.randn(1, 8), torch.ones(1, 1))


# ------------------------------------------------------------------- hard loss
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n", [2, 3, 6, 11, 20])
def test_hard_infonce_matches_loop_reference(seed, n):
    z, c = _inputs(seed * 31 + n, n, kind="uniform")
    np.fill_diagonal(c, 10.0)  # the largest entry of each row is the self-pair: it must be skipped
    got = hard_infonce_loss(_t(z), _t(c)).item()
    assert got == pytest.approx(reference_hard(z, c), rel=1e-5, abs=1e-5)


def test_hard_infonce_depends_only_on_the_argmax():
    z, c = _inputs(9, 10, kind="uniform")
    base = hard_infonce_loss(_t(z), _t(c)).item()
    # a monotone transform of each row keeps the positives
    assert hard_infonce_loss(_t(z), _t(np.tanh(3 * c))).item() == pytest.approx(base)
    # moving one row's positive changes the loss
    c2 = c.copy()
    row = c2[0].copy()
    row[0] = -np.inf
    c2[0, np.argmin(np.where(np.isinf(row), np.inf, row))] = 5.0
    assert hard_infonce_loss(_t(z), _t(c2)).item() != pytest.approx(base)


# ------------------------------------------------------- expected correlation
def reference_expected(z: np.ndarray, c: np.ndarray, tau: float) -> float:
    """-mean_i sum_{j != i} softmax_{j != i}(cos_ij / tau) C_ij, by loops."""
    n = len(z)
    total = 0.0
    for i in range(n):
        others = [j for j in range(n) if j != i]
        log_q = _log_softmax([_cos(z[i], z[j]) / tau for j in others])
        total += sum(math.exp(lq) * c[i, j] for lq, j in zip(log_q, others, strict=True))
    return -total / n


@pytest.mark.parametrize("seed", [0, 1])
def test_expected_correlation_matches_loop_reference(seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(7, 5))
    c = np.corrcoef(rng.normal(size=(7, 30)))
    got = expected_correlation_loss(torch.tensor(z), torch.tensor(c), tau=0.05).item()
    assert got == pytest.approx(reference_expected(z, c, 0.05), rel=1e-5)


def test_expected_correlation_becomes_minus_frc_at_1_as_tau_vanishes():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(9, 4))
    c = np.corrcoef(rng.normal(size=(9, 40)))
    cos = (z / np.linalg.norm(z, axis=1, keepdims=True)) @ (z / np.linalg.norm(z, axis=1, keepdims=True)).T
    np.fill_diagonal(cos, -np.inf)
    frc1 = np.mean(c[np.arange(9), cos.argmax(axis=1)])
    got = expected_correlation_loss(torch.tensor(z), torch.tensor(c), tau=1e-4).item()
    assert got == pytest.approx(-frc1, abs=1e-6)


def test_expected_correlation_gradient_moves_mass_to_the_more_correlated_peer():
    z = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.9, -0.1]], requires_grad=True)
    c = torch.tensor([[1.0, 0.2, 0.8], [0.2, 1.0, 0.1], [0.8, 0.1, 1.0]])
    expected_correlation_loss(z, c, tau=0.1).backward()
    step = z.detach() - 0.1 * z.grad
    cos = torch.nn.functional.normalize(step, dim=1) @ torch.nn.functional.normalize(step, dim=1).T
    before = (
        torch.nn.functional.normalize(z.detach(), dim=1) @ torch.nn.functional.normalize(z.detach(), dim=1).T
    )
    assert cos[0, 2] - cos[0, 1] > before[0, 2] - before[0, 1]
