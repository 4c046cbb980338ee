"""The FASCL trainer: one date's cross-section per step, soft contrastive loss on future correlations.

Runs as a single process or under `torchrun` (DistributedDataParallel; NCCL on GPUs, gloo on
CPU): each rank draws its own dates, gradients are averaged, rank 0 validates, logs and saves.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from market.panel import Panel
from model.checkpoint import read_checkpoint, save_checkpoint
from model.encoder import PatchTransformer, count_parameters, encoder_config
from model.features import FeatureCube, build_cube, channel_names, historical_returns
from model.loss import LOSSES, TAU, TAU_TARGET
from model.metrics import frc_at_k
from model.splits import Splits, default_splits
from model.targets import HORIZON, future_complete, future_returns, pearson_matrix


@dataclass
class TrainConfig:
    encoder: str = "small"
    encoder_overrides: dict = field(default_factory=dict)
    channels: str = "ohlcva"
    return_skip: bool = False  # route the return channel around the Transformer (model/encoder.py)
    loss: str = "soft"  # soft (FASCL) | hard (InfoNCE ablation) | observed (historical-correlation targets)
    batch_size: int = 4096  # assets per step, capped by the date's cross-section
    epochs: int = 100
    steps_per_epoch: int = 300
    lr: float = 1e-3
    min_lr: float = 1e-6
    warmup_epochs: int = 10
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    tau: float = TAU
    tau_target: float = TAU_TARGET
    valid_start: str | None = None
    test_start: str | None = None
    test_end: str | None = None
    valid_stride: int = 16  # trading days between validation query dates
    max_valid_assets: int = 2048  # per validation date, to bound its cost on wide universes
    patience: int = 10  # epochs without a better validation FRC@1 before stopping
    max_minutes: float | None = None  # wall-clock budget; the run stops cleanly when spent
    seed: int = 0
    threads: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


# Defaults per encoder configuration. "paper" is the paper's recipe (a GPU run of hours);
# "small" fits the CPU budget of minutes: fewer, smaller steps, and the return channel with its
# skip path so that the encoder starts from the historical-correlation retriever (model/encoder.py).
PRESETS: dict[str, dict] = {
    "paper": {"batch_size": 4096, "epochs": 100, "steps_per_epoch": 300, "warmup_epochs": 10},
    "small": {
        "batch_size": 512,
        "epochs": 30,
        "steps_per_epoch": 20,
        "warmup_epochs": 1,
        "lr": 3e-3,
        "channels": "ohlcva_ret",
        "return_skip": True,
        "max_minutes": 9.0,
        "patience": 8,
    },
}
PRESETS["tiny"] = {**PRESETS["small"], "epochs": 3, "steps_per_epoch": 10, "max_minutes": 2.0}


def preset_config(encoder: str, **overrides) -> TrainConfig:
    """The preset of `encoder` with the given overrides (None values are ignored)."""
    if encoder not in PRESETS:
        raise ValueError(f"unknown encoder config {encoder!r}; choose one of {', '.join(PRESETS)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    return TrainConfig(encoder=encoder, **{**PRESETS[encoder], **given})


@dataclass
class TrainResult:
    out_dir: Path
    best_valid_frc: float
    pearson_valid_frc: float
    epochs_run: int
    steps: int
    samples_per_second: float  # training steps only, validation excluded
    seconds: float  # wall clock of the whole run
    stopped_because: str


def _device() -> torch.device:
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def _lr_lambda(config: TrainConfig):
    total = config.epochs * config.steps_per_epoch
    warmup = config.warmup_epochs * config.steps_per_epoch
    floor = config.min_lr / config.lr

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class Validator:
    """Validation FRC@1 on fixed query dates; the Pearson retriever is scored once on the same queries."""

    def __init__(self, cube: FeatureCube, positions: np.ndarray, config: TrainConfig, pool: np.ndarray):
        rng = np.random.default_rng(config.seed + 10_000)
        self.cube = cube
        self.queries = []  # (date position, asset indices, future correlation matrix)
        for t in positions[:: config.valid_stride]:
            assets = np.flatnonzero(pool[t])
            if len(assets) < 2:
                continue
            if len(assets) > config.max_valid_assets:
                assets = np.sort(rng.choice(assets, config.max_valid_assets, replace=False))
            returns, _ = future_returns(cube.close, t, assets)
            self.queries.append((int(t), assets, pearson_matrix(returns)))
        if not self.queries:
            raise ValueError("no validation dates with at least two eligible assets; check the splits")
        self.pearson_frc = float(
            np.mean(
                np.concatenate(
                    [
                        frc_at_k(pearson_matrix(historical_returns(cube.close, t, a)), corr, 1)
                        for t, a, corr in self.queries
                    ]
                )
            )
        )

    @torch.no_grad()
    def frc_at_1(self, model: torch.nn.Module, device: torch.device) -> float:
        model.eval()
        scores = []
        for t, assets, corr in self.queries:
            z = torch.cat(
                [
                    model(self.cube.windows(t, chunk).to(device))
                    for chunk in np.array_split(assets, max(1, len(assets) // 1024))
                ]
            )
            sim = (z @ z.T).float().cpu().numpy()
            scores.append(frc_at_k(sim, corr, 1))
        model.train()
        return float(np.mean(np.concatenate(scores)))


def train(
    panel: Panel,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = True,
    console: Console | None = None,
    data_source: str | None = None,
) -> TrainResult:
    out_dir = Path(out_dir)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    main = rank == 0
    console = console or Console()
    device = _device()
    torch.set_num_threads(config.threads or max(1, (os.cpu_count() or 1) // world))
    torch.manual_seed(config.seed + rank)
    rng = np.random.default_rng(config.seed + 1_000 * rank)

    splits = (
        Splits(config.valid_start, config.test_start, config.test_end)
        if config.valid_start and config.test_start
        else default_splits(panel.dates)
    )
    cube = build_cube(panel, config.channels)
    pool = cube.eligible & future_complete(cube.close, HORIZON)
    positions = splits.positions(panel.dates)
    train_dates = np.array([t for t in positions["train"] if pool[t].sum() >= 2])
    if len(train_dates) == 0:
        raise ValueError(f"no training dates with two or more eligible assets before {splits.valid_start}")
    validator = Validator(cube, positions["valid"], config, pool) if main else None

    names = channel_names(config.channels)
    if config.return_skip and "return" not in names:
        raise ValueError(
            f"return_skip needs a channel set with returns (ohlcva_ret), not {config.channels!r}"
        )
    skip = names.index("return") if config.return_skip else None
    enc_config = encoder_config(
        config.encoder, in_channels=cube.n_channels, return_skip=skip, **config.encoder_overrides
    )
    model = PatchTransformer(enc_config).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, betas=(0.9, 0.999), weight_decay=config.weight_decay, foreach=True
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
    loss_fn = LOSSES[config.loss]
    loss_kwargs = (
        {"tau": config.tau} if config.loss == "hard" else {"tau": config.tau, "tau_target": config.tau_target}
    )

    history: list[dict] = []
    start_epoch, best, stale = 0, -math.inf, 0
    last_file = out_dir / "last.pt"
    if resume and last_file.exists():
        state = read_checkpoint(last_file)
        if (
            state.get("train_config", {}).get("channels") != config.channels
            or state["encoder_config"] != enc_config.to_dict()
        ):
            raise ValueError(
                f"{last_file} was trained with another configuration; use a new --out or --no-resume"
            )
        model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer_state"])
        scheduler.load_state_dict(state["scheduler_state"])
        start_epoch, best, stale = state["epoch"] + 1, state["best_valid_frc"], state["stale_epochs"]
        history = state.get("history", [])
        rng = np.random.default_rng(config.seed + 1_000 * rank + start_epoch)
        if main:
            console.print(
                f"resuming from {last_file} at epoch {start_epoch} (best validation FRC@1 {best:.4f})"
            )

    ddp_model = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
    use_bf16 = device.type == "cuda"
    meta = {
        "encoder_config": enc_config.to_dict(),
        "train_config": config.to_dict(),
        "splits": splits.to_dict(),
        "data": {
            "fingerprint": panel.fingerprint(),
            "source": data_source,
            "first_date": str(panel.dates[0]),
            "last_date": str(panel.dates[-1]),
            "assets": int(panel.n_assets),
        },
        "parameters": count_parameters(model),
    }
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(meta, indent=2))
        console.print(
            f"FASCL {config.encoder} ({meta['parameters']:,} parameters, {config.channels}, "
            f"loss {config.loss}) on {device}; "
            f"{len(train_dates)} training dates, {len(validator.queries)} validation dates; "
            f"Pearson validation FRC@1 {validator.pearson_frc:.4f}"
        )

    started = time.perf_counter()
    train_seconds = 0.0  # optimisation steps only, for throughput (validation excluded)
    samples, steps, stopped = 0, 0, "finished all epochs"
    log = open(out_dir / "log.jsonl", "a" if start_epoch > 0 else "w") if main else None
    progress = Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  valid FRC@1 {task.fields[valid]}"
        ),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not main,
    )
    epoch = start_epoch - 1
    with progress:
        task = progress.add_task(
            "train",
            total=(config.epochs - start_epoch) * config.steps_per_epoch,
            epoch=start_epoch,
            loss=float("nan"),
            lr=scheduler.get_last_lr()[0],
            valid=f"{best:.4f}" if best > -math.inf else "-",
        )
        for epoch in range(start_epoch, config.epochs):
            running = 0.0
            ddp_model.train()
            epoch_started = time.perf_counter()
            for _ in range(config.steps_per_epoch):
                t = int(rng.choice(train_dates))
                assets = np.flatnonzero(pool[t])
                if len(assets) > config.batch_size:
                    assets = rng.choice(assets, config.batch_size, replace=False)
                x = cube.windows(t, assets).to(device, non_blocking=True)
                if config.loss == "observed":
                    target = pearson_matrix(historical_returns(cube.close, t, assets))
                else:
                    target = pearson_matrix(future_returns(cube.close, t, assets)[0])
                target = torch.from_numpy(target).to(device)
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    z = ddp_model(x)
                loss = loss_fn(z, target, **loss_kwargs)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                loss_value = loss.item()
                running += loss_value
                samples += len(assets) * world
                steps += 1
                progress.update(task, advance=1, loss=loss_value, lr=scheduler.get_last_lr()[0], epoch=epoch)
            train_seconds += time.perf_counter() - epoch_started

            valid = validator.frc_at_1(model, device) if main else 0.0
            improved = valid > best
            if main:
                best, stale = (valid, 0) if improved else (best, stale + 1)
                record = {
                    "epoch": epoch,
                    "loss": running / config.steps_per_epoch,
                    "lr": scheduler.get_last_lr()[0],
                    "valid_frc1": valid,
                    "pearson_valid_frc1": validator.pearson_frc,
                    "elapsed_s": time.perf_counter() - started,
                    "samples": samples,
                }
                history.append(record)
                log.write(json.dumps(record) + "\n")
                log.flush()
                progress.update(
                    task, valid=f"{valid:.4f} (best {best:.4f}, Pearson {validator.pearson_frc:.4f})"
                )
                state = {
                    **meta,
                    "model_state": model.state_dict(),
                    "optimizer_state": optimizer.state_dict(),
                    "scheduler_state": scheduler.state_dict(),
                    "epoch": epoch,
                    "best_valid_frc": best,
                    "stale_epochs": stale,
                    "pearson_valid_frc": validator.pearson_frc,
                    "history": history,
                }
                if improved:
                    save_checkpoint(state, out_dir / "best.pt")
                save_checkpoint(state, last_file)

            out_of_time = (
                config.max_minutes is not None and time.perf_counter() - started > 60 * config.max_minutes
            )
            stop = torch.tensor([int(main and stale >= config.patience), int(out_of_time)], device=device)
            if distributed:
                dist.broadcast(stop, src=0)
            if stop[0]:
                stopped = f"no better validation FRC@1 for {config.patience} epochs"
                break
            if stop[1]:
                stopped = f"time budget of {config.max_minutes:g} minutes spent"
                break
    if log is not None:
        log.close()
    elapsed = time.perf_counter() - started
    result = TrainResult(
        out_dir=out_dir,
        best_valid_frc=best,
        pearson_valid_frc=validator.pearson_frc if main else float("nan"),
        epochs_run=epoch + 1 - start_epoch,
        steps=steps,
        samples_per_second=samples / train_seconds if train_seconds > 0 else 0.0,
        stopped_because=stopped,
        seconds=elapsed,
    )
    if main:
        summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if distributed:
        dist.destroy_process_group()
    return result
