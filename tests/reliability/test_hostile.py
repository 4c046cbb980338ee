"""Suite 2, hostile input on every route of a real `fascl serve` with API keys required.

Injection strings, traversal, very long and non-ASCII tickers, control characters and NUL, out-of-range
and oddly formatted numbers, repeated parameters, oversized and deeply nested bodies, wrong content
types, and a client trickling its request head. Passes when no answer is a 5xx, every refusal is the
service's error shape (or the server's plain 408/431 for a head it refused), no answer names a path
or carries a stack trace, oversized bodies are refused before they are read, the trickling client is
cut off while others are served, and the process's memory returns to where it was.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from urllib.parse import quote

import httpx

from catalogue.repository import create_api_key
from catalogue.sessions import make_engine, session_factory, session_scope
from tests.reliability.harness import Service, clone_home, level, prepare_database

TITLE = "2. Hostile input on every route"
MiB = 2**20
ROUNDS = level(1, 5)  # passes over the whole hostile set (memory must not creep between them)
HEADER_TIMEOUT_S = 2.0
RSS_SLACK_MIB = 40  # allocator noise after ~10^3 requests, far below what a kept body would cost

INJECTIONS = [
    "' OR '1'='1",
    "1; DROP TABLE assets; --",
    '"; SELECT pg_sleep(5); --',
    "<script>alert(1)</script>",
    "${jndi:ldap://x/a}",
    "{{7*7}}",
    "$(reboot)",
    "%s%s%s%n",
]
TRAVERSALS = [
    "../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "....//....//etc/passwd",
    "/etc/passwd",
    "..\\..\\win.ini",
]
ODD_TEXT = [
    "ÀBÇ",
    "株式会社",
    "🚀🚀",
    "A\u0000B",
    "\u0000",
    "\x1b[31mred",
    "A\r\nX-Injected: 1",
    "\u202eRTL",
    " ",
    "Q" * 40,
    "Q" * 10_000,
]
NUMBERS = [
    "9" * 30,
    "-" + "9" * 30,
    "1e309",
    "-1e309",
    "NaN",
    "Infinity",
    "-0",
    "0x10",
    "1_000",
    "１０",
    " 5",
    "5 ",
    "5.0",
    "1e2",
    "",
    "٣",
]
BOOLEANS = ["maybe", "TRUE ", "2", "", "\u0000"]


def make_key(database_url: str, scopes: list[str]) -> str:
    engine = make_engine(database_url)
    try:
        with session_scope(session_factory(engine)) as session:
            return create_api_key(session, "hostile", scopes)
    finally:
        engine.dispose()


def hostile_requests(ticker: str) -> list[tuple[str, str, dict]]:
    """(method, path-with-query, httpx keyword arguments) for every route."""
    texts = INJECTIONS + TRAVERSALS + ODD_TEXT
    out: list[tuple[str, str, dict]] = []
    for value in texts:
        q = quote(value, safe="")
        out += [
            ("GET", f"/similar/{q}", {}),
            ("GET", f"/assets/{q}", {}),
            ("GET", f"/assets?q={q}", {}),
            ("GET", f"/assets?sector={q}", {}),
            ("POST", "/similar", {"json": {"queries": [{"ticker": value}]}}),
            ("POST", "/similar", {"json": {"queries": [{"ticker": ticker, "among": [value, ticker]}]}}),
        ]
        for name in ("date", "sector", "exchange", "among"):
            out.append(("GET", f"/similar/{ticker}?{name}={q}", {}))
            out.append(("POST", "/similar", {"json": {"queries": [{"ticker": ticker, name: value}]}}))
    for value in NUMBERS:
        q = quote(value, safe="")
        out += [
            ("GET", f"/similar/{ticker}?k={q}", {}),
            ("GET", f"/similar/{ticker}?min_score={q}", {}),
            ("GET", f"/assets?offset={q}", {}),
            ("GET", f"/assets?limit={q}", {}),
        ]
        raw = value if re.fullmatch(r"-?[0-9.e]+", value) else json.dumps(value)
        for name in ("k", "min_score"):
            body = f'{{"queries": [{{"ticker": "{ticker}", "{name}": {raw}}}]}}'
            out.append(
                ("POST", "/similar", {"content": body, "headers": {"content-type": "application/json"}})
            )
    for value in BOOLEANS:
        for name in ("exclude_same_sector", "include_realized"):
            out.append(("GET", f"/similar/{ticker}?{name}={quote(value, safe='')}", {}))
    for name, value in (("k", "5"), ("sector", "x"), ("among", ticker), ("date", "2011-01-03")):
        out.append(("GET", f"/similar/{ticker}?{name}={value}&{name}={value}", {}))  # repeated
    out.append(("GET", "/assets?limit=5&limit=6", {}))
    nested = "[" * 100_000 + "]" * 100_000
    bodies = [
        nested,
        '{"queries": ' + nested + "}",
        '{"queries": [' + ",".join(['{"ticker": "A"}'] * 1001) + "]}",  # one over the batch size
        '{"queries": [{"ticker": "' + ticker + '", "among": ' + json.dumps(["A"] * 20_001) + "}]}",
        '{"queries": [{"ticker": "' + ticker + '", "extra": 1}]}',
        '{"queries": [{"ticker": "' + ticker + '"}]',
        "\xff\xfe",
        "",
        "null",
        "1e309",
    ]
    for body in bodies:
        out.append(("POST", "/similar", {"content": body, "headers": {"content-type": "application/json"}}))
    ok_body = json.dumps({"queries": [{"ticker": ticker}]})
    for content_type in (
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "application/xml",
    ):
        headers = {"content-type": content_type} if content_type else {}
        out.append(("POST", "/similar", {"content": ok_body, "headers": headers}))
    for path in ("/dates", "/health/live", "/health/ready", "/metrics", "/openapi.json"):
        for suffix in ("?x=' OR 1=1", "/../../etc/passwd", "?%00=%00", "/%2e%2e/%2e%2e/etc/passwd"):
            out.append(("GET", path + suffix, {}))
    for value in INJECTIONS[:3] + TRAVERSALS[:2]:
        out.append(("POST", f"/admin/reload?version={quote(value, safe='')}", {}))
    out += [("DELETE", "/similar", {}), ("PUT", f"/assets/{ticker}", {}), ("PATCH", "/admin/reload", {})]
    return out


def leaks(text: str, secrets: list[str]) -> list[str]:
    found = [s for s in secrets if s and s in text]
    if "Traceback" in text or re.search(r'File "[^"]+", line \d+', text):
        found.append("a stack trace")
    return found


def raw_exchange(
    base: str, head: bytes, body_bytes: int = 0, timeout: float = 10
) -> tuple[int | None, float, int]:
    """Send a request head (and up to `body_bytes` of body while the server reads); return the status,
    the seconds to the answer and the body bytes sent."""
    host, port = base.removeprefix("http://").split(":")
    started = time.monotonic()
    sent = 0
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        chunk = b"x" * (1 * MiB)
        answer = b""
        while time.monotonic() - started < timeout:
            try:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
                if b"\r\n\r\n" in answer:
                    break
            except BlockingIOError:
                pass
            if sent < body_bytes:
                try:
                    sent += sock.send(chunk[: min(len(chunk), body_bytes - sent)])
                except BlockingIOError:
                    time.sleep(0.001)
                except OSError:
                    sent = body_bytes  # the server closed its side: stop sending
            else:
                time.sleep(0.005)
    status = int(answer.split(b" ")[1]) if answer.startswith(b"HTTP/") else None
    return status, time.monotonic() - started, sent


def slow_head(base: str, rate_s: float, limit_s: float) -> float | None:
    """Send a request head one byte every `rate_s` seconds; the seconds until the server cut it off."""
    host, port = base.removeprefix("http://").split(":")
    head = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=rate_s) as sock:
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(1024) is not None:  # an answer (408) or the close: cut off
                    return time.monotonic() - started
            except TimeoutError:
                pass
            except OSError:
                return time.monotonic() - started
            if time.monotonic() - started > limit_s:
                return None
    return None


def test_hostile_input_on_every_route(reliability_deployment, database_url, tmp_path, scenario):
    backend = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    scenario.title, scenario.database = TITLE, backend
    home = clone_home(reliability_deployment, tmp_path / "home")
    prepare_database(
        database_url, reliability_deployment, home / "indexes", active=reliability_deployment.version
    )
    key = make_key(database_url, ["read", "admin"])
    env = {
        "FASCL_REQUIRE_API_KEY": "true",
        "FASCL_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT_S),
        "FASCL_BODY_TIMEOUT_SECONDS": str(HEADER_TIMEOUT_S),
        "FASCL_MAX_BODY_BYTES": str(8 * MiB),
    }
    secrets = [str(tmp_path), str(home), "/tmp/", "/work/", "/home/", "site-packages", "127.0.0.1:5432"]
    if backend == "postgresql":
        secrets.append(database_url.rsplit("/", 1)[1])  # the database's name

    with Service(home, database_url, tmp_path / "server.log", env=env) as service:
        service.start(wait="live")
        service.wait_for("/health/ready")
        base = service.base_url
        auth = {"X-API-Key": key}
        with httpx.Client(base_url=base, headers=auth, timeout=15) as http:
            ticker = http.get("/assets", params={"limit": 1}).json()["items"][0]["ticker"]
            for _ in range(20):  # warm: the first answers allocate caches that stay
                http.get(f"/similar/{ticker}")
            requests = hostile_requests(ticker)
            http.request(*requests[0][:2], **requests[0][2])
            rss_start = service.rss_bytes()
            statuses: dict[int, int] = {}
            bad: list[str] = []
            for _ in range(ROUNDS):
                for method, path, kwargs in requests:
                    try:
                        response = http.request(method, path, **kwargs)
                    except httpx.HTTPError as exc:
                        bad.append(f"{method} {path[:80]}: {exc.__class__.__name__}")
                        continue
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    where = f"{method} {path[:80]} -> {response.status_code}"
                    if response.status_code >= 500:
                        bad.append(f"{where}: {response.text[:200]}")
                    elif response.status_code >= 400 and response.status_code not in (408, 431):
                        try:
                            shape = set(response.json()) == {"error"} and response.json()["error"]["code"]
                        except ValueError:
                            shape = False
                        if not shape:
                            bad.append(f"{where}: not the error shape: {response.text[:200]}")
                        if len(response.content) > 4096:
                            bad.append(f"{where}: a {len(response.content)}-byte error")
                    found = leaks(response.text, secrets)
                    if found:
                        bad.append(f"{where}: names {found}")
            rss_hostile = service.rss_bytes()

            # Oversized bodies: refused from the headers (no key: 401; a key: 413), or while streaming.
            post = b"POST /similar HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            unauth = raw_exchange(
                base, post + b"Content-Length: %d\r\n\r\n" % (154 * MiB), body_bytes=154 * MiB
            )
            keyed = raw_exchange(
                base,
                post + b"X-API-Key: %s\r\nContent-Length: %d\r\n\r\n" % (key.encode(), 51 * MiB),
                51 * MiB,
            )
            streamed = stream_chunked(base, post, key, total=64 * MiB)
            # a body that stalls after its first bytes
            stalled = raw_exchange(
                base,
                post + b"X-API-Key: %s\r\nContent-Length: 1000\r\n\r\n" % key.encode() + b'{"queries": [',
            )
            # others are served while a client trickles its head, and the trickle is cut off
            served_during = []
            result: list[float | None] = []
            trickle = threading.Thread(target=lambda: result.append(slow_head(base, 1.0, 20)))
            trickle.start()
            while trickle.is_alive():
                t0 = time.monotonic()
                served_during.append((http.get("/health/live").status_code, time.monotonic() - t0))
                time.sleep(0.2)
            trickle.join()
            cut_after = result[0] if result else None
            for _ in range(3):  # let the allocator settle after the large refusals
                time.sleep(0.5)
                http.get(f"/similar/{ticker}")
            rss_end = service.rss_bytes()
            alive = service.alive()
            log = service.log_tail(20_000)

    sent = len(requests) * ROUNDS
    mib = lambda b: round((b or 0) / MiB, 1)  # noqa: E731
    scenario.load = (
        f"{sent} hostile requests ({len(requests)} kinds x {ROUNDS}), 154 MiB and 51 MiB and 64 MiB "
        f"chunked POST bodies, a stalled body, one client sending its head a byte a second"
    )
    scenario.faults = "-"
    scenario.lost = "-"
    scenario.metrics = {
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "rss_mib": {"start": mib(rss_start), "after_hostile": mib(rss_hostile), "end": mib(rss_end)},
        "no_key_154mib": {
            "status": unauth[0],
            "seconds": round(unauth[1], 3),
            "body_sent_mib": mib(unauth[2]),
        },
        "key_51mib": {"status": keyed[0], "seconds": round(keyed[1], 3), "body_sent_mib": mib(keyed[2])},
        "chunked_64mib": streamed,
        "stalled_body": {"status": stalled[0], "seconds": round(stalled[1], 2)},
        "slow_head_cut_after_s": None if cut_after is None else round(cut_after, 2),
        "served_during_slow_head": len(served_during),
    }
    scenario.check(not bad, f"no 5xx, every refusal in the error shape, nothing named: {bad[:10]}")
    scenario.check(
        unauth[0] == 401 and unauth[1] < 1.0 and unauth[2] <= 16 * MiB,
        f"154 MiB without a key: 401 within 1 s, the body unread ({scenario.metrics['no_key_154mib']})",
    )
    scenario.check(
        keyed[0] == 413 and keyed[1] < 1.0 and keyed[2] <= 16 * MiB,
        f"51 MiB with a key: 413 within 1 s, the body unread ({scenario.metrics['key_51mib']})",
    )
    scenario.check(
        streamed["status"] == 413 and streamed["sent_mib"] <= 24,
        f"a 64 MiB chunked body is refused soon after the 8 MiB limit ({streamed})",
    )
    scenario.check(
        stalled[0] == 408 and stalled[1] < HEADER_TIMEOUT_S + 3,
        f"a body that stalls is answered 408 within {HEADER_TIMEOUT_S} s (+3 s): {scenario.metrics['stalled_body']}",
    )
    scenario.check(
        cut_after is not None and cut_after < HEADER_TIMEOUT_S + 3,
        f"a head sent a byte a second is cut off within {HEADER_TIMEOUT_S} s (+3 s): {cut_after}",
    )
    scenario.check(
        served_during and all(s == 200 and t < 1.0 for s, t in served_during),
        f"others are served meanwhile ({len(served_during)} requests, slowest "
        f"{max((t for _, t in served_during), default=0):.3f} s)",
    )
    scenario.check(
        mib(rss_end) - mib(rss_start) < RSS_SLACK_MIB,
        f"memory returns to where it was: {mib(rss_start)} -> {mib(rss_end)} MiB (peak sampled {mib(rss_hostile)})",
    )
    scenario.check(alive, "the service is still up")
    scenario.check("Traceback" not in log, "the server logged no traceback")
    scenario.conclude()


def stream_chunked(base: str, head: bytes, key: str, total: int) -> dict:
    """POST a chunked body of up to `total` bytes; how far it got before the 413."""
    host, port = base.removeprefix("http://").split(":")
    chunk = b"%x\r\n%s\r\n" % (256 * 1024, b" " * 256 * 1024)
    sent, started = 0, time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + b"X-API-Key: %s\r\nTransfer-Encoding: chunked\r\n\r\n" % key.encode())
        try:
            while sent < total:
                sock.sendall(chunk)
                sent += 256 * 1024
        except OSError:  # the server answered and closed while the body was still coming
            pass
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except OSError:
            pass
    status = int(answer.split(b" ")[1]) if answer.startswith(b"HTTP/") else None
    return {
        "status": status,
        "sent_mib": round(sent / MiB, 1),
        "seconds": round(time.monotonic() - started, 3),
    }
