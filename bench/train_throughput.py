"""Training throughput of the FASCL trainer: samples per second for the `small` and `paper` encoders.

Runs the real trainer (model.train.train) for a fixed number of steps on a synthetic market and
reports samples/s over the optimisation steps only. On a GPU it also projects the wall time of a
full paper-length run (100 epochs x 300 steps x 4,096 assets).

    .venv/bin/python bench/train_throughput.py [--steps 20] [--assets 1024] [--batch 512]
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from rich.console import Console
from rich.table import Table

from market.synthetic import generate
from model.encoder import PatchTransformer, count_parameters, encoder_config
from model.train import TrainConfig, train

PAPER_SAMPLES = 100 * 300 * 4096


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--assets", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--years", type=float, default=4)
    parser.add_argument("--configs", default="small,paper")
    args = parser.parse_args()
    console = Console()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    panel = generate(n_assets=args.assets, years=args.years, seed=0).panel

    table = Table(
        title=f"training throughput on {device} ({torch.get_num_threads()} threads), batch {args.batch}"
    )
    for column in ("config", "parameters", "samples/s", "vs small", "full paper run (h)"):
        table.add_column(column, justify="right")
    baseline = None
    for name in args.configs.split(","):
        config = TrainConfig(
            encoder=name,
            batch_size=args.batch,
            epochs=1,
            steps_per_epoch=args.steps,
            warmup_epochs=0,
            valid_stride=10_000,
            max_valid_assets=64,
        )
        with tempfile.TemporaryDirectory() as out:
            result = train(panel, config, out, resume=False, console=Console(quiet=True))
        baseline = baseline or result.samples_per_second
        params = count_parameters(PatchTransformer(encoder_config(name)))
        table.add_row(
            name,
            f"{params:,}",
            f"{result.samples_per_second:,.0f}",
            f"{result.samples_per_second / baseline:.3f}",
            f"{PAPER_SAMPLES / result.samples_per_second / 3600:,.1f}",
        )
    console.print(table)


if __name__ == "__main__":
    main()
