"""The FASCL encoder: a patch Transformer over one asset's window, mean-pooled to a unit vector; in the
`small` configuration joined, through a gate that starts at zero, to a history path over two years of
returns that starts as the strongest classical retriever (HistoryPath)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from model.history import BOUND, HISTORY, RECENT, SHRINK


@dataclass(frozen=True)
class EncoderConfig:
    in_channels: int = 6
    window: int = 64
    patch: int = 4
    width: int = 128
    depth: int = 4
    heads: int = 4
    ffn_mult: int = 4
    dropout: float = 0.1
    pooling: str = "mean"  # "mean" (paper) or "cls" (ablation)
    projection_head: bool = False  # the paper found a head costs 14% FRC@1; kept for the ablation
    # Days of long-history returns read by the history path (0: off, the paper's architecture).
    # See HistoryPath: with it the model starts as the classical shrunk-correlation retriever.
    history: int = 0
    history_rank: int = 8  # rank of the learned low-rank correction of the history path
    history_bound: float = BOUND  # initial winsorising bound (learned)
    history_shrink: float = SHRINK  # initial weight of the single-index model (learned)
    # Days of the recent block: the correlation of the last `recent` days, z-scored over those days
    # alone, added into the history embedding with a learned gain that starts at zero (0: none).
    recent: int = 0
    # A candidate prior: one more coordinate holding a learned per-asset score p_j (starting at zero),
    # added to every query's score of that candidate. Queries read the coordinate as 1, so the score
    # of candidate j for query i is e_i . e_j + p_j (see PatchTransformer.query_prior).
    prior: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


# Paper: width 384, 8 blocks, 8 heads (about 14M parameters). "small" is the CPU default.
CONFIGS: dict[str, EncoderConfig] = {
    "paper": EncoderConfig(width=384, depth=8, heads=8),
    # Minutes of CPU training underfit rather than overfit, so "small" drops dropout.
    # It also reads two years of returns through the history path, see HistoryPath.
    "small": EncoderConfig(
        width=128, depth=4, heads=4, dropout=0.0, history=HISTORY, recent=RECENT, prior=True
    ),
    "tiny": EncoderConfig(
        width=32, depth=1, heads=2, dropout=0.0, history=32, recent=8, prior=True
    ),  # tests only
}


def encoder_config(name: str, **overrides) -> EncoderConfig:
    try:
        base = CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown encoder config {name!r}; choose one of {', '.join(CONFIGS)}") from None
    return without_history_parts(replace(base, **{k: v for k, v in overrides.items() if v is not None}))


def without_history_parts(config: EncoderConfig) -> EncoderConfig:
    """Without a history path (history 0, the paper's architecture) there is no recent block or prior."""
    return config if config.history else replace(config, recent=0, prior=False)


class Block(nn.Module):
    """Pre-norm Transformer block with dropout in the FFN only, as the spec describes.

    Written out rather than nn.TransformerEncoderLayer, which also drops out attention and
    residual paths: on a CPU each dropout costs a random-number pass over the activations."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.heads = config.heads
        self.norm1 = nn.LayerNorm(config.width)
        self.qkv = nn.Linear(config.width, 3 * config.width)
        self.proj = nn.Linear(config.width, config.width)
        self.norm2 = nn.LayerNorm(config.width)
        self.ffn = nn.Sequential(
            nn.Linear(config.width, config.ffn_mult * config.width),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.ffn_mult * config.width, config.width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(attended)
        return x + self.ffn(self.norm2(x))


class PatchTransformer(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        config = without_history_parts(config)
        if config.window % config.patch:
            raise ValueError(f"window {config.window} is not a multiple of patch {config.patch}")
        if config.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', not {config.pooling!r}")
        self.config = config
        n_tokens = config.window // config.patch
        self.patch_embed = nn.Conv1d(
            config.in_channels, config.width, kernel_size=config.patch, stride=config.patch
        )
        self.embed_norm = nn.LayerNorm(config.width)
        self.cls = nn.Parameter(torch.zeros(1, 1, config.width)) if config.pooling == "cls" else None
        self.position = nn.Parameter(
            torch.randn(1, n_tokens + (config.pooling == "cls"), config.width) * 0.02
        )
        self.blocks = nn.Sequential(*(Block(config) for _ in range(config.depth)))
        self.final_norm = nn.LayerNorm(config.width)
        if config.history:
            self.history = HistoryPath(config)
            # The Transformer joins the history embedding through a map that starts at zero (a
            # matrix-valued ReZero gate), so step 0 scores exactly the classical retriever and the
            # loss decides what it adds. A zero matrix, unlike a zero scalar in front of a random
            # projection, has a useful gradient from step 0: (dL/de) t^T.
            self.join = nn.Linear(config.width, config.history, bias=False)
            nn.init.zeros_(self.join.weight)
            # The Transformer's part of the candidate prior (what the OHLCVA window says about how
            # well an asset serves as a peer: liquidity, volatility), also starting at zero.
            self.prior_join = nn.Linear(config.width, 1, bias=False) if config.prior else None
            if self.prior_join is not None:
                nn.init.zeros_(self.prior_join.weight)
        else:
            self.history = None
            self.prior_join = None
        self.head = (
            nn.Sequential(
                nn.Linear(config.width, config.width), nn.GELU(), nn.Linear(config.width, config.width)
            )
            if config.projection_head
            else None
        )

    @property
    def dim(self) -> int:
        return (self.config.history + int(self.config.prior)) if self.config.history else self.config.width

    @property
    def query_prior(self) -> bool:
        """True: the last coordinate of an embedding is the asset's candidate prior p. As a candidate
        the embedding is stored as it is; as a query it is read with that coordinate set to 1
        (`as_queries`), so the score of j for i is e_i . e_j + p_j, an inner product FAISS serves."""
        return self.prior_join is not None

    @property
    def unit_norm(self) -> bool:
        """True: embeddings are unit vectors, scores are cosines. False (history path): embeddings lie
        in the unit ball and the score is their inner product, a shrunk correlation estimate."""
        return self.history is None

    def forward(
        self, x: torch.Tensor, history: torch.Tensor | None = None, market: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: (batch, channels, window) -> (batch, dim) embeddings; with the history path also
        history (batch, config.history) return z-scores and market (config.history,) or (batch, ...)
        the cross-section's market direction (model.features.FeatureCube.model_inputs)."""
        if self.history is not None and not torch.is_grad_enabled() and not self.transformer_counts():
            # The joins are still zero (training kept the classical start, or has not begun, or the
            # Transformer added nothing on validation and was dropped): its output cannot reach the
            # embedding, so inference skips it, exactly (its inputs are finite). Training always
            # runs it: the joins' gradients need its output.
            return self._history_embedding(history, market, None)
        tokens = self.embed_norm(self.patch_embed(x).transpose(1, 2))
        if self.cls is not None:
            tokens = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1)
        tokens = self.final_norm(self.blocks(tokens + self.position))
        pooled = tokens[:, 0] if self.cls is not None else tokens.mean(dim=1)
        if self.head is not None:
            pooled = self.head(pooled)
        embedding = F.normalize(pooled.float(), dim=-1)
        if self.history is None:
            return embedding
        return self._history_embedding(history, market, embedding)

    def transformer_counts(self) -> bool:
        """Whether the Transformer's output reaches the embedding: its join or prior join is nonzero."""
        return bool(self.join.weight.any()) or (
            self.prior_join is not None and bool(self.prior_join.weight.any())
        )

    def _history_embedding(self, history, market, embedding: torch.Tensor | None) -> torch.Tensor:
        """The history path's embedding, joined by the Transformer's `embedding` (None: a zero join)."""
        if history is None or market is None:
            raise ValueError("this encoder has a history path: pass the history z-scores and the market")
        # The history path stays in float32 under bf16 autocast: at step 0 it must reproduce the
        # classical retriever's ranking, which bfloat16's 8 bits of mantissa would not.
        with torch.autocast(device_type=history.device.type, enabled=False):
            e, beta = self.history(history.float(), market.float())
            if embedding is not None:
                e = e + self.join(embedding.float())
            # Scores are inner products; keeping the history part in the unit ball keeps its share of
            # them in [-1, 1]. The prior's coordinate is a score of its own, appended after.
            e = e / e.norm(dim=-1, keepdim=True).clamp_min(1.0)
            if self.prior_join is None:
                return e
            prior = self.history.prior_weight * beta
            if embedding is not None:
                prior = prior + self.prior_join(embedding.float())
            return torch.cat([e, prior], dim=-1)


