"""Embedding export: a checkpoint's encoder applied to every eligible asset window of a date range.

Windows of consecutive dates are packed into batches of about `batch_size` rows (a date of 60 assets
would leave a forward pass mostly empty), run under `torch.inference_mode` on the GPU when torch sees
one, and split back per date.

Precision: the encoder's matrix products are the export's cost (about 80% of it on a CPU, at the
core's float32 peak), unless its join is still zero (training kept the classical start), when the
Transformer is skipped and the export is bound by feature preparation and neighbor tables instead
(model/encoder.py). `bf16` runs them under bfloat16 autocast, which the hardware does at twice
the rate where it has native bfloat16 dot products (CUDA; x86 with AVX512-BF16 or AMX); `auto`
picks it there and float32 elsewhere, where emulated bfloat16 would be slower. The history path
stays in float32 either way (model/encoder.py). bench/index_speed.py measures what bfloat16 does to
recall@10 against float32. Vectors leave as float32 and are re-normalised in float32, so a stored
vector's inner product with itself is 1 to float precision whatever device produced it (an encoder with a
history path gives vectors in the unit ball instead, whose inner products are the scores; they are
only kept inside it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from index.store import sha256_file
from model.checkpoint import CheckpointError, load_encoder
from model.features import FeatureCube, concat_inputs, slice_inputs


def checkpoint_file(path: str | Path) -> Path:
    """A checkpoint file: `path` itself, or `path`/best.pt for a model directory."""
    path = Path(path)
    file = path / "best.pt" if path.is_dir() else path
    if not file.is_file():
        raise CheckpointError(f"no checkpoint at {file}; train one with `fascl train`")
    return file


@dataclass
class ModelInfo:
    checkpoint: Path
    name: str  # the model directory's name
    sha256: str
    dim: int
    channels: str
    window: int
    meta: dict
    history: int = 0  # days of long-history returns the encoder reads (0: none)
    unit_norm: bool = True  # False: vectors lie in the unit ball and scores are inner products
    query_prior: bool = False  # True: the last coordinate is a candidate prior, read as 1 by queries

    @property
    def version(self) -> str:
        """The model version id: `<model dir name>-<first 8 hex of the checkpoint sha256>`."""
        return f"{self.name}-{self.sha256[:8]}"

    def to_manifest(self) -> dict:
        return {
            "version": self.version,
            "name": self.name,
            "checkpoint": str(self.checkpoint.resolve()),
            "checkpoint_sha256": self.sha256,
            "dim": self.dim,
            "channels": self.channels,
            "window": self.window,
            "history": self.history,
            "unit_norm": self.unit_norm,
            "query_prior": self.query_prior,
            "encoder_config": self.meta.get("encoder_config", {}),
            "train_data": self.meta.get("data", {}),
            "splits": self.meta.get("splits", {}),
            "best_valid_frc": self.meta.get("best_valid_frc"),
        }


PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bfloat16 natively (faster than float32, not emulated)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(requested: str, device: torch.device) -> str:
    """fp32 or bf16: `requested`, or for "auto" bf16 where the device has it natively."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    if requested == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return requested


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def load_model(checkpoint: str | Path, device: str | torch.device | None = None):
    """(encoder in eval mode on `device`, ModelInfo) of a checkpoint file or model directory."""
    file = checkpoint_file(checkpoint)
    device = torch.device(device) if device is not None else default_device()
    model, meta = load_encoder(file, device=device)
    channels = meta.get("train_config", {}).get("channels", "ohlcva")
    info = ModelInfo(
        checkpoint=file,
        name=file.parent.name,
        sha256=sha256_file(file),
        dim=int(model.dim),
        channels=channels,
        window=int(model.config.window),
        meta=meta,
        history=int(model.config.history),
        unit_norm=bool(model.unit_norm),
        query_prior=bool(getattr(model, "query_prior", False)),
    )
    return model, info


def iter_embeddings(
    model: torch.nn.Module,
    cube: FeatureCube,
    positions: Iterable[int],
    *,
    batch_size: int = 1024,
    device: torch.device | None = None,
    precision: str = "fp32",
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (date position, asset columns, vectors float32 (n, d)) for each position with eligible assets.

    Dates come out in the order given; several small dates share a forward pass. `precision`: fp32
    or bf16 (resolve_precision)."""
    device = device or next(model.parameters()).device
    group: list[tuple[int, np.ndarray]] = []
    rows = 0
    for pos in positions:
        cols = cube.eligible_assets(pos)
        if len(cols) == 0:
            continue
        group.append((pos, cols))
        rows += len(cols)
        if rows >= batch_size:
            yield from _forward(model, cube, group, batch_size, device, precision)
            group, rows = [], 0
    if group:
        yield from _forward(model, cube, group, batch_size, device, precision)


def _forward(model, cube, group, batch_size, device, precision):
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16 here, not {precision!r}")
    inputs = concat_inputs([cube.model_inputs(pos, cols) for pos, cols in group])
    parts = []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.inference_mode(), autocast:
        for lo in range(0, len(inputs[0]), batch_size):
            chunk = (x.to(device, non_blocking=True) for x in slice_inputs(inputs, lo, lo + batch_size))
            parts.append(model(*chunk).float().cpu())
    vectors = torch.cat(parts).numpy()
    if model.unit_norm:
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    else:  # inner-product embeddings stay in the unit ball, whatever float error the device made
        # (all but a candidate prior's coordinate, which is a score, not a direction)
        body = vectors[:, :-1] if getattr(model, "query_prior", False) else vectors
        body /= np.maximum(np.linalg.norm(body, axis=1, keepdims=True), 1.0)
    start = 0
    for pos, cols in group:
        yield pos, cols, vectors[start : start + len(cols)]
        start += len(cols)


def spec_key(spec: dict) -> str:
    """A short stable hash of a build spec (the staging directory's name)."""
    import json

    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
