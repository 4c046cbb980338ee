"""Scenario 5, job faults: `fascl index build` and `fascl reindex` SIGKILLed at each stage of their work
(ingest, embed, write, publish, activate, prune) while a real `fascl serve` answers queries; then
flipped bytes in each kind of index file.

The jobs run as real processes. FASCL_STOP_AT=<stage> (fascl/jobs/stages.py) makes a job stop itself
(SIGSTOP) on reaching the stage; the test sees it stopped and SIGKILLs it there. After each kill: the
service never answered a non-2xx, SQL's active version is the one before the job (or the job's own
new version when the kill came after its activation), every published version passes `verify`, and a
rerun of the same command completes, activates its version and the service swaps to it. A reindex
killed leaves its `reindex_runs` row `running`; the rerun marks it `abandoned`. At the end no staging
directory is left (every killed build was resumed by its rerun), `fascl index verify` passes, and the
service restarts ready.

Then one byte is flipped in a file of each kind (vectors, ids, faiss, neighbors) of one historical
date each of the served version. A date whose damaged file the service reads (faiss, neighbors) is
refused with 500 `index_corrupt` while every other date keeps answering 200; `fascl index verify`
names every damaged file. (With flat indexes a query reads no vectors or ids file: those dates keep
answering from their sound files, which is what the row records.) Last, a flipped byte in the manifest
of the version before the served one: `fascl index activate` refuses to roll back to it, and the
served version is unchanged.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from fascl.jobs.stages import STAGES, STOP_ENV
from tests.reliability.harness import (
    FASCL,
    FULL,
    REPO,
    Service,
    clone_home,
    engine_for,
    level,
    prepare_database,
    sql_active,
)

TITLE = "5. Job faults"
# Every job start costs seconds (torch): the fast level kills at a few stages, on SQLite alone.
# the fast level: a build killed after its activation (before pruning), a reindex mid-write
BUILD_STAGES = level(("prune",), STAGES)
REINDEX_STAGES = level(("write",), STAGES)
BUILD_DATES = level(10, 40)  # dates each build embeds (--reuse none: every one is embedded)
KINDS = ("vectors", "ids", "neighbors")  # a flat date's files (index/store.py)
SWAP_TIMEOUT_S = 20


class Client(threading.Thread):
    """Queries the service without pause during the jobs and their kills; keeps every non-2xx."""

    def __init__(self, base_url: str, paths: list[str]):
        super().__init__(daemon=True)
        self.base_url, self.paths = base_url, paths
        self.stop = threading.Event()
        self.answers = 0
        self.bad: list[tuple[str, int | str, str]] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10) as http:
            i = 0
            while not self.stop.is_set():
                path = self.paths[i % len(self.paths)]
                i += 1
                try:
                    response = http.get(path)
                    status, text = response.status_code, response.text[:300]
                except httpx.HTTPError as exc:
                    status, text = type(exc).__name__, str(exc)
                self.answers += 1
                if status != 200:
                    self.bad.append((path, status, text))
                time.sleep(0.005)


def process_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def kill_at(stage: str, args: list[str], env: dict, timeout: float = 300) -> str:
    """Run `fascl ARGS` until it stops itself at `stage`, SIGKILL it there; return its output."""
    process = subprocess.Popen(
        FASCL + args,
        env={**env, STOP_ENV: stage},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + timeout
    while process_state(process.pid) != "T":
        if process.poll() is not None:
            raise AssertionError(
                f"fascl {' '.join(args)} exited {process.returncode} before stage {stage}:\n{process.stdout.read()}"
            )
        assert time.monotonic() < deadline, f"fascl {' '.join(args)} did not reach stage {stage}"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    output = process.stdout.read()
    assert f"stage: {stage}" in output, output
    return output


def run_cli(args: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(FASCL + args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def versions_on_disk(indexes: Path) -> list[str]:
    from index.store import IndexStore

    return [info.version for info in IndexStore(indexes, keep=10_000).list_versions()]


def corrupt_versions(indexes: Path) -> dict[str, list[str]]:
    """version -> its problems, for every published version that has any (full checksums)."""
    from index.store import IndexStore

    store = IndexStore(indexes, keep=10_000)
    found = {}
    for version in versions_on_disk(indexes):
        problems = store.verify(version)
        if problems:
            found[version] = [str(p) for p in problems]
    return found


def served_version(service: Service, path: str, expected: str, timeout: float = SWAP_TIMEOUT_S) -> str | None:
    """Wait until `path` answers 200 from `expected`; return the version it last answered from."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        response = httpx.get(service.base_url + path, timeout=10)
        if response.status_code == 200:
            seen = response.json()["index_version"]
            if seen == expected:
                return seen
        time.sleep(0.1)
    return seen


def run_statuses(url: str) -> list[tuple[int, str]]:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from catalogue.models import ReindexRun

    engine = engine_for(url)
    try:
        with Session(engine) as session:
            return [(r.id, r.status) for r in session.scalars(select(ReindexRun).order_by(ReindexRun.id))]
    finally:
        engine.dispose()


