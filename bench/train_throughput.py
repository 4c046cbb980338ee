"""Training throughput of the FASCL trainer, validation included, and the quality cost of bf16 on the CPU.

Runs the real trainer (model.train.train) for a few steps on a synthetic market and reports wall-clock
samples/s of the whole run with its validations (TrainResult.samples_per_second) and the share of the
wall clock spent validating (TrainResult.valid_share), for these variants:

    a  small, batch 512, fp32                      (the baseline: every ratio is against it)
    b  small, batch 512, bf16 autocast (bf16=True)
    c  small, the full cross-section per step (batch >= assets), 1 date per step
    d  small, batch 512, 2 dates per step
    e  paper, batch 512, fp32

Figures are ratios against (a) measured in the same process, as this project's benchmarks print them;
the absolute samples/s depend on the machine and its load. c, d and e use fp32 like a, so that only
the named change differs (on CUDA the trainer's default would be bf16).

Validation mix. The `small` preset validates the validation year at stride 16 (up to 2,048 assets a
date) once every 60 steps. A run of N steps here validates twice (step 0 and the end), so by default
its validation dates are every 16 * 120 / N trading days: the same validation work per training step as
the preset's run, whatever N. The valid share is thus an estimate of the share in a real run.

bf16 quality: the model trained by (a) embeds one batch of a validation date in fp32 and under bf16
autocast; the table gives the largest absolute difference of the embeddings, the share of rows whose
top-1 neighbour (by the model's score) changes, and FRC@1 on that batch both ways. The same for the
Transformer's own unit vector (the input of the gate that joins it to the history path): after a
few steps the gate is nearly closed and the full embedding is mostly the fp32 history path, the
Transformer part shows what bf16 does once training has opened it.

Temperature. The small preset calibrates its temperature before training (outside the timed part of
a run, but half a minute of this benchmark on 2 busy cores) and then learns it. Here it is calibrated
once and fixed for every small run, which leaves one scalar out of the optimiser; --calibrate-each
runs the preset's way.

Threads. Every run uses one torch thread by default. On a machine other jobs share, torch's threads
wait for each other: with 2 threads on 2 busy cores (a) ran at 116 to 138 samples/s, with one at 593
to 642, and the slowdown changed from minute to minute (one 2-thread run of (a) made 717), so the
ratios meant little. `--threads 0` uses the
trainer's default (all cores), right on an idle machine.

The defaults (20 small steps, 4 paper steps, 1,200 assets, one thread) take about 3 minutes on 2
busy cores. (a) runs first and again last; the ratios are against the geometric mean of its two
runs, and a gap between them says the machine's load moved during the run.

    .venv/bin/python bench/train_throughput.py [--steps 20] [--paper-steps 4] [--assets 1200] [--threads 1]
    .venv/bin/python bench/train_throughput.py --variants a,b --steps 30
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from market.synthetic import generate
from model.checkpoint import load_encoder
from model.encoder import PatchTransformer, count_parameters, encoder_config
from model.features import build_cube
from model.loss import similarity
from model.metrics import frc_at_k, top_k_peers
from model.splits import default_splits
from model.targets import future_complete, future_returns, pearson_matrix
from model.train import PRESETS, TrainConfig, calibrate_tau, preset_config, train

PRESET_VALID_STRIDE = 16  # the small preset's validation: every 16th date of the validation year
# ... once every `valid_every` epochs of `steps_per_epoch` steps
PRESET_STEPS_PER_VALID = PRESETS["small"]["steps_per_epoch"] * PRESETS["small"]["valid_every"]


@dataclass(frozen=True)
class Variant:
    key: str
    encoder: str
    label: str
    batch: int | None  # None: the full cross-section (the panel's number of assets)
    dates_per_step: int = 1
    bf16: bool = False


VARIANTS = (
    Variant("a", "small", "batch 512, fp32", 512),
    Variant("b", "small", "batch 512, bf16 autocast", 512, bf16=True),
    Variant("c", "small", "full cross-section, 1 date/step", None),
    Variant("d", "small", "batch 512, 2 dates/step", 512, dates_per_step=2),
    Variant("e", "paper", "batch 512, fp32", 512),
)


def valid_stride_for(steps: int, given: int | None) -> int:
    """Validation stride giving the preset's validation work per step over 2 validations in `steps`."""
    if given:
        return given
    return max(1, round(PRESET_VALID_STRIDE * 2 * PRESET_STEPS_PER_VALID / steps))


