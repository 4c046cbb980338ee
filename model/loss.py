"""Soft contrastive loss of FASCL and the ablation losses the paper compares.

All losses take one date's cross-section: embeddings z (B x d, unit norm) and a target
matrix (B x B). The self-pair is excluded from every softmax (the paper is silent; a pair
of an asset with itself carries no information about peers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TAU = 0.01  # temperature on cosine similarity (predictions)
TAU_TARGET = 0.05  # temperature on future correlations (targets)


def _off_diagonal_log_softmax(logits: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(len(logits), dtype=torch.bool, device=logits.device)
    return torch.log_softmax(logits.masked_fill(eye, float("-inf")), dim=1), eye


def as_queries(z: torch.Tensor, query_prior: bool) -> torch.Tensor:
    """Embeddings as queries: with a candidate prior its coordinate, the last, reads 1
    (model/encoder.py, PatchTransformer.query_prior)."""
    if not query_prior:
        return z
    return torch.cat([z[:, :-1], torch.ones_like(z[:, -1:])], dim=-1)


def similarity(z: torch.Tensor, unit_norm: bool = True, query_prior: bool = False) -> torch.Tensor:
    """s_ij, the score of j as a peer of i: the cosine of rows of z, or their inner product for
    embeddings that are not unit vectors by design (the history path's shrunk correlations,
    model/encoder.py), with query i read by `as_queries` when the last coordinate is a candidate prior."""
    z = F.normalize(z.float(), dim=-1) if unit_norm else z.float()
    return as_queries(z, query_prior) @ z.T


def _log_predictions(z, tau, unit_norm: bool, similarity_given: bool):
    """log q_i = log_softmax_j(s_ij / tau) over j != i, and the diagonal mask, for either loss."""
    if len(z) < 2:
        raise ValueError("the contrastive loss needs at least two assets on a date")
    sim = z.float() if similarity_given else similarity(z, unit_norm)
    return _off_diagonal_log_softmax(sim / tau)


def soft_contrastive_loss(
    z: torch.Tensor,
    target_corr: torch.Tensor,
    tau: float | torch.Tensor = TAU,
    tau_target: float = TAU_TARGET,
    unit_norm: bool = True,
    similarity_given: bool = False,
) -> torch.Tensor:
    """(1/B) sum_i KL(p_i || q_i), p_i = softmax_j(C_ij / tau_t), q_i = softmax_j(s_ij / tau), j != i,
    with s the cosine (or the inner product, `unit_norm=False`). `tau` may be a learned tensor.
    `similarity_given`: `z` is already the (B x B) similarity matrix s.

    With future correlations as `target_corr` this is FASCL; with historical correlations it is
    the paper's "observation-aligned targets" ablation.
    """
    log_q, eye = _log_predictions(z, tau, unit_norm, similarity_given)
    log_p, _ = _off_diagonal_log_softmax(target_corr.float() / tau_target)
    p = log_p.exp()
    # p is exactly 0 on the diagonal; mask so 0 * (-inf - -inf) does not produce NaN.
    kl = torch.where(eye, torch.zeros_like(p), p * (log_p - log_q))
    return kl.sum(dim=1).mean()


def hard_infonce_loss(
    z: torch.Tensor,
    target_corr: torch.Tensor,
    tau: float | torch.Tensor = TAU,
    tau_target: float = TAU_TARGET,
    unit_norm: bool = True,
    similarity_given: bool = False,
) -> torch.Tensor:
    """Ablation: InfoNCE with each asset's most future-correlated peer as its single positive
    (`tau_target` is unused; it is accepted so that every loss takes the same arguments)."""
    log_q, eye = _log_predictions(z, tau, unit_norm, similarity_given)
    positive = target_corr.float().masked_fill(eye, float("-inf")).argmax(dim=1)
    return F.nll_loss(log_q, positive)


def expected_correlation_loss(
    z: torch.Tensor,
    target_corr: torch.Tensor,
    tau: float | torch.Tensor = TAU,
    tau_target: float = TAU_TARGET,
    unit_norm: bool = True,
    similarity_given: bool = False,
) -> torch.Tensor:
    """-(1/B) sum_i sum_j q_ij C_ij, q_i = softmax_j(s_ij / tau), j != i: minus the future correlation
    of a peer drawn from the predicted distribution, a smooth FRC@1 (equal to it as tau -> 0).

    The soft contrastive loss asks the whole predicted distribution to match softmax(C / tau_t); this
    one only asks that the mass sit on peers with high future correlation, which is what retrieval is
    judged by. `tau` must be fixed: learned, it would shrink towards 0. `tau_target` is unused."""
    log_q, eye = _log_predictions(z, tau, unit_norm, similarity_given)
    corr = target_corr.float().masked_fill(eye, 0.0)
    return -(log_q.exp() * corr).sum(dim=1).mean()


LOSSES = {
    "soft": soft_contrastive_loss,
    "observed": soft_contrastive_loss,
    "hard": hard_infonce_loss,
    "expected": expected_correlation_loss,
}
