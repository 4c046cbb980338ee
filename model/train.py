"""The FASCL trainer: one date's cross-section per step, soft contrastive loss on future correlations.

Runs as a single process or under `torchrun` (DistributedDataParallel; NCCL on GPUs, gloo on
CPU): each rank draws its own dates, gradients are averaged, rank 0 validates, logs and saves.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
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
from model.encoder import EncoderConfig, PatchTransformer, count_parameters, encoder_config
from model.features import (
    FeatureCube,
    build_cube,
    channel_names,
    concat_inputs,
    historical_returns,
    slice_inputs,
)
from model.history import history_zscores, shrink_to_market, winsorized_rows
from model.loss import LOSSES, TAU, TAU_TARGET, similarity
from model.metrics import frc_at_k
from model.retrievers import classical_start
from model.splits import Splits, default_splits
from model.targets import HORIZON, future_complete, future_returns, pearson_matrix


@dataclass
class TrainConfig:
    encoder: str = "small"
    encoder_overrides: dict = field(default_factory=dict)
    channels: str = "ohlcva"
    loss: str = "soft"  # soft (FASCL) | hard (InfoNCE ablation) | observed (historical-correlation targets)
    batch_size: int = 4096  # assets per date, capped by the date's cross-section
    dates_per_step: int = 1  # dates per optimisation step; the loss is their mean
    epochs: int = 100
    steps_per_epoch: int = 300
    lr: float = 1e-3
    min_lr: float = 1e-6
    warmup_epochs: int = 10
    weight_decay: float = 0.05  # Transformer weight matrices only: gates, scales and norms are not decayed
    history_lr_scale: float = 1.0  # LR multiplier of the history path (0 keeps the classical start fixed)
    # LR multiplier of the recent block's gain and the candidate prior's weight: two scalars whose
    # useful values (tenths) are far from zero in steps of the base LR.
    prior_lr_scale: float = 1.0
    # Train on the last `train_days` trading days of the training split only (None: all of it). How
    # assets serve as peers drifts with the market's regime; the most recent year is nearest to the
    # dates the model will be asked about.
    train_days: int | None = None
    # Candidates for the history path's start, chosen on validation FRC@1 (choose_start); empty: the
    # encoder configuration's own history length and shrinkage.
    history_choices: tuple[int, ...] = ()
    shrink_choices: tuple[float, ...] = ()
    grad_clip: float = 1.0
    # Prediction temperature. A number: fixed (the paper's 0.01). None: chosen at step 0 so that the
    # loss of the starting model is smallest, then learned. An encoder that starts as a classical
    # estimator needs this: its scores are far more spread than softmax(s/0.01) against targets
    # softmax(C/0.05) wants, and a fixed 0.01 makes the loss reshape the geometry and lose the ranking.
    tau: float | None = TAU
    tau_target: float = TAU_TARGET
    valid_start: str | None = None
    test_start: str | None = None
    test_end: str | None = None
    valid_stride: int = 16  # trading days between validation query dates
    max_valid_assets: int = 2048  # per validation date, to bound its cost on wide universes
    valid_every: int = 1  # epochs between validations (the last epoch is always validated)
    patience: int = 10  # validations without a better FRC@1 before stopping, once the start is beaten
    max_minutes: float | None = (
        None  # wall-clock budget; the LR schedule follows it, the run stops when spent
    )
    bf16: bool | None = None  # bfloat16 autocast for the Transformer; None: on CUDA only
    seed: int = 0
    threads: int | None = None

    def to_dict(self) -> dict:
        """Plain JSON types (lists for the tuples), so that config.json and checkpoints compare equal."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# Defaults per encoder configuration. "paper" is the paper's recipe (a GPU run of hours); "small"
# fits the CPU budget of minutes and reads two years of returns through the history path, starting
# as the shrunk-correlation retriever (model/encoder.py, HistoryPath).
PRESETS: dict[str, dict] = {
    "paper": {"batch_size": 4096, "epochs": 100, "steps_per_epoch": 300, "warmup_epochs": 10},
    "small": {
        "batch_size": 512,
        "epochs": 60,
        "steps_per_epoch": 30,
        "warmup_epochs": 1,
        "lr": 3e-4,
        # The history path starts at a classical estimator that sits at a flat optimum of validation
        # FRC@1 (bound, shrinkage, history length, recency weights all measured); the loss pulls it
        # away from there, so it moves at a tenth of the Transformer's rate.
        "history_lr_scale": 0.1,
        "prior_lr_scale": 10.0,
        "history_choices": (64, 126, 252, 504),
        "shrink_choices": (0.0, 0.2),
        "loss": "expected",
        "tau": 0.01,
        "train_days": 252,
        "valid_every": 2,
        "max_minutes": 15.0,
        "patience": 8,
    },
}
PRESETS["tiny"] = {
    **PRESETS["small"],
    "epochs": 3,
    "steps_per_epoch": 10,
    "max_minutes": 2.0,
    "history_choices": (),  # tests: the tiny encoder's own 32 days
}


