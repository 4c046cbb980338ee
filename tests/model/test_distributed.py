"""Two CPU processes under torchrun (gloo): DDP training runs, rank 0 writes, the ranks stay in sync."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from model.checkpoint import read_checkpoint

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import io, json, os, sys
    import torch
    from rich.console import Console

    import model.train as mt
    from market.synthetic import generate

    out = sys.argv[1]
    rank = int(os.environ["RANK"])
    models = []

    class Recorded(mt.PatchTransformer):  # keep a handle on the model each rank trains
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            models.append(self)

    mt.PatchTransformer = Recorded
    tau_of = []  # the learned temperature of this rank: the parameter AdamW is given last
    optimizer_class = mt.torch.optim.AdamW

    def recording_adamw(groups, **kwargs):
        tau_of.append(groups[-1]["params"][0])
        return optimizer_class(groups, **kwargs)

    mt.torch.optim.AdamW = recording_adamw
    panel = generate(40, 3, seed=0).panel
    config = mt.TrainConfig(
        encoder="tiny", batch_size=24, epochs=2, steps_per_epoch=3, warmup_epochs=1, threads=1, seed=0,
        tau=None,
    )
    result = mt.train(panel, config, out, resume=False, console=Console(file=io.StringIO()))
    torch.save(models[0].state_dict(), os.path.join(out, f"rank{rank}_weights.pt"))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
        json.dump(
            {
                "world": int(os.environ["WORLD_SIZE"]),
                "epochs_run": result.epochs_run,
                "steps": result.steps,
                "best_valid_frc": result.best_valid_frc,
                "stopped_because": result.stopped_because,
                "tau": float(mt.math.exp(tau_of[0].item())) if tau_of else None,
            },
            fh,
        )
    """
)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    script = tmp / "ddp_train.py"
    script.write_text(SCRIPT)
    out = tmp / "out"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "CUDA_VISIBLE_DEVICES": "",  # gloo on CPU even where a GPU is present
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--standalone",
            str(script),
            str(out),
        ],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, out


def test_two_process_run_succeeds(ddp_run):
    proc, out = ddp_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("best.pt", "last.pt", "log.jsonl", "config.json", "summary.json"):
        assert (out / name).is_file(), name
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [-1, 0, 1]  # rank 0 alone logs: step 0, then one line per epoch
    assert log[-1]["samples"] == 2 * 3 * 24 * 2  # epochs x steps x batch x world
    results = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    for result in results:
        assert result["world"] == 2
        assert result["epochs_run"] == 2 and result["steps"] == 6
        assert result["stopped_because"] == "finished all epochs"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 2
    assert summary["best_valid_frc"] == pytest.approx(results[0]["best_valid_frc"])
    assert read_checkpoint(out / "last.pt")["epoch"] == 1


def test_ranks_end_with_identical_weights(ddp_run):
    """Each rank draws different dates; only gradient averaging keeps the replicas equal."""
    proc, out = ddp_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0 = torch.load(out / "rank0_weights.pt")
    w1 = torch.load(out / "rank1_weights.pt")
    assert w0.keys() == w1.keys()
    for key in w0:
        torch.testing.assert_close(w0[key], w1[key], rtol=0, atol=1e-6, msg=key)
    # the learned temperature lives outside the DDP module; its gradient is averaged by hand
    taus = [json.loads((out / f"rank{r}.json").read_text())["tau"] for r in (0, 1)]
    assert taus[0] == pytest.approx(taus[1], rel=1e-6)
    assert taus[0] == pytest.approx(read_checkpoint(out / "last.pt")["tau"], rel=1e-6)
    saved = read_checkpoint(out / "last.pt")["model_state"]
    for key in w0:
        assert torch.equal(saved[key], w0[key]), key
