"""`build_version` under torchrun with two CPU processes (gloo): each rank embeds its share of the
dates into its own staging directory, rank 0 publishes one version; a rank that dies leaves its
finished dates for the rerun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from index.store import IndexStore
from tests.index.conftest import SHORT, build

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import io, json, os, sys
    from rich.console import Console
    from index.build import build_version
    from index.store import IndexStore
    from market.panel import Panel

    checkpoint, panel_path, root, out, start, end, fail_after = sys.argv[1:8]
    rank = int(os.environ["RANK"])

    def on_date(date, done):
        if rank == 1 and int(fail_after) and done >= int(fail_after):
            raise SystemExit(f"rank 1 stops after {done} dates")

    result = build_version(
        checkpoint, Panel.load(panel_path), store=IndexStore(root), start=start, end=end, threads=1,
        precision="fp32", console=Console(file=io.StringIO()), progress=False, on_date=on_date,
    )
    with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
        json.dump({"version": result.version, "embedded": result.embedded_dates,
                   "resumed": result.resumed_dates, "n_dates": result.n_dates}, fh)
    """
)


def torchrun(tmp_path, sample, root: Path, out: Path, fail_after: int = 0) -> subprocess.CompletedProcess:
    script = tmp_path / "distributed_build.py"
    script.write_text(SCRIPT)
    out.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "CUDA_VISIBLE_DEVICES": "",  # gloo on CPU even where a GPU is present
    }
    args = [sample.checkpoint.with_name("last.pt"), sample.panel_path, root, out, *SHORT, fail_after]
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", str(script),
         *map(str, args)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def vectors_of(root: Path, version: str) -> dict[str, np.ndarray]:
    opened = IndexStore(root).open_version(version)
    return {d: np.asarray(opened.read_vectors(d)[1]) for d in opened.manifest["dates"]}


def test_two_ranks_publish_one_version_equal_to_a_single_process_build(sample, checkpoint, panel, tmp_path):
    root = tmp_path / "indexes"
    proc = torchrun(tmp_path, sample, root, tmp_path / "out")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / "out" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # every rank returns the published version
    assert [v.version for v in IndexStore(root).list_versions()] == [ranks[0]["version"]]
    assert not list((root / ".staging").iterdir())  # the ranks' staging directories were consumed
    manifest = IndexStore(root).open_version(ranks[0]["version"]).manifest
    assert manifest["build"]["ranks"] == 2 and ranks[0]["embedded"] == ranks[0]["n_dates"]

    single = build(checkpoint, panel, tmp_path / "single", precision="fp32")
    assert single.n_dates == ranks[0]["n_dates"]
    two, one = vectors_of(root, ranks[0]["version"]), vectors_of(tmp_path / "single", single.version)
    assert list(two) == list(one)
    for date in one:
        np.testing.assert_allclose(two[date], one[date], atol=1e-5)


def test_a_rank_that_dies_leaves_its_dates_for_the_rerun(sample, tmp_path):
    root = tmp_path / "indexes"
    failed = torchrun(tmp_path, sample, root, tmp_path / "out", fail_after=3)
    assert failed.returncode != 0 and "rank 1 stops after 3 dates" in failed.stdout + failed.stderr
    assert IndexStore(root).list_versions() == []  # nothing published
    rerun = torchrun(tmp_path, sample, root, tmp_path / "again")
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    result = json.loads((tmp_path / "again" / "rank0.json").read_text())
    # rank 1's three committed dates (and whatever rank 0 finished) are not embedded again
    assert result["resumed"] >= 3 and result["embedded"] + result["resumed"] == result["n_dates"]
    assert not list((root / ".staging").iterdir())
