"""Scenario 4, database faults under a real `fascl serve`, on SQLite and PostgreSQL: refused
connections, a hanging lock, and a restart of the service during the outage.

The database only says which version to serve; queries are answered from memory. So through every
fault: GET /similar keeps answering 200; /health/ready answers within READY_BOUND_S and, where the
service cannot read SQL, says not ready and why; /admin/reload answers within one SQL timeout and a
margin (503 `database_unavailable` or `refresh_in_progress` when it cannot check); and once the
fault is gone the service picks up what was activated during it by itself, without a restart. A
restart during the outage serves the version it served before (the newest on disk if it never
served one), says not ready, and catches up when the database returns.

What is real: PostgreSQL refuses through a TCP proxy that stops listening (the shared server stays
up); SQLite's file is moved away with a directory put in its place. The lock is PostgreSQL's
`LOCK TABLE index_versions IN ACCESS EXCLUSIVE MODE`, SQLite's `BEGIN EXCLUSIVE` (WAL readers go on
through it, so there the service must simply stay ready). See harness.DatabaseFaults.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.reliability.harness import (
    FULL,
    DatabaseFaults,
    LoadClient,
    Service,
    activate,
    clone_home,
    derive_version,
    level,
    newest_on_disk,
    prepare_database,
    query_targets,
)

TITLE = "4. Database faults"
POLL_S = level(0.25, 1.0)
DB_TIMEOUT_S = level(1.0, 5.0)  # FASCL_DATABASE_TIMEOUT_SECONDS; the full level runs the default
READY_BOUND_S = 5.0  # /health/ready must answer within this, fault or not
# /admin/reload reads SQL itself when no poll is running, so it may wait out one SQL timeout.
RELOAD_BOUND_S = DB_TIMEOUT_S + 2.0
DETECT_BOUND_S = POLL_S + 3 * DB_TIMEOUT_S + 2.0  # readiness reports an unreadable database by then
RECOVERY_BOUND_S = POLL_S + DB_TIMEOUT_S + 10.0  # back on SQL's choice after the fault, no restart
OUTAGE_S = level(0.5, 20.0)  # how long each outage lasts beyond detection, under load
LOCK_S = level(1.0, 30.0)
RELOAD_CODES = {"database_unavailable", "refresh_in_progress"}


def timed(method, url: str, timeout: float = RELOAD_BOUND_S + 5) -> tuple[int | str, dict, float]:
    started = time.monotonic()
    try:
        r = httpx.request(method, url, timeout=timeout)
        try:
            body = r.json()
        except ValueError:
            body = {"text": r.text[:300]}
        return r.status_code, body, time.monotonic() - started
    except httpx.HTTPError as exc:
        return type(exc).__name__, {}, time.monotonic() - started


def reason(body: dict) -> str:
    """What a not-ready answer says: its message, and the database field and problems of its detail."""
    error = body.get("error") or {}
    detail = error.get("detail") or {}
    parts = [error.get("message") or "", str(detail.get("database") or "")]
    parts += [str(p) for p in detail.get("problems") or []]
    return " | ".join(p for p in parts if p)


def served_version(base_url: str, path: str) -> str | None:
    try:
        r = httpx.get(base_url + path, timeout=READY_BOUND_S)
    except httpx.HTTPError:
        return None
    return r.json().get("index_version") if r.status_code == 200 else None


def wait_status(url: str, status: int, bound: float) -> tuple[int | str, dict, float | None]:
    """GET `url` until it answers `status` or `bound` seconds pass: (last status, its body, seconds
    taken or None)."""
    started = time.monotonic()
    while True:
        got, body, _ = timed("GET", url)
        if got == status:
            return got, body, time.monotonic() - started
        if time.monotonic() - started > bound:
            return got, body, None
        time.sleep(0.1)


def wait_until(predicate, bound: float, step: float = 0.1):
    """Poll `predicate` until truthy or `bound` seconds: (value, seconds taken or None)."""
    started = time.monotonic()
    while True:
        value = predicate()
        if value:
            return value, time.monotonic() - started
        if time.monotonic() - started > bound:
            return value, None
        time.sleep(step)


@pytest.mark.timeout(level(300, 900))
def test_database_faults(reliability_deployment, database_url, tmp_path, scenario):
    backend = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    postgres = backend == "postgresql"
    scenario.title, scenario.database = TITLE, backend
    home = clone_home(reliability_deployment, tmp_path / "home")
    indexes = home / "indexes"
    v0 = reliability_deployment.version
    v1, v2, v3 = (derive_version(indexes, v0, tag=f"fault{i}") for i in (1, 2, 3))  # v3: never activated
    prepare_database(database_url, reliability_deployment, indexes, active=v0)
    faults = DatabaseFaults(database_url)
    check = scenario.check
    timings: dict[str, float | None] = {}
    phases: dict[str, tuple[float, float]] = {}
    service = Service(
        home,
        faults.service_url,
        tmp_path / "server.log",
        poll_seconds=POLL_S,
        env={"FASCL_DATABASE_TIMEOUT_SECONDS": str(DB_TIMEOUT_S)},
    )
    load = None
    try:
        service.start()
        first_pid = service.pid
        targets = query_targets(service.base_url, tickers=5, historical_dates=2)
        probe = targets["paths"][0]
        load = LoadClient(
            service.base_url, targets["paths"], targets["tickers"], targets["dates"], pause=level(0.01, 0.005)
        )
        load.start()

        def ready_checks(label: str, *, expect_not_ready: bool | None, pending: str | None = None) -> None:
            """Readiness answers in time; with expect_not_ready, within DETECT_BOUND_S it says why."""
            status, body, took = timed("GET", service.base_url + "/health/ready")
            check(
                took < READY_BOUND_S, f"{label}: /health/ready answered in {took:.2f} s (< {READY_BOUND_S} s)"
            )
            if expect_not_ready is None:
                return
            if expect_not_ready:
                status, body, seen = wait_status(service.base_url + "/health/ready", 503, DETECT_BOUND_S)
                why = reason(body)
                timings[f"{label}_not_ready_after_s"] = seen
                scenario.metrics.setdefault("readiness_said", {})[label] = f"{status}: {why}"
                check(
                    status == 503 and "database" in why.lower(),
                    f"{label}: /health/ready says not ready because of the database within {DETECT_BOUND_S:g} s "
                    f"(got {status}: {why or body})",
                    pending=pending,
                )
            else:
                check(
                    status == 200, f"{label}: /health/ready stays 200 (got {status}: {reason(body) or body})"
                )

        def recovery(label: str, version: str, pid: int) -> None:
            """SQL's choice served again and ready, without a restart."""
            _, took = wait_until(lambda: served_version(service.base_url, probe) == version, RECOVERY_BOUND_S)
            timings[f"{label}_recovered_after_s"] = took
            check(
                took is not None,
                f"{label}: serves {version} (activated during the fault) within "
                f"{RECOVERY_BOUND_S:g} s of the fault's end, by itself",
            )
            status, body, _ = wait_status(service.base_url + "/health/ready", 200, RECOVERY_BOUND_S)
            check(
                status == 200, f"{label}: ready again after the fault (got {status}: {reason(body) or body})"
            )
            check(service.alive() and service.pid == pid, f"{label}: recovered without a restart")

        # ---------------------------------------------------- refused connections
        started = time.monotonic()
        faults.refuse()
        ready_checks("refused", expect_not_ready=True if postgres else None)
        status, body, took = timed("POST", service.base_url + "/admin/reload")
        code = (body.get("error") or {}).get("code")
        check(
            took < RELOAD_BOUND_S, f"refused: /admin/reload answered in {took:.2f} s (< {RELOAD_BOUND_S:g} s)"
        )
        if postgres:
            check(
                status == 503 and code in RELOAD_CODES,
                f"refused: /admin/reload is 503 {RELOAD_CODES} ({status} {code})",
            )
        activate(faults.admin_url, indexes, v1)  # what an operator activates meanwhile
        time.sleep(OUTAGE_S)
        check(served_version(service.base_url, probe) in (v0, v1), "refused: queries answer from memory")
        faults.restore()
        phases["refused"] = (started, time.monotonic())
        recovery("refused", v1, first_pid)

        # ------------------------------------------------------------ hanging lock
        started = time.monotonic()
        with faults.lock():
            ready_checks(
                "lock",
                expect_not_ready=True if postgres else False,
            )
            status, body, took = timed("POST", service.base_url + "/admin/reload")
            code = (body.get("error") or {}).get("code")
            check(
                took < RELOAD_BOUND_S,
                f"lock: /admin/reload answered in {took:.2f} s (< {RELOAD_BOUND_S:g} s)",
            )
            if postgres:
                check(
                    status == 503 and code in RELOAD_CODES,
                    f"lock: /admin/reload is 503 {RELOAD_CODES} ({status} {code})",
                )
            else:
                check(
                    status == 200, f"lock: /admin/reload reads through SQLite's writer lock ({status} {code})"
                )
            time.sleep(max(0.0, started + LOCK_S - time.monotonic()))
            check(served_version(service.base_url, probe) == v1, "lock: queries answer from memory")
        activate(database_url, indexes, v2)
        phases["lock"] = (started, time.monotonic())
        recovery("lock", v2, first_pid)

        # ------------------------------------------------ restart during the outage
        started = time.monotonic()
        faults.refuse()
        activate(faults.admin_url, indexes, v0)  # a rollback the stopped service has not seen
        took = service.stop()
        timings["restart_stop_s"] = took
        check(took is not None and took < 15, f"restart: the service stops within 15 s of SIGTERM ({took})")
        service.start(wait=None)
        fallback = v2  # the version it served last; the newest on disk (v3) was never activated
        assert newest_on_disk(indexes) == v3
        try:
            service.wait_for("/health/live", timeout=30)
            live = True
        except AssertionError as exc:
            live = False
            scenario.metrics["restart_error"] = str(exc)[-1500:]
        pending_start = None
        check(live, "restart: the service starts while the database is down", pending=pending_start)
        if live:
            check(
                served_version(service.base_url, probe) == fallback,
                f"restart: queries answer from the version served before the restart ({fallback}), "
                f"not the newest on disk ({v3})",
            )
            ready_checks("restart", expect_not_ready=True)
            time.sleep(OUTAGE_S)
            restarted_pid = service.pid
            faults.restore()
            phases["restart"] = (started, time.monotonic())
            recovery("restart", v0, restarted_pid)
        else:
            faults.restore()
            phases["restart"] = (started, time.monotonic())
    finally:
        faults.close()
        answers = load.stop() if load is not None else []
        service.stop()

    # ----------------------------------------------------------- the load's view
    errors_by_phase = {}
    for name, (start, end) in phases.items():
        during = [a for a in answers if a.t0 >= start and a.t1 <= end]
        bad = [a for a in during if not a.ok]
        if name == "restart":  # the process is down between stop and start: refused connections
            bad = [a for a in bad if a.kind != "error"]
        errors_by_phase[name] = {"answers": len(during), "non_200": len(bad)}
        check(
            not bad,
            f"{name}: every query during the fault answered 200 ({len(bad)} of {len(during)} did not: "
            f"{sorted({str(a.status) for a in bad})})",
        )
    down = sum(1 for a in answers if a.kind == "error")
    check(load is not None and load.mixed_batches == 0, "a batch answers from one version")

    scenario.load = (
        f"one client, GET /similar and every 10th request a POST batch of 10, "
        f"{len(answers)} requests over {sum(e - s for s, e in phases.values()):.0f} s of faults; poll {POLL_S:g} s, "
        f"FASCL_DATABASE_TIMEOUT_SECONDS={DB_TIMEOUT_S:g}"
    )
    scenario.faults = (
        f"refused connections ({'proxy closed' if postgres else 'file moved away'}) for {OUTAGE_S:g} s+ while "
        f"a version was activated; {'LOCK TABLE index_versions ACCESS EXCLUSIVE' if postgres else 'BEGIN EXCLUSIVE'} "
        f"held {LOCK_S:g} s; SIGTERM and restart during a second outage, a rollback activated meanwhile"
    )
    scenario.lost = (
        f"{sum(e['non_200'] for e in errors_by_phase.values())} non-200 queries during the faults; "
        f"{down} requests refused while the process restarted; recovery "
        + ", ".join(
            f"{k.split('_')[0]} {v:.1f} s"
            for k, v in timings.items()
            if k.endswith("recovered_after_s") and v
        )
    )
    scenario.metrics.update({"phases": errors_by_phase, "timings_s": timings, "full": FULL})
    scenario.conclude()
