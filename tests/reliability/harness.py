"""The reliability suite's harness (issue 11): a real `fascl serve` on a real index, and the tools to hurt it.

Two levels. By default (`make test`) every scenario runs a small, fast version; with
`FASCL_RELIABILITY=full` (`make reliability`) it runs the documented load, size and duration, and each
test appends one row to `FASCL_RELIABILITY_RESULTS` (a JSON-lines file), from which
`bench/reliability_report.py` renders docs/RELIABILITY.md.

What a scenario gets from here:

* `FULL`, `level(fast, full)`: which level runs, and a value per level.
* `build_deployment(home, ...)`: a synthetic market, a tiny trained checkpoint and one index version
  built by the real builder (`tests/reliability/conftest.py` builds one per session:
  `reliability_deployment`). `clone_home(deployment, path)` gives each test its own FASCL_HOME with
  a copy of the deployment's index versions, free to damage.
* `derive_version(indexes_dir, source)`: publish a new version whose every date is taken over from
  `source` (through the store's own Staging.copy_date and publish): a "new version" without the
  builder's embedding, byte-identical to its source, under a new name.
* `prepare_database(url, deployment, active=...)`, `activate(url, indexes_dir, version)`: migrations,
  asset metadata and the active version, in process (no CLI start-up).
* `Service`: `fascl serve` in a subprocess on a free port (kept across restarts), with start, stop,
  restart, readiness waits, its pid and RSS, and its log for failure messages.
* `TcpProxy`: a TCP relay in front of PostgreSQL that can refuse connections (listener closed,
  open connections cut) and come back on the same port: a database outage that leaves the shared
  server up for everyone else. `DatabaseFaults(url)`: refused connections and a held lock on either
  backend (PostgreSQL through the proxy; SQLite by moving its file away, BEGIN EXCLUSIVE).
* `LoadClient`: a Python client thread (GETs and POST batches) keeping every answer with its
  request window, status and index_version.
* `Wrk`: wrk with a Lua script that counts statuses, socket errors and the `index_version` of every
  2xx answer, as time segments on the monotonic clock this process also uses.
* `Scenario` (fixture `scenario` in conftest.py): checks that are all evaluated before the test
  ends (`check`), with known gaps on current code marked `pending=...` (the test then xfails with
  their reasons instead of failing), and the report row (load, faults, lost, metrics) written at
  teardown with pytest's own outcome.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

REPO = Path(__file__).resolve().parents[2]
FASCL = [sys.executable, "-m", "fascl.cli.main"]
FULL = os.environ.get("FASCL_RELIABILITY", "").strip().lower() == "full"
MODE = "full" if FULL else "fast"
RESULTS_ENV = "FASCL_RELIABILITY_RESULTS"
# Figures the full level writes beside docs/RELIABILITY.md (e.g. the soak's RSS plot).
DOCS = Path(os.environ.get("FASCL_RELIABILITY_DOCS", REPO / "docs"))


def level(fast, full):
    """The value for the level that runs: `fast` under `make test`, `full` under `make reliability`."""
    return full if FULL else fast


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, q: float) -> float | None:
    if not len(values):
        return None
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))])


# ------------------------------------------------------------------ deployment
@dataclass
class Deployment:
    home: Path
    panel_path: Path
    checkpoint: Path
    version: str  # the built index version
    n_assets: int
    n_dates: int  # indexed dates


def build_deployment(home: Path, *, assets: int, years: float, index_dates: int, seed: int = 3) -> Deployment:
    """FASCL_HOME with a synthetic market of `assets` assets, a tiny checkpoint, and one version of
    the last `index_dates` dates built by the real builder (fascl.jobs.sample, index.build.build_version)."""
    from fascl.jobs.sample import SampleSpec, build_sample
    from index.store import IndexStore
    from model.train import TrainConfig

    def training(panel) -> TrainConfig:
        return TrainConfig(
            encoder="tiny",
            batch_size=min(256, assets),
            epochs=1,
            steps_per_epoch=2,
            warmup_epochs=0,
            valid_start=str(panel.dates[-250]),  # a validation year before a test half-year: any
            test_start=str(panel.dates[-120]),  # market of at least 1.5 years has both
        )

    spec = SampleSpec(
        assets=assets,
        years=years,
        seed=seed,
        gaps=(),
        training=training,
        index_starts=(-index_dates,),
        keep=100,
    )
    sample = build_sample(home, spec)
    version = sample.versions[0]
    n_dates = len(IndexStore(home / "indexes", keep=100).open_version(version, verify="lazy").dates)
    return Deployment(home, sample.panel_path, sample.checkpoint, version, assets, n_dates)


def clone_home(deployment: Deployment, home: Path) -> Path:
    """A FASCL_HOME of its own holding a copy of the deployment's index versions (a test may damage
    its files; the deployment's stay intact for the next test)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copytree(deployment.home / "indexes", home / "indexes", dirs_exist_ok=True)
    return home


