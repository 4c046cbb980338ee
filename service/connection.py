"""uvicorn's HTTP protocol with a deadline and a size bound on request heads (slow-header clients).

uvicorn times out idle keep-alive connections, but not a request head that trickles in: a client
sending one header byte a second holds its connection (and a file descriptor) for as long as it
likes, and the URL and headers it sends are buffered without a bound. This protocol closes a
connection whose head is not complete within FASCL_HEADER_TIMEOUT_SECONDS of its first byte (or of
connecting), answering 408, and one whose head passes MAX_HEAD_BYTES, answering 431. Everything
else is uvicorn's httptools protocol unchanged. A reverse proxy in front may add its own limits;
this is what the service does on its own.

The deadline is given, not read from the environment: `guarded_protocol(seconds)` is what
`fascl serve` passes to uvicorn as `http=`.
"""

from __future__ import annotations

import asyncio
import functools

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024  # the URL and every header together: 64 kB is far above any real request


def document_head_limits(app) -> None:
    """Declare the protocol's refusals (408, 431; plain text) on every operation of `app`'s OpenAPI
    document: they can answer any request, before the application sees it. The 408 of a stalled
    body, from the application, is declared with them."""
    plain = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = plain()
        text = {"text/plain": {"schema": {"type": "string"}}}
        # A slow body is refused by the application, in its error shape (service/limits.py).
        slow = {**text, "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
        for operations in schema["paths"].values():
            for operation in operations.values():
                responses = operation["responses"]
                responses.setdefault(
                    "408",
                    {
                        "description": "The request head (plain text) or body (error shape) stalled",
                        "content": slow,
                    },
                )
                responses.setdefault(
                    "431",
                    {"description": f"The request head is over {MAX_HEAD_BYTES:,} bytes", "content": text},
                )
        return schema

    app.openapi = openapi


def guarded_protocol(header_timeout: float) -> functools.partial:
    """The protocol factory for uvicorn's `http=`, with the head deadline in seconds. A partial of
    the class, not a subclass made here: uvicorn pickles its config for its worker processes."""
    return functools.partial(GuardedHttpToolsProtocol, header_timeout=header_timeout)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args, header_timeout: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.head_deadline: asyncio.TimerHandle | None = None
        self.head_bytes = 0

    # ------------------------------------------------------------ the deadline
    def arm_head_deadline(self) -> None:
        if self.head_deadline is None:
            self.head_deadline = self.loop.call_later(
                self.header_timeout, self.refuse, 408, b"Request Timeout"
            )

    def disarm_head_deadline(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def refuse(self, status: int, reason: bytes) -> None:
        self.head_deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        message = b"the request head (URL and headers) was too slow or too large"
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason, len(message), message)
        )
        self.transport.close()

    # ------------------------------------------------- uvicorn's hooks, extended
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.arm_head_deadline()  # a connection that sends nothing at all is cut off too

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm_head_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_bytes = 0
        self.arm_head_deadline()

    def count_head(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > MAX_HEAD_BYTES:
            self.disarm_head_deadline()
            self.refuse(431, b"Request Header Fields Too Large")

    def on_url(self, url: bytes) -> None:
        self.count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.count_head(len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.disarm_head_deadline()
        if self.transport.is_closing():  # refused above: no request to run
            return
        super().on_headers_complete()