class HistoryPath(nn.Module):
    """A learned map of an asset's long return history, initialised to the classical retriever.

    At initialisation the output is model.history.shrink_to_market(winsorized_rows(z), market):
    returns winsorised at `history_bound`, centred and scaled to unit length (their inner products are
    the winsorised Pearson correlations over the history), then shrunk towards the single-index model
    without renormalising. What can be learned, each starting at the identity of that estimator: the
    clip bound, a weight per day (recent days may matter more), the two shrinkage coefficients, and a
    low-rank correction (a dense L x L map would have 250k parameters to fit from minutes of data).

    Two more learned parts start at zero, so that step 0 is still that estimator. The recent block
    adds `recent_gain` times the unit rows of the last `recent` days, z-scored over those days alone,
    into the embedding's last `recent` coordinates: the inner products gain a short-horizon
    correlation term. `prior_weight` times the asset's correlation with the market (beta, its
    history row's projection on the market direction) is its candidate prior (PatchTransformer)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        if not 0.0 <= config.history_shrink < 1.0:
            raise ValueError(f"history_shrink must be in [0, 1), not {config.history_shrink}")
        length, rank = config.history, config.history_rank
        keep = math.sqrt(1.0 - config.history_shrink)
        self.bound = nn.Parameter(torch.tensor(float(config.history_bound)))
        self.log_day_weight = nn.Parameter(torch.zeros(length))
        self.keep = nn.Parameter(torch.tensor(keep))
        self.market_gain = nn.Parameter(torch.tensor(1.0 - keep))
        self.down = nn.Parameter(torch.randn(length, rank) / math.sqrt(length))
        self.up = nn.Parameter(torch.zeros(rank, length))
        if not 0 <= config.recent <= length:
            raise ValueError(f"recent must be between 0 and history ({length}) days, not {config.recent}")
        self.recent = config.recent
        self.recent_bound = float(config.history_bound)
        self.recent_gain = nn.Parameter(torch.zeros(())) if config.recent else None
        self.prior_weight = nn.Parameter(torch.zeros(1)) if config.prior else None

    def forward(self, z: torch.Tensor, market: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(embedding (B, L), beta (B, 1)) of history z-scores z (B, L) and the market direction."""
        clipped = torch.minimum(torch.maximum(z, -self.bound), self.bound)
        centred = clipped - clipped.mean(dim=-1, keepdim=True)
        rows = centred / centred.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        market = market.expand_as(rows)
        beta = (rows * market).sum(dim=-1, keepdim=True)
        weighted = rows * self.log_day_weight.exp()
        e = self.keep * weighted + self.market_gain * beta * market + (rows @ self.down) @ self.up
        if self.recent_gain is not None:
            recent = recent_rows(z[:, -self.recent :], self.recent_bound)
            e = torch.cat([e[:, : -self.recent], e[:, -self.recent :] + self.recent_gain * recent], dim=-1)
        return e, beta


def recent_rows(z: torch.Tensor, bound: float) -> torch.Tensor:
    """Unit rows of the last days of history z-scores, z-scored again over those days alone and
    clipped at +-bound: their inner products are the winsorised Pearson correlations over those days,
    winsorized_rows(history_zscores(returns, t, assets, days)). A z-score of exactly 0 is a gap
    (history_zscores fills gaps with 0); z-scoring is affine, so re-scoring the long-history z-scores
    equals scoring those days' returns."""
    present = z != 0
    count = present.sum(dim=-1, keepdim=True).clamp_min(1)
    mean = z.sum(dim=-1, keepdim=True) / count
    dev = torch.where(present, z - mean, torch.zeros_like(z))
    std = (dev.square().sum(dim=-1, keepdim=True) / count).sqrt()
    scored = torch.where(std > 1e-12, dev / std.clamp_min(1e-12), torch.zeros_like(z)).clamp(-bound, bound)
    centred = scored - scored.mean(dim=-1, keepdim=True)
    return centred / centred.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