def derive_version(indexes_dir: Path, source: str, tag: str = "r") -> str:
    """Publish a new version with every date of `source` taken over unchanged; return its name.

    Uses the store's own publishing path (Staging.copy_date copies each file and checks it against
    the source's manifest, then publish() renames the staging directory into place), so the version
    is as real as a rebuild that reuses every date, without embedding anything: a few milliseconds
    a MiB. Nothing is pruned."""
    from index.store import IndexStore, utcnow_iso

    store = IndexStore(indexes_dir, keep=10_000)
    src = store.open_version(source, verify="lazy")
    spec = {"derived_from": source, "nonce": uuid.uuid4().hex}
    staging = store.staging(f"derive-{uuid.uuid4().hex[:12]}", spec)
    try:
        take = getattr(staging, "copy_date", None) or staging.link_date  # link_date: older stores
        records = {d: take(d, src) for d in src.manifest["dates"]}
        per_date = ("format", "dates", "counts", "kinds", "windows", "files")
        manifest = {k: v for k, v in src.manifest.items() if k not in per_date}
        model = src.model_version
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        manifest.update(
            version=f"{model}-{tag}-{stamp}",
            created=utcnow_iso(),
            build={**manifest.get("build", {}), "derived_from": source},
        )
        return store.publish(staging, manifest, records).version
    finally:
        staging.close()


def newest_on_disk(indexes_dir: Path) -> str | None:
    """What a service without SQL would serve: the store's newest readable version."""
    from index.store import IndexStore

    return IndexStore(indexes_dir, keep=10_000).latest_version()


# -------------------------------------------------------------------- database
def engine_for(url: str):
    """A pool-less engine: no connection is kept open between uses (a held SQLite handle would
    follow a moved file; a pooled PostgreSQL one would outlive a fault)."""
    args = {"check_same_thread": False} if url.startswith("sqlite") else {"connect_timeout": 5}
    return create_engine(url, poolclass=NullPool, connect_args=args)


def prepare_database(url: str, deployment: Deployment, indexes_dir: Path, active: str | None) -> None:
    """Migrations, the panel's assets, and `active` recorded as the active index version."""
    from catalogue.migrate import upgrade
    from catalogue.repository import upsert_assets
    from market.panel import Panel

    upgrade(url)
    engine = engine_for(url)
    try:
        with Session(engine) as session, session.begin():
            upsert_assets(session, Panel.load(deployment.panel_path), "synthetic")
    finally:
        engine.dispose()
    if active is not None:
        activate(url, indexes_dir, active)


def activate(url: str, indexes_dir: Path, version: str) -> tuple[float, float]:
    """Record `version` in SQL as the active one (what `fascl index activate` does); returns the
    monotonic times just before the transaction started and just after it committed."""
    from catalogue.repository import register_index
    from index.store import IndexStore

    opened = IndexStore(indexes_dir, keep=10_000).open_version(version, verify="lazy")
    engine = engine_for(url)
    try:
        before = time.monotonic()
        with Session(engine) as session, session.begin():
            register_index(session, opened, activate=True)
        return before, time.monotonic()
    finally:
        engine.dispose()


def sql_active(url: str) -> tuple[str | None, dt.datetime | None]:
    """The active version in SQL and its activated_at."""
    from catalogue.repository import active_index

    engine = engine_for(url)
    try:
        with Session(engine) as session:
            row = active_index(session)
            return (row.version, row.activated_at) if row else (None, None)
    finally:
        engine.dispose()