def variant_config(v: Variant, n_assets: int, steps: int, valid_stride: int, max_valid: int) -> TrainConfig:
    config = preset_config(
        v.encoder,
        batch_size=v.batch or n_assets,
        dates_per_step=v.dates_per_step,
        epochs=1,
        steps_per_epoch=steps,
        warmup_epochs=0,
        valid_every=1,
        valid_stride=valid_stride,
        max_valid_assets=max_valid,
        patience=10_000,
        bf16=v.bf16,
    )
    return replace(config, max_minutes=None)  # preset_config ignores None; no time budget here


def final_valid_frc(out: Path) -> float:
    lines = (out / "log.jsonl").read_text().splitlines()
    return float(json.loads(lines[-1])["valid_frc1"])


def top1(scores: np.ndarray) -> np.ndarray:
    return top_k_peers(scores, 1)[:, 0]


@torch.no_grad()
def bf16_quality(checkpoint: Path, panel, rows: int, seed: int) -> list[tuple[str, dict]]:
    """fp32 against bf16 autocast embeddings of one batch of a validation date, same weights."""
    model, _ = load_encoder(checkpoint)
    cube = build_cube(panel, "ohlcva", history=model.config.history)
    pool = cube.eligible & future_complete(cube.close)
    valid = default_splits(panel.dates).positions(panel.dates)["valid"]
    t = int(valid[np.argmax(pool[valid].sum(axis=1))])
    rng = np.random.default_rng(seed)
    assets = np.flatnonzero(pool[t])
    assets = np.sort(rng.choice(assets, min(rows, len(assets)), replace=False))
    future = pearson_matrix(future_returns(cube.close, t, assets)[0])
    inputs = cube.model_inputs(t, assets)

    captured: list[torch.Tensor] = []
    hook = model.join.register_forward_hook(lambda m, args, out: captured.append(args[0].float()))
    try:
        full32 = model(*inputs).float()
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            full16 = model(*inputs).float()
    finally:
        hook.remove()
    inner32, inner16 = captured

    out = []
    for name, z32, z16 in (
        ("embedding (what is ranked)", full32, full16),
        ("Transformer unit vector", inner32, inner16),
    ):
        # what is ranked reads a candidate prior as 1 on the query side; the Transformer's vector has none
        prior = model.query_prior and z32.shape[1] == model.dim
        s32 = similarity(z32.double(), False, prior).numpy()
        s16 = similarity(z16.double(), False, prior).numpy()
        out.append(
            (
                name,
                {
                    "rows": len(assets),
                    "date": str(panel.dates[t]),
                    "max_abs_diff": float((z32 - z16).abs().max()),
                    "max_abs": float(z32.abs().max()),
                    "top1_changed": float(np.mean(top1(s32) != top1(s16))),
                    "frc32": float(frc_at_k(s32, future, 1).mean()),
                    "frc16": float(frc_at_k(s16, future, 1).mean()),
                },
            )
        )
    return out


