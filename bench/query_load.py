"""Load test of GET /similar against a real uvicorn server, beside the framework's floor.

Builds (once, under --home) a synthetic market of --assets assets, a checkpoint and an index of the
last few dates; starts `fascl serve` pinned to one core; drives it with wrk (Debian package `wrk`)
pinned to the other core over 32 keep-alive connections, random tickers, a fixed count of requests
after a warm-up (the Lua script stops wrk at the count; -d is only a ceiling). In the same run it
measures the floor: a bare async FastAPI endpoint under the same uvicorn settings that returns a
canned body of the same size. Prints throughput, p50 and p99 of both and the ratio.

    .venv/bin/python bench/query_load.py [--assets 5000] [--requests 50000] [--connections 32]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
console = Console()
# Newest and historical dates alike (--historical 1.0): at least 0.9 of the floor, p99 under 8 ms.
TARGET_RATIO, TARGET_P99_MS = 0.9, 8.0

LUA = """
-- Stops after a fixed count of requests sent: the thread stops, and a SIGINT ends wrk's sleep for -d.
-- Throughput is the responses received over the run's own clock (first request to the stop). No
-- `response` callback: wrk would then build a Lua table of headers per response, and the driver,
-- not the server, would set the pace.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } fascl_timespec;
int clock_gettime(int clk_id, fascl_timespec *tp);
]]
local function now()
  local ts = ffi.new("fascl_timespec")
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