def wall_to_monotonic(when: dt.datetime) -> float:
    """A wall-clock timestamp (e.g. activated_at) on this process's monotonic clock."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp() - (time.time() - time.monotonic())


def fascl_cli(args: list[str], env: dict, timeout: float = 120) -> str:
    done = subprocess.run(FASCL + args, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert done.returncode == 0, f"fascl {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


# --------------------------------------------------------------------- service
class ServiceDied(AssertionError):
    pass


class Service:
    """`fascl serve` (one worker: the process is the worker, so its pid is the one to sample) on a
    port that stays the same across restarts."""

    def __init__(
        self,
        home: Path,
        database_url: str,
        log_path: Path,
        *,
        poll_seconds: float = 0.5,
        env: dict | None = None,
        args: tuple[str, ...] = (),
    ):
        self.home, self.database_url, self.log_path = Path(home), database_url, Path(log_path)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.env = {
            **os.environ,
            "FASCL_HOME": str(self.home),
            "FASCL_DATABASE_URL": database_url,
            "FASCL_INDEX_POLL_SECONDS": str(poll_seconds),
            "FASCL_DATASET": "synthetic",
            **(env or {}),
        }
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self._log = None

    # ------------------------------------------------------------ lifecycle
    def start(self, wait: str | None = "ready", timeout: float = 60) -> Service:
        """Start the process; wait until /health/ready (or /health/live) answers 200, or not at all."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self._log = open(self.log_path, "a")  # noqa: SIM115 - closed in stop()
        self._log.write(f"\n----- start {self.starts + 1} at {dt.datetime.now().isoformat()} -----\n")
        self._log.flush()
        self.process = subprocess.Popen(
            FASCL + ["serve", "--port", str(self.port), *self.args],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        self.starts += 1
        if wait is not None:
            self.wait_for(f"/health/{wait}", timeout=timeout)
        return self

    def wait_for(self, path: str, timeout: float = 60, status: int = 200) -> httpx.Response:
        """Poll `path` until it answers `status`; raise ServiceDied (with the log) if the process exits."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            self.assert_alive()
            try:
                last = httpx.get(self.base_url + path, timeout=2)
                if last.status_code == status:
                    return last
            except httpx.TransportError as exc:
                last = exc
            time.sleep(0.1)
        raise AssertionError(
            f"{path} did not answer {status} within {timeout} s (last: {_describe(last)})\n{self.log_tail()}"
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def assert_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise ServiceDied(f"fascl serve exited with {self.process.returncode}:\n{self.log_tail()}")

    def stop(self, timeout: float = 20) -> float | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the seconds it took to exit (None: killed)."""
        took = None
        if self.process is not None and self.process.poll() is None:
            started = time.monotonic()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
                took = time.monotonic() - started
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        return took

    def restart(self, wait: str | None = "ready", timeout: float = 60) -> float | None:
        took = self.stop()
        self.start(wait=wait, timeout=timeout)
        return took

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------- inspection
    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def memory(self) -> dict[str, int] | None:
        """The serving process's resident memory in bytes: rss (VmRSS), anon (RssAnon: the heap,
        what a leak grows) and file (RssFile: mapped files and libraries); None if it is gone."""
        fields = {"VmRSS:": "rss", "RssAnon:": "anon", "RssFile:": "file"}
        try:
            lines = Path(f"/proc/{self.pid}/status").read_text().splitlines()
        except OSError:
            return None
        found = {}
        for line in lines:
            parts = line.split()
            if parts and parts[0] in fields:
                found[fields[parts[0]]] = int(parts[1]) * 1024
        return found if "rss" in found else None

    def rss_bytes(self) -> int | None:
        """Resident set size of the serving process (VmRSS), or None if it is gone."""
        memory = self.memory()
        return None if memory is None else memory["rss"]

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text()[-chars:]
        except OSError:
            return "(no log)"

    def client(self, timeout: float = 10) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=timeout)


def _describe(last) -> str:
    if isinstance(last, httpx.Response):
        return f"{last.status_code} {last.text[:300]}"
    return repr(last)


def timed_get(client: httpx.Client, path: str, **kwargs) -> tuple[httpx.Response | Exception, float]:
    """(response or the transport exception, seconds)."""
    started = time.monotonic()
    try:
        return client.get(path, **kwargs), time.monotonic() - started
    except httpx.HTTPError as exc:
        return exc, time.monotonic() - started