def calibrated_tau(panel, config: TrainConfig) -> float:
    """The prediction temperature the trainer would calibrate for `config` (model.train.calibrate_tau,
    same seed and dates), computed once here rather than in every run: 8 batches x 49 temperatures of
    the loss take half a minute on 2 busy cores, outside the timed part of a run but inside this
    benchmark's budget."""
    enc = encoder_config(config.encoder)
    cube = build_cube(panel, config.channels, history=enc.history)
    pool = cube.eligible & future_complete(cube.close)
    train_dates = default_splits(panel.dates).positions(panel.dates)["train"]
    train_dates = np.array([t for t in train_dates if pool[t].sum() >= 2])
    torch.manual_seed(config.seed)
    model = PatchTransformer(enc)
    rng = np.random.default_rng(config.seed)
    return calibrate_tau(model, cube, train_dates, pool, config, torch.device("cpu"), rng)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="a,b,c,d,e", help="comma-separated keys; a always runs first")
    parser.add_argument("--steps", type=int, default=20, help="optimisation steps of the small variants")
    parser.add_argument("--paper-steps", type=int, default=4, help="steps of the paper variant (slow on CPU)")
    parser.add_argument("--assets", type=int, default=1200)
    parser.add_argument("--years", type=float, default=4)
    parser.add_argument("--batch", type=int, default=512, help="the batch of a, b, d and e")
    parser.add_argument(
        "--valid-stride",
        type=int,
        default=None,
        help="validation stride (default: 16 * 120 / steps, the small preset's validation work per step)",
    )
    parser.add_argument("--max-valid-assets", type=int, default=TrainConfig.max_valid_assets)
    parser.add_argument(
        "--calibrate-each",
        action="store_true",
        help="let every small run calibrate and learn its temperature, as the preset does (about 30 s more "
        "setup per run on 2 busy cores); default: calibrate once, then fix it for every small run",
    )
    parser.add_argument("--no-repeat", action="store_true", help="run (a) once, not again at the end")
    parser.add_argument("--quality-rows", type=int, default=512, help="rows of the bf16 quality batch")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of every run; 0: the trainer's default, all cores (see above)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    console = Console(width=max(Console().width, 150))

    keys = [k.strip() for k in args.variants.split(",") if k.strip()]
    known = {v.key: v for v in VARIANTS}
    unknown = [k for k in keys if k not in known]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    chosen = [known["a"]] + [known[k] for k in dict.fromkeys(keys) if k != "a"]

    args.threads = args.threads or None  # None: the trainer's default
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    panel = generate(n_assets=args.assets, years=args.years, seed=args.seed).panel
    device = "cuda" if torch.cuda.is_available() else "cpu"
    console.print(
        f"synthetic market: {panel.n_assets:,} assets x {panel.n_dates:,} dates "
        f"({time.perf_counter() - started:.1f} s); device {device}, "
        f"{args.threads or os.cpu_count()} threads, load average {os.getloadavg()[0]:.1f}"
    )
    if not args.threads and os.getloadavg()[0] > 1.0:
        console.print(
            "[yellow]note: other jobs are running (load average above 1); torch's threads then wait for "
            "each other and every run slows down several times, the small-batch ones most. --threads 1 "
            "measures steadier figures on a shared machine.[/]"
        )
    valid_positions = default_splits(panel.dates).positions(panel.dates)["valid"]

    def config_of(v: Variant, steps: int, stride: int, tau: float | None) -> TrainConfig:
        config = variant_config(
            replace(v, batch=v.batch and args.batch), panel.n_assets, steps, stride, args.max_valid_assets
        )
        fixed = {"tau": tau} if tau is not None else {}
        return replace(config, seed=args.seed, threads=args.threads, **fixed)

    tau = None
    if not args.calibrate_each:
        tick = time.perf_counter()
        tau = calibrated_tau(panel, config_of(known["a"], args.steps, 1, None))
        console.print(
            f"temperature calibrated once: {tau:.4f}, fixed for the small runs ({time.perf_counter() - tick:.0f} s)"
        )

    # (a) runs first and again last: the ratio is against the geometric mean of both, and their gap
    # shows how much the machine's load moved during the run (other jobs share these cores).
    runs_order = chosen + ([known["a"]] if len(chosen) > 1 and not args.no_repeat else [])
    measured, quality = [], None
    for i, v in enumerate(runs_order):
        steps = args.paper_steps if v.encoder == "paper" else args.steps
        stride = valid_stride_for(steps, args.valid_stride)
        config = config_of(v, steps, stride, tau if v.encoder == "small" else None)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            tick = time.perf_counter()
            result = train(panel, config, out, resume=False, console=Console(quiet=True))
            setup = time.perf_counter() - tick - result.seconds
            valid_frc = final_valid_frc(out)
            runs = len((out / "log.jsonl").read_text().splitlines())  # validations run
            if i == 0 and "b" in keys:
                quality = bf16_quality(out / "last.pt", panel, args.quality_rows, args.seed)
        again = i > 0 and v.key == "a"
        measured.append((v, config, stride, result, setup, valid_frc, runs, again))
        console.print(
            f"  ran ({v.key}) {v.encoder}, {v.label}{' again' if again else ''}: {result.seconds:.1f} s"
        )

    base_runs = [m[3].samples_per_second for m in measured if m[0].key == "a"]
    baseline = float(np.exp(np.mean(np.log(base_runs))))
    rows = []
    for v, config, stride, result, setup, valid_frc, runs, again in measured:
        params = count_parameters(PatchTransformer(encoder_config(v.encoder)))
        rows.append(
            (
                f"({v.key}) {v.encoder}",
                (v.label if v.batch else f"{v.label} ({config.batch_size:,})") + (", again" if again else ""),
                f"{params:,}",
                f"{result.steps} x {result.samples_per_second * result.seconds / max(1, result.steps):,.0f}",
                f"{len(valid_positions[::stride])} x {runs}",
                f"{result.seconds:.1f} (+{setup:.0f})",
                f"{result.samples_per_second:,.1f}",
                f"{result.samples_per_second / max(1e-9, 1.0 - result.valid_share):,.1f}",
                f"{result.valid_share:.0%}",
                f"{result.samples_per_second / baseline:.2f}",
                f"{valid_frc:.4f}",
            )
        )

    table = Table(
        title=f"training throughput on {device}, validation included; ratio against (a) in this run "
        f"({panel.n_assets:,} synthetic assets)"
        + (" (geometric mean of its two runs)" if len(base_runs) > 1 else "")
    )
    for column in (
        "variant",
        "setting",
        "parameters",
        "steps x samples",
        "valid dates x runs",
        "wall s (+setup)",
        "samples/s",
        "steps only",
        "valid share",
        "vs (a)",
        "valid FRC@1",
    ):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(
        "samples/s: samples trained / wall clock of the run with its validations (step 0 and the end); the "
        "setup (feature cube, validator) is outside it. steps only: the same without the validation time. "
        "valid FRC@1: after the last step (a sanity check, not a quality measure after so few steps)."
    )

    if len(base_runs) > 1 and max(base_runs) > 1.15 * min(base_runs):
        console.print(
            f"[yellow]note: the two runs of (a) differ by {max(base_runs) / min(base_runs) - 1:.0%}: the machine's "
            "load changed during the benchmark, so the ratios carry about that much noise; rerun, or with "
            "more --steps[/]"
        )
    if quality:
        q = Table(
            title=f"bf16 autocast against fp32, same weights (the model of (a)), one batch of "
            f"{quality[0][1]['rows']} assets on {quality[0][1]['date']}"
        )
        for column in (
            "vectors",
            "max |fp32 - bf16|",
            "max |fp32|",
            "top-1 changed",
            "FRC@1 fp32",
            "FRC@1 bf16",
        ):
            q.add_column(column, justify="right")
        for name, m in quality:
            q.add_row(
                name,
                f"{m['max_abs_diff']:.2e}",
                f"{m['max_abs']:.3f}",
                f"{m['top1_changed']:.1%}",
                f"{m['frc32']:.4f}",
                f"{m['frc16']:.4f}",
            )
        console.print(q)
    console.print(f"total {time.perf_counter() - started:.0f} s, load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
