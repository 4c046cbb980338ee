"""Hostile connections against a real `fascl serve`: bodies refused before they are read, and
request heads that trickle in are cut off while other clients are served."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from catalogue.repository import create_api_key
from catalogue.sessions import session_scope
from tests.e2e.test_serve import deployment, serving  # noqa: F401 - the module's deployment fixture

MiB = 2**20


def send_head(base: str, head: bytes) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(head)
    return sock


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """The status and the body of the response on `sock` (the server closes or sends a length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(head.split(b" ")[1]), body


@pytest.fixture
def keyed(deployment, database_url, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("FASCL_REQUIRE_API_KEY", "true")
    monkeypatch.setenv("FASCL_MAX_BODY_BYTES", str(MiB))
    monkeypatch.setenv("FASCL_HEADER_TIMEOUT_SECONDS", "2")
    monkeypatch.setenv("FASCL_BODY_TIMEOUT_SECONDS", "2")
    with serving(deployment, database_url, tmp_path / "server.log") as (base, factory):
        with session_scope(factory) as session:
            key = create_api_key(session, "reader", ["read"])
        deadline = time.monotonic() + 10  # the server reads keys at its next poll
        while httpx.get(f"{base}/dates", headers={"X-API-Key": key}).status_code != 200:
            assert time.monotonic() < deadline, "the new key was not picked up"
            time.sleep(0.2)
        yield base, key


def post_head(length: int | None, key: str | None = None) -> bytes:
    lines = [b"POST /similar HTTP/1.1", b"Host: x", b"Content-Type: application/json"]
    lines.append(b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length)
    if key:
        lines.append(b"X-API-Key: " + key.encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


def test_bodies_are_refused_before_they_are_read(keyed):
    base, key = keyed
    # 200 MiB announced, none sent: the answers cannot wait for the body
    for key_sent, status, code in ((None, 401, b"unauthorized"), (key, 413, b"body_too_large")):
        started = time.monotonic()
        with send_head(base, post_head(200 * MiB, key_sent)) as sock:
            got, body = read_response(sock)
        assert got == status and code in body and time.monotonic() - started < 2, (got, body)
    # no length announced: counted as it streams, refused once past the limit
    with send_head(base, post_head(None, key)) as sock:
        chunk = b"%x\r\n%s\r\n" % (64 * 1024, b" " * 64 * 1024)
        sent = 0
        try:
            while sent < 64 * MiB:
                sock.sendall(chunk)
                sent += 64 * 1024
        except OSError:  # the server answered and closed while we were still sending
            pass
        got, body = read_response(sock)
    assert got == 413 and b'"code":"body_too_large"' in body, body
    assert sent < 16 * MiB, f"the server read {sent / MiB:.0f} MiB before refusing"
    # a body within the limit is served as before
    response = httpx.post(
        f"{base}/similar", json={"queries": [{"ticker": "NOPE"}]}, headers={"X-API-Key": key}
    )
    assert response.status_code == 200, response.text


def test_a_head_sent_a_byte_a_second_is_cut_off_while_others_are_served(keyed):
    base, key = keyed
    slow = send_head(base, b"G")
    started, closed_after = time.monotonic(), None
    served = 0
    try:
        for byte in b"ET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 30:
            assert httpx.get(f"{base}/health/live", timeout=2).status_code == 200
            served += 1
            try:
                slow.sendall(bytes([byte]))
                slow.settimeout(1)
                slow.recv(1024)  # the server's answer (408) or its close: either ends the trickle
                closed_after = time.monotonic() - started
                break
            except TimeoutError:
                continue
            except OSError:
                closed_after = time.monotonic() - started
                break
    finally:
        slow.close()
    assert closed_after is not None and closed_after < 6, closed_after  # the timeout is 2 s
    assert served >= 2


def test_a_body_that_stalls_is_answered_408(keyed):
    base, key = keyed
    started = time.monotonic()
    with send_head(base, post_head(1000, key) + b'{"queries": [') as sock:
        got, body = read_response(sock)  # nothing more is sent
    took = time.monotonic() - started
    assert got == 408 and b'"code":"body_timeout"' in body and took < 5, (got, body, took)
    response = httpx.post(
        f"{base}/similar", json={"queries": [{"ticker": "NOPE"}]}, headers={"X-API-Key": key}
    )
    assert response.status_code == 200, response.text