def corrected_bars(panel_path: Path, out: Path, round_: int) -> Path:
    """The panel's bars with the last three dates' prices of five tickers scaled (a late correction):
    each round scales differently, so every reindex has dates to embed again."""
    from market.panel import Panel

    bars = Panel.load(panel_path, clean=False).to_long()
    last = np.sort(bars["date"].unique())[-3:]
    tickers = sorted(bars["ticker"].unique())[:5]
    rows = bars["date"].isin(last) & bars["ticker"].isin(tickers)
    for column in ("open", "high", "low", "close"):
        bars.loc[rows, column] *= 1 + 0.01 * round_
    bars["amount"] = bars["close"] * bars["volume"]
    bars.to_parquet(out)
    return out


def flip_byte(file: Path) -> None:
    """Flip one byte in the middle of `file`, written as a new file: other versions sharing the file
    as a hard link keep the sound bytes."""
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tmp = file.with_name(f".{file.name}.flip")
    tmp.write_bytes(bytes(data))
    os.replace(tmp, file)


def test_jobs_killed_at_each_stage_leave_the_served_version_intact(
    reliability_deployment, database_url, tmp_path, scenario
):
    deployment = reliability_deployment
    backend = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    if backend != "sqlite" and not FULL:
        pytest.skip("the fast level runs this scenario on SQLite; FASCL_RELIABILITY=full runs both")
    scenario.title, scenario.database = TITLE, backend
    home = clone_home(deployment, tmp_path / "home")
    indexes = home / "indexes"
    panel = home / "market" / "synthetic"
    shutil.copytree(deployment.panel_path, panel)  # reindex --source rewrites it: a copy of our own
    prepare_database(database_url, deployment, indexes, active=deployment.version)
    env = {
        **os.environ,
        "FASCL_HOME": str(home),
        "FASCL_DATABASE_URL": database_url,
        "FASCL_INDEX_KEEP": "2",
        "FASCL_DATASET": "synthetic",
        "COLUMNS": "200",
    }
    env.pop(STOP_ENV, None)
    check = scenario.check
    kills: list[str] = []

    with Service(home, database_url, tmp_path / "server.log", poll_seconds=0.25) as service:
        service.start()
        dates = httpx.get(service.base_url + "/dates", timeout=10).json()["dates"]
        first_date = dates[-BUILD_DATES]
        tickers = [
            a["ticker"] for a in httpx.get(service.base_url + "/assets?limit=500", timeout=10).json()["items"]
        ]
        served_dates = dates[-BUILD_DATES:]
        paths = [f"/similar/{t}?k=5&date={d}" for t in tickers[:6] for d in served_dates[-3:]]
        paths = [p for p in paths if httpx.get(service.base_url + p, timeout=10).status_code == 200]
        assert paths, "no query answers 200 on the served version"
        client = Client(service.base_url, paths)
        client.start()

        build = ["index", "build", "--model", str(deployment.checkpoint), "--data", str(panel),
                 "--from", first_date, "--no-progress", "--threads", "1", "--reuse", "none"]  # fmt: skip
        jobs = [("build", stage, build) for stage in BUILD_STAGES]
        for round_, stage in enumerate(REINDEX_STAGES, start=1):
            source = corrected_bars(panel, tmp_path / f"bars-{round_}.parquet", round_)
            reindex = [
                "reindex",
                "--model",
                str(deployment.checkpoint),
                "--data",
                str(panel),
                "--source",
                str(source),
            ]
            jobs.append(("reindex", stage, reindex))

        try:
            for job, stage, args in jobs:
                what = f"{job} killed at {stage}"
                before, _ = sql_active(database_url)
                runs_before = run_statuses(database_url)
                kill_at(stage, args, env)
                kills.append(what)
                after, _ = sql_active(database_url)
                if stage == "prune":  # activated before the kill: the job's own version is served
                    check(after not in (before, None) and after in versions_on_disk(indexes),
                          f"{what}: its version, activated before the kill, is the active one")  # fmt: skip
                else:
                    check(after == before, f"{what}: the active version is still {before} (found {after})")
                check(before in versions_on_disk(indexes), f"{what}: the version served before is on disk")
                check(
                    served_version(service, paths[0], after) == after, f"{what}: the service serves {after}"
                )
                check(not corrupt_versions(indexes), f"{what}: every published version verifies")

                rerun = run_cli(args, env)
                check(
                    rerun.returncode == 0,
                    f"{what}: the rerun completes ({rerun.stdout[-500:]}{rerun.stderr[-500:]})",
                )
                active, _ = sql_active(database_url)
                check(active == versions_on_disk(indexes)[-1], f"{what}: the rerun's version is active")
                check(after in versions_on_disk(indexes), f"{what}: the version the rerun replaced is kept")
                check(
                    served_version(service, paths[-1], active) == active,
                    f"{what}: the service swaps to the rerun's version",
                )
                check(not corrupt_versions(indexes), f"{what}: every version verifies after the rerun")
                if job == "reindex":
                    killed = [s for i, s in run_statuses(database_url) if i not in dict(runs_before)]
                    check(killed[:1] == ["abandoned"] and killed[1:] == ["succeeded"],
                          f"{what}: the killed run is marked abandoned, the rerun succeeded ({killed})")  # fmt: skip
        finally:
            client.stop.set()
            client.join(timeout=15)

        staging = indexes / ".staging"
        left = [p.name for p in staging.iterdir()] if staging.is_dir() else []
        check(not left, f"no staging directory left behind (found {left})")
        check(not list(indexes.glob(".trash-*")), "no trash directory left behind")
        verify = run_cli(["index", "verify"], env)
        check(verify.returncode == 0, f"`fascl index verify` passes: {verify.stdout[-800:]}")
        service.restart()
        active, _ = sql_active(database_url)
        check(
            served_version(service, paths[0], active) == active,
            "after a restart the service is ready on the active version",
        )

        # ---------------------------------------------------------- flipped bytes
        from index.store import IndexStore

        version = IndexStore(indexes, keep=10_000).open_version(active, verify="lazy")
        untouched = [p for p in paths if "date=" in p]
        victims = [d for d in version.manifest["dates"][:-1] if f"date={d}" not in " ".join(untouched)][
            : len(KINDS)
        ]
        assert len(victims) == len(KINDS), "not enough unqueried dates to damage one per file kind"
        refused, answered = {}, {}
        ticker = paths[0].split("/")[2].split("?")[0]
        damaged = {kind: version.date_files(date)[kind] for kind, date in zip(KINDS, victims, strict=True)}
        for kind, date in zip(KINDS, victims, strict=True):
            flip_byte(version.path / damaged[kind])
            statuses = []
            for k in (5, 50):  # a table lookup and a search
                response = httpx.get(
                    f"{service.base_url}/similar/{ticker}", params={"date": date, "k": k}, timeout=10
                )
                code = response.json().get("error", {}).get("code") if response.status_code != 200 else None
                statuses.append((response.status_code, code))
            refused[kind] = any(s == (500, "index_corrupt") for s in statuses)
            answered[kind] = statuses
            check(all(s == (500, "index_corrupt") or s[0] == 200 for s in statuses),
                  f"flipped {kind}: {date} answers 200 from sound files or 500 index_corrupt ({statuses})")  # fmt: skip
            others = [httpx.get(service.base_url + p, timeout=10).status_code for p in paths]
            check(
                set(others) == {200}, f"flipped {kind}: every other date keeps answering 200 ({set(others)})"
            )
        for kind in KINDS:  # every one of them is read, checked, when the date loads
            check(
                refused[kind],
                f"flipped {kind}: the date is refused with 500 index_corrupt ({answered[kind]})",
            )
        verify = run_cli(["index", "verify", active], env)
        check(verify.returncode == 1 and all(Path(rel).name in verify.stdout for rel in damaged.values()),
              f"`fascl index verify` exits 1 naming every damaged file ({verify.stdout[-800:]})")  # fmt: skip

        # The manifest of the version a rollback would go to: the rollback is refused, nothing changes.
        previous = next(v for v in reversed(versions_on_disk(indexes)) if v != active)
        flip_byte(indexes / previous / "manifest.json")
        rollback = run_cli(["index", "activate", previous], env)
        check(rollback.returncode == 1 and "manifest.json" in rollback.stdout,
              f"flipped manifest: `fascl index activate` refuses it ({rollback.stdout[-500:]})")  # fmt: skip
        check(sql_active(database_url)[0] == active, "flipped manifest: the active version is unchanged")
        others = [httpx.get(service.base_url + p, timeout=10).status_code for p in paths]
        check(
            set(others) == {200}, f"flipped manifest: the served version keeps answering 200 ({set(others)})"
        )
        alive = service.alive()

    check(alive, "the service stayed up")
    check(
        not client.bad, f"no non-2xx while jobs were killed and rerun ({len(client.bad)}: {client.bad[:3]})"
    )
    scenario.load = (
        f"one client querying {len(paths)} GET /similar paths without pause ({client.answers:,} answers) "
        f"during {len(jobs)} killed jobs and their reruns; {deployment.n_assets} assets, "
        f"{BUILD_DATES} dates a build"
    )
    scenario.faults = (
        f"SIGKILL of `fascl index build` at {', '.join(BUILD_STAGES)} and of `fascl reindex --source` at "
        f"{', '.join(REINDEX_STAGES)}; then one flipped byte in a {', '.join(KINDS)} file of the served version, "
        "and in the manifest of the version before it"
    )
    scenario.lost = (
        f"{len(client.bad)} non-2xx during the kills; damaged dates: "
        + ", ".join(
            f"{k} {'refused (index_corrupt)' if refused[k] else 'served from its sound files'}" for k in KINDS
        )
        + "; the damaged manifest's version refused by `fascl index activate`"
    )
    scenario.metrics = {
        "kills": kills,
        "answers": client.answers,
        "non_2xx": len(client.bad),
        "flipped": answered,
        "full": FULL,
    }
    scenario.conclude()