def query_targets(base_url: str, tickers: int, historical_dates: int, seed: int = 0) -> dict:
    """Tickers and dates that answer 200 on the served version: {"tickers", "newest", "dates", "paths"}.

    `dates` are `historical_dates` indexed dates spread over the history (newest excluded); `paths`
    every GET /similar path (newest and historical) that was checked to answer 200."""
    import random

    rng = random.Random(seed)
    with httpx.Client(base_url=base_url, timeout=10) as http:
        all_tickers = [a["ticker"] for a in http.get("/assets", params={"limit": 500}).json()["items"]]
        indexed = http.get("/dates").json()["dates"]
        chosen = rng.sample(all_tickers, min(tickers, len(all_tickers)))
        step = max(1, (len(indexed) - 1) // max(1, historical_dates))
        dates = indexed[:-1][::step][:historical_dates]
        paths, good = [], set()
        for t in chosen:
            for d in [None, *dates]:
                path = f"/similar/{t}?k=10" + (f"&date={d}" if d else "")
                if http.get(path).status_code == 200:
                    paths.append(path)
                    good.add(t)
    return {"tickers": sorted(good), "newest": indexed[-1], "dates": dates, "paths": paths}


# ---------------------------------------------------------------------- client
@dataclass
class Answer:
    t0: float  # time.monotonic() when the request was sent
    t1: float  # ... and when its answer (or error) came back
    status: int | str  # HTTP status, or the transport exception's class name
    version: str | None  # index_version of a 200 (one version for a whole batch; None if mixed)
    kind: str  # "get" or "batch"

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0


class LoadClient(threading.Thread):
    """A Python client in a thread: GET /similar over `paths`, and every `batch_every`-th request a
    POST /similar of `batch_size` queries over `tickers` x (newest, `dates`). Every answer is kept as
    an Answer (`answers`), or with keep=False only counted (`statuses`) and timed (`latencies`, 200s);
    a batch whose items name more than one version counts in `mixed_batches`. `pause` seconds
    between requests (0: as fast as it goes)."""

    def __init__(
        self,
        base_url: str,
        paths: list[str],
        tickers: list[str],
        dates: list[str],
        *,
        batch_every: int = 10,
        batch_size: int = 10,
        pause: float = 0.0,
        seed: int = 1,
        timeout: float = 10.0,
        keep: bool = True,
    ):
        super().__init__(daemon=True)
        self.base_url, self.paths, self.tickers, self.dates = base_url, paths, tickers, dates
        self.batch_every, self.batch_size, self.pause = batch_every, batch_size, pause
        self.seed, self.timeout, self.keep = seed, timeout, keep
        self.halt = threading.Event()
        self.answers: list[Answer] = []
        self.statuses: dict[int | str, int] = {}
        self.latencies: list[float] = []
        self.mixed_batches = 0

    def _record(self, answer: Answer) -> None:
        self.statuses[answer.status] = self.statuses.get(answer.status, 0) + 1
        if answer.ok:
            self.latencies.append(answer.seconds)
        if self.keep:
            self.answers.append(answer)

    def stop(self, timeout: float = 15) -> list[Answer]:
        self.halt.set()
        self.join(timeout=timeout)
        return self.answers

    def between(self, start: float, end: float) -> list[Answer]:
        return [a for a in list(self.answers) if a.t0 >= start and a.t1 <= end]

    def run(self) -> None:
        import random

        rng = random.Random(self.seed)
        with httpx.Client(base_url=self.base_url, timeout=self.timeout) as http:
            i = 0
            while not self.halt.is_set():
                i += 1
                batch = self.batch_every > 0 and i % self.batch_every == 0
                t0 = time.monotonic()
                try:
                    if batch:
                        queries = [
                            {
                                "ticker": rng.choice(self.tickers),
                                "k": 5,
                                "date": rng.choice([None, *self.dates]),
                            }
                            for _ in range(self.batch_size)
                        ]
                        response = http.post("/similar", json={"queries": queries})
                    else:
                        response = http.get(rng.choice(self.paths))
                except httpx.HTTPError as exc:
                    self._record(Answer(t0, time.monotonic(), type(exc).__name__, None, "error"))
                    self.halt.wait(max(self.pause, 0.05))  # the service is away: do not spin
                    continue
                t1 = time.monotonic()
                version = None
                if response.status_code == 200:
                    body = response.json()
                    if batch:
                        found = {
                            item["result"]["index_version"] for item in body["results"] if item["result"]
                        }
                        self.mixed_batches += len(found) > 1
                        version = found.pop() if len(found) == 1 else None
                    else:
                        version = body["index_version"]
                self._record(Answer(t0, t1, response.status_code, version, "batch" if batch else "get"))
                if self.pause:
                    self.halt.wait(self.pause)


# ----------------------------------------------------------------------- proxy
class TcpProxy:
    """A TCP relay on 127.0.0.1:<port> to `upstream`; `refuse()` closes the listener and cuts every
    open connection (clients then get ECONNREFUSED, as from a database that is down); `restore()`
    listens again on the same port."""

    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.accepted = 0

    @classmethod
    def for_url(cls, url: str) -> tuple[TcpProxy, str]:
        """A started proxy in front of the server of `url`, and the same URL through the proxy."""
        parsed = make_url(url)
        proxy = cls(parsed.host or "127.0.0.1", parsed.port or 5432)
        proxy.restore()
        via = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        return proxy, via

    @property
    def up(self) -> bool:
        return self._listener is not None

    def restore(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def refuse(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def close(self) -> None:
        self.refuse()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self._listener is not listener:
                client.close()
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            self.accepted += 1
            with self._lock:
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)


# ----------------------------------------------------------- database faults
class DatabaseFaults:
    """Real faults of the service's database, on either backend; `service_url` is what the service
    is given, `admin_url` what the harness uses to change SQL during a fault.

    * refuse()/restore(): PostgreSQL, a TcpProxy in front of the server stops listening and cuts open
      connections (ECONNREFUSED, as from a server that is down; the shared server stays up).
      SQLite, the database file (with its -wal and -shm) is moved away and a directory put in its
      place: a new connection cannot open it ("unable to open database file"). Connections the
      service already holds keep the moved file open, so on SQLite the outage shows on connecting,
      e.g. at a restart. During the outage `admin_url` reaches the moved file or the server directly.
    * lock(): a context holding the lock a stuck migration or a long admin transaction would hold.
      PostgreSQL: `LOCK TABLE index_versions IN ACCESS EXCLUSIVE MODE` in an open transaction (the
      service's poll reads that table). SQLite: `BEGIN EXCLUSIVE` (in WAL mode, which the service
      sets, readers are not blocked by it; writers are).
    """

    def __init__(self, url: str):
        self.url = url
        self.postgres = url.startswith("postgresql")
        self.proxy: TcpProxy | None = None
        if self.postgres:
            self.proxy, self.service_url = TcpProxy.for_url(url)
        else:
            self.service_url = url
            self.path = Path(make_url(url).database)
        self.refused = False

    @property
    def admin_url(self) -> str:
        if self.postgres or not self.refused:
            return self.url
        return f"sqlite:///{self._away(self.path)}"

    @staticmethod
    def _away(path: Path) -> Path:
        return path.with_name(path.name + ".away")

    def _sqlite_files(self) -> list[tuple[Path, Path]]:
        away = self._away(self.path)
        return [(Path(f"{self.path}{s}"), Path(f"{away}{s}")) for s in ("", "-wal", "-shm")]

    def refuse(self) -> None:
        if self.refused:
            return
        if self.postgres:
            self.proxy.refuse()
        else:
            import sqlite3

            with contextlib.closing(sqlite3.connect(self.path, timeout=5)) as conn:
                with contextlib.suppress(sqlite3.Error):  # fold the WAL in: fewer moving parts
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            for here, away in self._sqlite_files():
                if here.exists():
                    here.rename(away)
            self.path.mkdir()
        self.refused = True

    def restore(self) -> None:
        if not self.refused:
            return
        if self.postgres:
            self.proxy.restore()
        else:
            self.path.rmdir()
            for here, away in self._sqlite_files():
                if away.exists():
                    away.rename(here)
        self.refused = False

    @contextlib.contextmanager
    def lock(self):
        """Hold the lock until the block ends; yields the monotonic time it was taken."""
        if self.postgres:
            from sqlalchemy import text

            engine = engine_for(self.url)
            conn = engine.connect()
            try:
                conn.execute(text("LOCK TABLE index_versions IN ACCESS EXCLUSIVE MODE"))
                yield time.monotonic()
            finally:
                conn.rollback()
                conn.close()
                engine.dispose()
        else:
            import sqlite3

            conn = sqlite3.connect(self.path, timeout=5, isolation_level=None)
            try:
                conn.execute("BEGIN EXCLUSIVE")
                yield time.monotonic()
            finally:
                conn.execute("ROLLBACK")
                conn.close()

    def close(self) -> None:
        self.restore()
        if self.proxy is not None:
            self.proxy.close()


# ------------------------------------------------------------------------- wrk
WRK_LUA = r"""
-- GET paths from a file, round robin; per thread: counts by status, and the index_version of 2xx
-- answers as segments (version, first, last, count) on CLOCK_MONOTONIC (Python's time.monotonic()).
-- Only numbers and strings cross from a thread to done(): wrk 4.1's thread:get corrupts the Lua
-- stack when it copies a table (it pops one value too many).
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } fascl_timespec;
int clock_gettime(int clk_id, fascl_timespec *tp);
]]
local ts = ffi.new("fascl_timespec")
local function now()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

local paths = {}
local threads = {}
local counter = 0
local others = {}
n2xx = 0
other_codes = ""   -- '"404": 3, "503": 1' (rebuilt when a non-2xx arrives: rare)
unparsed = 0
closed = ""        -- finished segments: '["v", first, last, n], ...'
cur_v = nil
cur_first = 0
cur_last = 0
cur_n = 0

init = function(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  counter = math.random(#paths)
end

setup = function(thread) threads[#threads + 1] = thread end

request = function()
  counter = counter % #paths + 1
  return wrk.format("GET", paths[counter])
end

response = function(status, headers, body)
  local t = now()
  if status < 200 or status >= 300 then
    others[status] = (others[status] or 0) + 1
    local parts = {}
    for code, n in pairs(others) do parts[#parts + 1] = string.format('"%d": %d', code, n) end
    other_codes = table.concat(parts, ", ")
    return
  end
  n2xx = n2xx + 1
  local v = string.match(body, '"index_version":"([^"]*)"')
  if v == nil then unparsed = unparsed + 1; v = "?" end
  if v ~= cur_v then
    if cur_v ~= nil then
      closed = closed .. string.format('["%s", %.6f, %.6f, %d], ', cur_v, cur_first, cur_last, cur_n)
    end
    cur_v, cur_first, cur_n = v, t, 0
  end
  cur_last = t
  cur_n = cur_n + 1
end

done = function(summary, latency, requests)
  local codes, segs = {}, {}
  local ok, bad = 0, 0
  for i, thread in ipairs(threads) do
    ok = ok + (thread:get("n2xx") or 0)
    bad = bad + (thread:get("unparsed") or 0)
    local other = thread:get("other_codes") or ""
    if other ~= "" then codes[#codes + 1] = "{" .. other .. "}" end
    local all = thread:get("closed") or ""
    local v = thread:get("cur_v")
    if v ~= nil then
      all = all .. string.format('["%s", %.6f, %.6f, %d]', v, thread:get("cur_first"),
        thread:get("cur_last"), thread:get("cur_n"))
    end
    segs[#segs + 1] = string.format('[%d, [%s]]', i, all:gsub(", $", ""))
  end
  local e = summary.errors
  io.write("FASCL-WRK " .. string.format(
    '{"requests": %d, "duration_s": %.3f, "errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d, "status": %d}, '
    .. '"latency_ms": {"p50": %.3f, "p90": %.3f, "p99": %.3f, "p999": %.3f, "max": %.3f, "mean": %.3f}, '
    .. '"n2xx": %d, "other_codes": [%s], "unparsed": %d, "segments": [%s]}',
    summary.requests, summary.duration / 1e6, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3, latency:percentile(99) / 1e3,
    latency:percentile(99.9) / 1e3, latency.max / 1e3, latency.mean / 1e3,
    ok, table.concat(codes, ", "), bad, table.concat(segs, ", ")) .. "\n")
  io.flush()
end
"""


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def require_wrk() -> str:
    """wrk's path; skips (fast level) or fails (full level) without it."""
    path = wrk_binary()
    if path is None:
        message = "wrk is not installed: `apt-get install wrk` (Debian/Ubuntu package wrk)"
        if FULL:
            pytest.fail(message + "; the full reliability run needs it")
        pytest.skip(message)
    return path


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    errors: dict
    latency_ms: dict
    statuses: dict[int, int]  # 2xx counted under 200
    unparsed: int
    segments: list[tuple[int, str, float, float, int]]  # thread, version, first, last, count
    raw: str = ""

    @property
    def socket_errors(self) -> int:
        return sum(self.errors[k] for k in ("connect", "read", "write", "timeout"))

    @property
    def non_2xx(self) -> dict[int, int]:
        return {code: n for code, n in self.statuses.items() if not 200 <= code < 300}

    @property
    def versions(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, version, _, _, n in self.segments:
            counts[version] = counts.get(version, 0) + n
        return counts


class Wrk:
    """wrk running in the background against `paths` of `base_url` until stop() (or `ceiling_s`)."""

    def __init__(
        self,
        base_url: str,
        paths: list[str],
        workdir: Path,
        *,
        threads: int = 1,
        connections: int = 8,
        ceiling_s: int = 600,
        timeout_s: int = 5,
    ):
        self.binary = require_wrk()
        workdir.mkdir(parents=True, exist_ok=True)
        self.script = workdir / "fascl_similar.lua"
        self.script.write_text(WRK_LUA)
        self.paths_file = workdir / "paths.txt"
        self.paths_file.write_text("\n".join(paths) + "\n")
        self.out = workdir / "wrk.out"
        self.cmd = [
            self.binary,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{ceiling_s}s",
            f"--timeout={timeout_s}s",
            "-s",
            str(self.script),
            base_url,
            "--",
            str(self.paths_file),
        ]
        self.process: subprocess.Popen | None = None

    @property
    def command(self) -> str:
        return " ".join(self.cmd)

    def start(self) -> Wrk:
        self._out = open(self.out, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(self.cmd, stdout=self._out, stderr=subprocess.STDOUT)
        return self

    def stop(self, timeout: float = 30) -> WrkResult:
        """SIGINT (wrk then reports as if its -d had ended) and parse the Lua summary."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self._out.close()
        text = self.out.read_text()
        line = next((ln for ln in text.splitlines() if ln.startswith("FASCL-WRK ")), None)
        assert line is not None, f"wrk printed no summary:\n{text[-3000:]}"
        data = json.loads(line[len("FASCL-WRK ") :])
        statuses: dict[int, int] = {}
        if data["n2xx"]:
            statuses[200] = data["n2xx"]  # all 2xx, counted as one
        for codes in data["other_codes"]:
            for code, n in codes.items():
                statuses[int(code)] = statuses.get(int(code), 0) + n
        return WrkResult(
            requests=data["requests"],
            duration_s=data["duration_s"],
            errors=data["errors"],
            latency_ms=data["latency_ms"],
            statuses=statuses,
            unparsed=data["unparsed"],
            segments=[(thread, *seg) for thread, segs in data["segments"] for seg in segs],
            raw=text[-2000:],
        )


# -------------------------------------------------------------------- scenario
@dataclass
class Check:
    what: str
    ok: bool
    pending: str | None = None  # known to fail on current code: why, and who fixes it


@dataclass
class Scenario:
    """One scenario's checks and report row. Set title/database/load/faults/lost and metrics; call
    check() for every assertion (all are evaluated), then conclude() to fail or xfail."""

    nodeid: str
    title: str = ""
    database: str = "-"
    load: str = ""
    faults: str = ""
    lost: str = ""
    metrics: dict = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    artifacts: list[str] = field(default_factory=list)

    def check(self, ok, what: str, *, pending: str | None = None) -> bool:
        self.checks.append(Check(what, bool(ok), pending))
        return bool(ok)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok and c.pending is None]

    @property
    def pending_failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok and c.pending is not None]

    def conclude(self) -> None:
        """Fail on any failed check; otherwise xfail if a check marked pending failed."""
        if self.failed:
            pytest.fail(
                "failed checks:\n"
                + "\n".join(f"- {c.what}" for c in self.failed)
                + (
                    "\n(also failing, pending: " + "; ".join(c.what for c in self.pending_failed) + ")"
                    if self.pending_failed
                    else ""
                ),
                pytrace=False,
            )
        if self.pending_failed:
            pytest.xfail("; ".join(f"{c.what} [pending: {c.pending}]" for c in self.pending_failed))

    def command(self) -> str:
        env = "FASCL_RELIABILITY=full " if FULL else ""
        return f"{env}.venv/bin/python -m pytest '{self.nodeid}'"

    def row(self, outcome: str, message: str = "") -> dict:
        return {
            "scenario": self.title or self.nodeid,
            "database": self.database,
            "mode": MODE,
            "outcome": outcome,
            "message": message,
            "load": self.load,
            "faults": self.faults,
            "lost": self.lost,
            "command": self.command(),
            "nodeid": self.nodeid,
            "metrics": self.metrics,
            "checks": [c.__dict__ for c in self.checks],
            "artifacts": self.artifacts,
            "seconds": round(time.monotonic() - self.started, 1),
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }


def write_result(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(row, default=str) + "\n")