local paths = {}
for line in io.lines("%(paths)s") do paths[#paths + 1] = line end
local limit, count, started = %(limit)d, 0, nil
request = function()
  if started == nil then started = now() end
  count = count + 1
  if count == limit then
    elapsed = now() - started
    wrk.thread:stop()
    os.execute("(sleep 0.05; kill -INT $PPID) &")
  end
  return wrk.format("GET", paths[math.random(#paths)])
end
local threads = {}
setup = function(thread) threads[#threads + 1] = thread end
done = function(summary, latency, requests)
  io.write(string.format('{"requests": %%d, "seconds": %%f, "errors": %%d, "non2xx": %%d, "p50": %%f, "p99": %%f}\\n',
    summary.requests, threads[1]:get("elapsed") or -1,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3))
end
"""


FLOOR_APP = """
from fastapi import FastAPI
from starlette.responses import Response

BODY = open({body!r}, "rb").read()
app = FastAPI()


@app.get("/similar/{{ticker}}")
async def similar(ticker: str) -> Response:
    return Response(BODY, media_type="application/json")
"""


def prepare(home: Path, assets: int) -> None:
    """Synthetic market, a (briefly trained) small checkpoint, an index of the last dates and a
    SQLite catalogue with the assets loaded and that index active (fascl.jobs.sample)."""
    from fascl.jobs.sample import SampleSpec, build_sample
    from model.train import preset_config

    if (home / "ready").exists():
        return
    shutil.rmtree(home, ignore_errors=True)
    console.print(f"preparing {assets} assets under {home} (once)")
    training = preset_config(
        "small",
        epochs=1,
        steps_per_epoch=2,
        warmup_epochs=0,
        batch_size=256,
        valid_start="2010-11-01",
        test_start="2011-03-01",
        max_valid_assets=256,
    )
    spec = SampleSpec(
        assets=assets,
        years=1.5,
        seed=0,
        gaps=(),
        training=training,
        model_name="bench",
        index_starts=(-5,),
        keep=3,
        progress=True,
        database_url=f"sqlite:///{home / 'fascl.db'}",
    )
    sample = build_sample(home, spec)
    (home / "ready").write_text(sample.versions[-1])


def wait_ready(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server not ready at {url}")


def all_tickers(port: int) -> list[str]:
    tickers: list[str] = []
    while True:
        page = httpx.get(
            f"http://127.0.0.1:{port}/assets", params={"offset": len(tickers), "limit": 500}
        ).json()
        tickers += [a["ticker"] for a in page["items"]]
        if not page["items"] or len(tickers) >= page["total"]:
            return tickers


def drive(port: int, paths_file: Path, requests: int, connections: int, work: Path) -> dict:
    """One wrk run of `requests` requests over `connections` keep-alive connections, pinned to the
    second core. One wrk thread, so the script's counter is the run's."""
    script = work / "drive.lua"
    script.write_text(LUA % {"paths": paths_file, "limit": requests})
    ceiling = max(60, requests // 500)
    command = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{ceiling}s", "-s", str(script)]
    out = subprocess.run(
        [*command, f"http://127.0.0.1:{port}"], capture_output=True, text=True, check=True
    ).stdout
    result = json.loads([x for x in out.splitlines() if x.startswith("{")][-1])
    if result["seconds"] <= 0:
        raise SystemExit(f"wrk ended before {requests} responses (ceiling {ceiling} s): {out}")
    result["rps"] = result["requests"] / result["seconds"]
    return result


def serve(cmd: list[str], env: dict, port: int, ready_path: str) -> subprocess.Popen:
    process = subprocess.Popen(
        ["taskset", "-c", "0", *cmd], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_ready(f"http://127.0.0.1:{port}{ready_path}", process)
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=50_000, help="measured requests per server")
    parser.add_argument("--warmup", type=int, default=10_000, help="warm-up requests per server")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--historical",
        type=float,
        default=0.0,
        help="share of requests that name a random older indexed date (a faiss search rather than the "
        "newest date's precomputed table)",
    )
    parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "fascl-bench-query-load")
    args = parser.parse_args()
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        raise SystemExit("this benchmark needs wrk and taskset: apt-get install wrk util-linux")

    prepare(args.home, args.assets)
    work = Path(tempfile.mkdtemp(prefix="fascl-load-"))
    env = {
        **os.environ,
        "FASCL_HOME": str(args.home),
        "FASCL_OMP_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "FASCL_DATABASE_URL": f"sqlite:///{args.home / 'fascl.db'}",
    }
    env.pop("FASCL_REQUIRE_API_KEY", None)

    port = 18431
    server = serve(
        [sys.executable, "-m", "fascl.cli.main", "serve", "--port", str(port), "--log-level", "warning"],
        env,
        port,
        "/health/ready",
    )
    try:
        tickers = all_tickers(port)
        older = httpx.get(f"http://127.0.0.1:{port}/dates").json()["dates"][:-1]
        rng = random.Random(0)
        paths = [
            f"/similar/{rng.choice(tickers)}?k=10"
            + (f"&date={rng.choice(older)}" if older and rng.random() < args.historical else "")
            for _ in range(10_000)
        ]
        paths_file = work / "paths.txt"
        paths_file.write_text("\n".join(paths) + "\n")
        body = httpx.get(f"http://127.0.0.1:{port}{paths[0]}").content
        drive(port, paths_file, args.warmup, args.connections, work)
        service = drive(port, paths_file, args.requests, args.connections, work)
    finally:
        server.terminate()
        server.wait(timeout=20)

    (work / "body.json").write_bytes(body)
    (work / "floor_app.py").write_text(textwrap.dedent(FLOOR_APP.format(body=str(work / "body.json"))))
    floor_port = port + 1
    floor = serve(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "floor_app:app",
            "--port",
            str(floor_port),
            "--no-access-log",
            "--log-level",
            "warning",
            "--app-dir",
            str(work),
        ],
        env,
        floor_port,
        paths[0],
    )
    try:
        drive(floor_port, paths_file, args.warmup, args.connections, work)
        baseline = drive(floor_port, paths_file, args.requests, args.connections, work)
    finally:
        floor.terminate()
        floor.wait(timeout=20)

    table = Table(
        title=f"GET /similar, {args.assets:,} assets, {args.connections} connections, "
        f"{args.historical:.0%} on older dates, "
        f"{args.requests:,} requests per run after {args.warmup:,} warm-up, body {len(body)} bytes (server core 0, wrk core 1)"
    )
    for column in ("server", "requests/s", "p50 ms", "p99 ms", "errors"):
        table.add_column(column, justify="right")
    for name, r in (("FASCL service", service), ("floor: canned async endpoint", baseline)):
        table.add_row(
            name, f"{r['rps']:,.0f}", f"{r['p50']:.2f}", f"{r['p99']:.2f}", str(r["errors"] + r["non2xx"])
        )
    console.print(table)
    ratio = service["rps"] / baseline["rps"]
    verdict = "PASS" if ratio >= TARGET_RATIO and service["p99"] < TARGET_P99_MS else "FAIL"
    console.print(
        f"throughput ratio service/floor = {ratio:.2f} (target >= {TARGET_RATIO:.2f}); "
        f"p99 {service['p99']:.2f} ms (target < {TARGET_P99_MS:.0f} ms): {verdict}"
    )


if __name__ == "__main__":
    main()