def preset_config(encoder: str, **overrides) -> TrainConfig:
    """The preset of `encoder` with the given overrides (None values are ignored).

    A preset that starts at a classical estimator and trains with the expected-correlation loss at a
    fixed temperature, given another loss (soft, hard, observed: a KL or cross-entropy against
    targets) and no temperature, calibrates the temperature at step 0 and learns it: at a fixed 0.01
    those losses reshape the start's geometry and lose its ranking (see TrainConfig.tau)."""
    if encoder not in PRESETS:
        raise ValueError(f"unknown encoder config {encoder!r}; choose one of {', '.join(PRESETS)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    preset = dict(PRESETS[encoder])
    if (
        preset.get("loss") == "expected"
        and given.get("loss", "expected") != "expected"
        and "tau" not in given
    ):
        preset["tau"] = None
    return TrainConfig(encoder=encoder, **{**preset, **given})


@dataclass
class TrainResult:
    out_dir: Path
    best_valid_frc: float
    start_valid_frc: float  # the model before any step: the classical retriever it starts from
    baseline_valid_frc: dict  # classical retrievers on the same validation queries
    epochs_run: int
    steps: int
    samples_per_second: float  # wall clock of the whole run, validation included
    valid_share: float  # share of the wall clock spent validating
    seconds: float  # wall clock of the whole run
    stopped_because: str

    @property
    def pearson_valid_frc(self) -> float:
        return self.baseline_valid_frc.get("pearson", float("nan"))


def _device() -> torch.device:
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def lr_factor(progress: float, warmup: float, floor: float) -> float:
    """Linear warm-up over the first `warmup` of the run, then cosine decay to `floor`; progress in [0, 1]."""
    if progress < warmup:
        return max(progress / warmup, 1e-3)
    rest = min(1.0, (progress - warmup) / max(1e-9, 1.0 - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * rest))


def classical_scores(cube: FeatureCube, t: int, assets: np.ndarray, enc: EncoderConfig) -> np.ndarray:
    """Scores of `classical_start`: the estimator the history path reproduces before training."""
    if not enc.history:
        return pearson_matrix(historical_returns(cube.close, t, assets, cube.window))
    rows = winsorized_rows(history_zscores(cube.returns, t, assets, enc.history), enc.history_bound)
    e = shrink_to_market(rows, cube.market(t).double().numpy(), enc.history_shrink)
    return e @ e.T


class Validator:
    """Validation FRC@1 on fixed query dates; classical retrievers are scored once on the same queries:
    plain 64-day Pearson and the estimator the encoder starts from (`classical_start`)."""

    def __init__(
        self,
        cube: FeatureCube,
        positions: np.ndarray,
        config: TrainConfig,
        pool: np.ndarray,
        encoder: EncoderConfig | None = None,
    ):
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
        self.baselines = {
            "pearson": self.score(lambda t, a: pearson_matrix(historical_returns(cube.close, t, a)))
        }
        if encoder is not None:
            self.start_from(cube, encoder)

    def start_from(self, cube: FeatureCube, encoder: EncoderConfig, known: dict | None = None) -> None:
        """Embed from `cube` from now on, and add the classical retriever `encoder` starts from to the
        baselines (its score taken from `known` when it was already measured on these queries)."""
        self.cube = cube
        if encoder.history:
            name = classical_start(encoder)
            known = known or {}
            self.baselines[name] = (
                known[name]
                if name in known
                else self.score(lambda t, a: classical_scores(cube, t, a, encoder))
            )

    def score(self, scores) -> float:
        """Validation FRC@1 of a retriever given as scores(date position, assets) -> (B x B)."""
        return float(
            np.mean(np.concatenate([frc_at_k(scores(t, a), corr, 1) for t, a, corr in self.queries]))
        )

    @property
    def pearson_frc(self) -> float:
        return self.baselines["pearson"]

    @torch.no_grad()
    def frc_at_1(self, model: torch.nn.Module, device: torch.device, bf16: bool = False) -> float:
        model.eval()
        unit_norm = getattr(model, "unit_norm", True)
        query_prior = getattr(model, "query_prior", False)
        scores = []
        for t, assets, corr in self.queries:
            inputs = self.cube.model_inputs(t, assets)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                z = torch.cat(
                    [
                        model(*(x.to(device) for x in slice_inputs(inputs, lo, lo + 1024)))
                        for lo in range(0, len(assets), 1024)
                    ]
                )
            scores.append(frc_at_k(similarity(z, unit_norm, query_prior).cpu().numpy(), corr, 1))
        model.train()
        return float(np.mean(np.concatenate(scores)))


def choose_start(
    probe: Validator, config: TrainConfig, enc: EncoderConfig
) -> tuple[EncoderConfig, dict[str, float]]:
    """The classical estimator the history path starts from, chosen on the validation year: every
    history length of `config.history_choices` with every shrinkage of `config.shrink_choices`, scored
    by validation FRC@1 on the trainer's own validation queries. The best one's length and shrinkage
    go into the encoder's configuration. `probe.cube` must hold the longest history of the choices.

    A fixed length would be tuned to one market: on us_nasdaq two years win, on the synthetic market
    (drifting loadings, regime shifts) a far shorter history does."""
    scores: dict[str, float] = {}
    best: tuple[float, EncoderConfig] | None = None
    for length in config.history_choices:
        view = probe.cube.with_history(length)
        for shrink in config.shrink_choices:
            # a recent block as long as the history would only repeat it
            recent = enc.recent if enc.recent < length else 0
            candidate = replace(enc, history=int(length), history_shrink=float(shrink), recent=recent)
            score = probe.score(lambda t, a, v=view, c=candidate: classical_scores(v, t, a, c))
            scores[classical_start(candidate)] = score
            if best is None or score > best[0]:
                best = (score, candidate)
    return best[1], scores


def parameter_groups(
    model: torch.nn.Module, weight_decay: float, history_lr_scale: float = 1.0, prior_lr_scale: float = 1.0
) -> list[dict]:
    """AdamW groups: weight decay on the Transformer's weight matrices only. The join (the gate of the
    Transformer, which starts at zero), scales, norms, biases and the history path are not decayed:
    decay would pull them away from the starting point whatever the loss says. The history path has
    its own LR multiplier `lr_scale`, the recent block's gain and the candidate prior's weight theirs."""
    decay, rest, history, prior = [], [], [], []
    for name, p in model.named_parameters():
        if name in ("history.recent_gain", "history.prior_weight"):
            prior.append(p)
        elif name.startswith("history."):
            history.append(p)
        elif p.ndim >= 2 and not name.startswith(("join.", "prior_join.")):
            decay.append(p)
        else:
            rest.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if history:
        groups.append({"params": history, "weight_decay": 0.0, "lr_scale": history_lr_scale})
    if prior:
        groups.append({"params": prior, "weight_decay": 0.0, "lr_scale": prior_lr_scale})
    return groups


@torch.no_grad()
def drop_an_idle_transformer(
    file: Path, enc: EncoderConfig, validator: Validator, device, bf16: bool
) -> dict | None:
    """Score the checkpoint at `file` again with the Transformer's joins set to zero (the history path
    alone); where that is not worse on validation FRC@1, rewrite the checkpoint without them. A part
    that adds nothing measurable on the validation year is not worth its cost: with zero joins,
    inference skips the Transformer (PatchTransformer.forward), several times faster to export.
    None where the joins are zero already; otherwise {"with", "without", "dropped"}."""
    state = read_checkpoint(file)
    model = PatchTransformer(enc).to(device)
    model.load_state_dict(state["model_state"])
    if not model.transformer_counts():
        return None
    model.join.weight.zero_()
    if model.prior_join is not None:
        model.prior_join.weight.zero_()
    with_it = float(state["best_valid_frc"])
    without = validator.frc_at_1(model, device, bf16)
    dropped = without >= with_it
    if dropped:
        state["model_state"] = model.state_dict()
        state["best_valid_frc"] = without
        state["transformer_dropped"] = {"with": with_it, "without": without}
        save_checkpoint(state, file)
    return {"with": with_it, "without": without, "dropped": dropped}


def training_target(cube: FeatureCube, t: int, assets: np.ndarray, loss: str) -> torch.Tensor:
    """The loss's target correlations on a date: future returns (FASCL), or the window's past returns
    for the paper's "observation-aligned targets" ablation (loss "observed")."""
    if loss == "observed":
        return torch.from_numpy(pearson_matrix(historical_returns(cube.close, t, assets)))
    return torch.from_numpy(pearson_matrix(future_returns(cube.close, t, assets)[0]))


@torch.no_grad()
def calibrate_tau(
    model, cube: FeatureCube, dates: np.ndarray, pool: np.ndarray, config: TrainConfig, device, rng
) -> float:
    """The prediction temperature that minimises the starting model's loss (the configured one, with its
    targets) on a few training dates."""
    model.eval()
    unit_norm = getattr(model, "unit_norm", True)
    query_prior = getattr(model, "query_prior", False)
    batches = []
    for t in rng.choice(dates, min(8, len(dates)), replace=False):
        assets = np.flatnonzero(pool[t])
        if len(assets) > config.batch_size:
            assets = rng.choice(assets, config.batch_size, replace=False)
        z = model(*(x.to(device) for x in cube.model_inputs(int(t), assets)))
        batches.append((z, training_target(cube, int(t), assets, config.loss).to(device)))
    model.train()
    grid = np.geomspace(0.002, 0.5, 49)
    # The similarities and targets are computed once per batch; only the temperature varies.
    sims = [(similarity(z, unit_norm, query_prior), c) for z, c in batches]
    losses = [
        np.mean(
            [
                LOSSES[config.loss](s, c, float(tau), config.tau_target, similarity_given=True).item()
                for s, c in sims
            ]
        )
        for tau in grid
    ]
    return float(grid[int(np.argmin(losses))])


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
    enc_config = encoder_config(
        config.encoder, in_channels=len(channel_names(config.channels)), **config.encoder_overrides
    )
    choosing = bool(enc_config.history and config.history_choices and config.shrink_choices)
    longest = max([enc_config.history, *config.history_choices]) if choosing else enc_config.history
    cube = build_cube(panel, config.channels, history=longest)
    pool = cube.eligible & future_complete(cube.close, HORIZON)
    positions = splits.positions(panel.dates)
    train_positions = positions["train"]
    if config.train_days:
        train_positions = train_positions[-config.train_days :]
    train_dates = np.array([t for t in train_positions if pool[t].sum() >= 2])
    if len(train_dates) == 0:
        raise ValueError(f"no training dates with two or more eligible assets before {splits.valid_start}")
    # Every rank computes the same choice of start (it reads only the data); rank 0 also validates.
    validator = Validator(cube, positions["valid"], config, pool) if main or choosing else None
    start_choices: dict[str, float] = {}
    if choosing:
        enc_config, start_choices = choose_start(validator, config, enc_config)
        cube = cube.with_history(enc_config.history)
    if main:
        validator.start_from(cube, enc_config, start_choices)

    model = PatchTransformer(enc_config).to(device)
    unit_norm, query_prior = model.unit_norm, model.query_prior
    use_bf16 = device.type == "cuda" if config.bf16 is None else config.bf16
    learn_tau = config.tau is None
    log_tau = torch.nn.Parameter(torch.tensor(math.log(config.tau or TAU), device=device))
    groups = parameter_groups(model, config.weight_decay, config.history_lr_scale, config.prior_lr_scale)
    if learn_tau:
        groups.append({"params": [log_tau], "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.999), foreach=True)
    loss_fn = LOSSES[config.loss]
    total_steps = config.epochs * config.steps_per_epoch
    warmup = config.warmup_epochs / max(1, config.epochs)
    floor = config.min_lr / config.lr
    budget = 60 * config.max_minutes if config.max_minutes is not None else None

    history: list[dict] = []
    start_epoch, best, stale, step, spent = 0, -math.inf, 0, 0, 0.0
    start_frc = float("nan")
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
        if "tau" not in state or "step" not in state.get("scheduler_state", {}):
            raise ValueError(
                f"{last_file} was written by an earlier version of the trainer (no learned temperature or "
                "time-budget schedule); use a new --out or --no-resume"
            )
        model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer_state"])
        with torch.no_grad():
            log_tau.fill_(math.log(state["tau"]))
        step, spent = state["scheduler_state"]["step"], state["scheduler_state"]["seconds"]
        start_epoch, best, stale = state["epoch"] + 1, state["best_valid_frc"], state["stale_epochs"]
        start_frc = state["start_valid_frc"]
        history = state.get("history", [])
        rng = np.random.default_rng(config.seed + 1_000 * rank + start_epoch)
        if main:
            console.print(
                f"resuming from {last_file} at epoch {start_epoch} (best validation FRC@1 {best:.4f})"
            )
    elif learn_tau:
        with torch.no_grad():
            log_tau.fill_(math.log(calibrate_tau(model, cube, train_dates, pool, config, device, rng)))
    if distributed and learn_tau:
        dist.broadcast(log_tau.data, src=0)  # every rank starts from rank 0's calibration

    ddp_model = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
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
        "start_choices": start_choices,
    }
    baselines = validator.baselines if main else {}

    def checkpoint(epoch: int) -> dict:
        return {
            **meta,
            "model_state": model.state_dict(),
            "optimizer_state": optimizer.state_dict(),
            "scheduler_state": {"step": step, "seconds": spent},
            "tau": math.exp(log_tau.item()),
            "epoch": epoch,
            "best_valid_frc": best,
            "start_valid_frc": start_frc,
            "stale_epochs": stale,
            "pearson_valid_frc": baselines.get("pearson"),
            "baseline_valid_frc": baselines,
            "history": history,
        }

    started = time.perf_counter()
    valid_seconds = 0.0
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    log = open(out_dir / "log.jsonl", "a" if start_epoch > 0 else "w") if main else None
    if main:
        (out_dir / "config.json").write_text(json.dumps(meta, indent=2))
        against = ", ".join(f"{name} {value:.4f}" for name, value in baselines.items())
        console.print(
            f"FASCL {config.encoder} ({meta['parameters']:,} parameters, {config.channels}"
            f"{f', {enc_config.history}-day history' if enc_config.history else ''}, loss {config.loss}, "
            f"tau {math.exp(log_tau.item()):.4f}{' learned' if learn_tau else ''}) on {device}; "
            f"{len(train_dates)} training dates, {len(validator.queries)} validation dates; "
            f"validation FRC@1 of {against}"
        )
        if start_choices:
            tried = ", ".join(f"{name} {value:.4f}" for name, value in start_choices.items())
            console.print(f"start chosen on validation FRC@1: {classical_start(enc_config)} (of {tried})")
        if start_epoch == 0:
            # Step 0: an encoder with a history path scores exactly the classical retriever here.
            tick = time.perf_counter()
            start_frc = best = validator.frc_at_1(model, device, use_bf16)
            valid_seconds += time.perf_counter() - tick
            record = {"epoch": -1, "step": 0, "valid_frc1": start_frc, "baseline_valid_frc1": baselines}
            log.write(json.dumps(record) + "\n")
            log.flush()
            save_checkpoint(checkpoint(-1), out_dir / "best.pt")
            console.print(f"step 0: validation FRC@1 {start_frc:.4f}")

    samples, steps, stopped = 0, 0, "finished all epochs"
    progress = Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  tau {task.fields[tau]:.4f}  "
            "valid FRC@1 {task.fields[valid]}"
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
            lr=config.lr,
            tau=math.exp(log_tau.item()),
            valid=f"{best:.4f}" if best > -math.inf else "-",
        )
        for epoch in range(start_epoch, config.epochs):
            running = 0.0
            ddp_model.train()
            epoch_started = time.perf_counter()
            for _ in range(config.steps_per_epoch):
                # The schedule follows whichever runs out first, the steps or the time budget.
                done = step / max(1, total_steps)
                if budget:  # the budget's clock runs through validation too
                    done = max(done, (spent + valid_seconds + time.perf_counter() - epoch_started) / budget)
                lr = config.lr * lr_factor(done, warmup, floor)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)
                parts, targets = [], []
                for t in rng.choice(train_dates, config.dates_per_step):
                    assets = np.flatnonzero(pool[t])
                    if len(assets) > config.batch_size:
                        assets = rng.choice(assets, config.batch_size, replace=False)
                    parts.append(cube.model_inputs(int(t), assets))
                    targets.append(training_target(cube, int(t), assets, config.loss).to(device))
                inputs = tuple(x.to(device, non_blocking=True) for x in concat_inputs(parts))
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    z = ddp_model(*inputs)
                tau = log_tau.exp()
                lo, loss = 0, 0.0
                for target in targets:
                    zs = z[lo : lo + len(target)]
                    scores = similarity(zs, unit_norm, query_prior)
                    loss = loss + loss_fn(
                        scores, target, tau, config.tau_target, similarity_given=True
                    ) / len(targets)
                    lo += len(target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if distributed and learn_tau:  # DDP averages the model's gradients, not this one
                    dist.all_reduce(log_tau.grad)
                    log_tau.grad /= world
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                loss_value = loss.item()
                running += loss_value
                samples += len(z) * world
                steps += 1
                step += 1
                progress.update(task, advance=1, loss=loss_value, lr=lr, tau=tau.item(), epoch=epoch)
            spent += time.perf_counter() - epoch_started

            out_of_time = budget is not None and spent + valid_seconds > budget
            last_epoch = epoch == config.epochs - 1 or out_of_time
            if main and ((epoch + 1) % config.valid_every == 0 or last_epoch):
                tick = time.perf_counter()
                valid = validator.frc_at_1(model, device, use_bf16)
                valid_seconds += time.perf_counter() - tick
                improved = valid > best
                best, stale = (valid, 0) if improved else (best, stale + 1)
                done = step / max(1, total_steps)
                if budget:
                    done = max(done, (spent + valid_seconds) / budget)
                record = {
                    "epoch": epoch,
                    "step": step,
                    "loss": running / config.steps_per_epoch,
                    "lr": config.lr * lr_factor(done, warmup, floor),  # for the next step
                    "tau": math.exp(log_tau.item()),
                    "valid_frc1": valid,
                    "start_valid_frc1": start_frc,
                    "pearson_valid_frc1": baselines["pearson"],
                    "elapsed_s": time.perf_counter() - started,
                    "valid_share": valid_seconds / (time.perf_counter() - started),
                    "samples": samples,
                }
                if enc_config.history:  # how far the Transformer's gate has opened
                    record["join_norm"] = float(model.join.weight.norm().item())
                    for name in ("recent_gain", "prior_weight"):  # the two scalars that start at zero
                        value = getattr(model.history, name)
                        if value is not None:
                            record[name] = float(value.detach().sum().item())
                history.append(record)
                log.write(json.dumps(record) + "\n")
                log.flush()
                progress.update(task, valid=f"{valid:.4f} (best {best:.4f}, start {start_frc:.4f})")
                state = checkpoint(epoch)
                if improved:
                    save_checkpoint(state, out_dir / "best.pt")
                save_checkpoint(state, last_file)
            elif main:
                save_checkpoint(checkpoint(epoch), last_file)

            # Early stopping may not end a run that has not beaten its start: only the budget can.
            patience_spent = main and stale >= config.patience and best > start_frc
            stop = torch.tensor([int(patience_spent), int(out_of_time)], device=device)
            if distributed:
                dist.broadcast(stop, src=0)
            if stop[0]:
                stopped = f"no better validation FRC@1 for {config.patience} validations"
                break
            if stop[1]:
                stopped = f"time budget of {config.max_minutes:g} minutes spent"
                break
    if log is not None:
        log.close()
    dropped = None
    if main and enc_config.history:
        dropped = drop_an_idle_transformer(out_dir / "best.pt", enc_config, validator, device, use_bf16)
        if dropped is not None:
            with_it, without = dropped["with"], dropped["without"]
            if dropped["dropped"]:
                best = without
            console.print(
                f"the Transformer's part of best.pt: validation FRC@1 {with_it:.4f} with it, {without:.4f} without"
                + ("; best.pt serves without it (and exports skip it)" if dropped["dropped"] else "")
            )
    elapsed = time.perf_counter() - started
    result = TrainResult(
        out_dir=out_dir,
        best_valid_frc=best,
        start_valid_frc=start_frc,
        baseline_valid_frc=baselines,
        epochs_run=epoch + 1 - start_epoch,
        steps=steps,
        samples_per_second=samples / elapsed if elapsed > 0 else 0.0,
        valid_share=valid_seconds / elapsed if elapsed > 0 else 0.0,
        stopped_because=stopped,
        seconds=elapsed,
    )
    if main:
        summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
        summary["gain_over_start"] = best - start_frc
        summary["classical_start"] = classical_start(enc_config)
        summary["start_choices"] = start_choices
        summary["transformer"] = dropped
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if distributed:
        dist.destroy_process_group()
    return result
