"""Checkpoints: weights, optimizer, configs, data fingerprint and split dates in one file."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from model.encoder import EncoderConfig, PatchTransformer


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or not a FASCL checkpoint."""


def save_checkpoint(state: dict, path: Path) -> None:
    """Write to a temp file and rename, so a crash never leaves a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}; train one with `fascl train`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises several types for a damaged file
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict) or "model_state" not in state or "encoder_config" not in state:
        raise CheckpointError(f"{path} is not a FASCL checkpoint (no model_state / encoder_config)")
    return state


def load_encoder(path: str | Path, device: str | torch.device = "cpu") -> tuple[PatchTransformer, dict]:
    """The trained encoder in eval mode, and the checkpoint's metadata (without tensors)."""
    state = read_checkpoint(path)
    model = PatchTransformer(EncoderConfig(**state["encoder_config"]))
    model.load_state_dict(state["model_state"])
    model.to(device).eval()
    meta = {k: v for k, v in state.items() if not k.endswith("_state")}
    return model, meta
