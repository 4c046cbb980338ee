"""Bounds on request bodies, enforced before anything reads them: their size and their pace.

A body announced larger than the limit is refused at once from its Content-Length; a body without
one (chunked) is counted as it streams and refused as soon as it passes the limit, so a large upload
costs at most the limit in memory, never its own size. A body whose next part does not arrive within
the body timeout is refused with 408: a client cannot hold a request open by stalling its upload.
Pure ASGI: no task per request.
"""

from __future__ import annotations

import asyncio

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a streamed body passes the limit. An HTTPException, so that FastAPI's
    body parsing lets it through (it turns any other exception into a 400) to the error handlers."""

    def __init__(self, limit: int):
        super().__init__(413, too_large_message(limit), {"connection": "close"})
        self.error_detail = {"limit_bytes": limit}


class BodyTimeout(HTTPException):
    def __init__(self, seconds: float):
        message = (
            f"the request body stalled: no part of it arrived for {seconds:g} s (FASCL_BODY_TIMEOUT_SECONDS)"
        )
        super().__init__(408, message, {"connection": "close"})
        self.error_detail = {"timeout_seconds": seconds}


def too_large_message(limit: int) -> str:
    return (
        f"the request body is larger than the limit of {limit:,} bytes (FASCL_MAX_BODY_BYTES); "
        "split a large batch into several requests"
    )


def body_too_large(limit: int):
    # The rest of the body is not read: the connection closes after the answer.
    return error_response(
        413, "body_too_large", too_large_message(limit), {"limit_bytes": limit}, {"connection": "close"}
    )


def content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length before the app sees it
    return None


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, timeout_seconds: float) -> None:
        self.app, self.max_bytes, self.timeout_seconds = app, max_bytes, timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        announced = content_length(scope)
        if announced is not None and announced > self.max_bytes:
            await body_too_large(self.max_bytes)(scope, receive, send)
            return
        received = 0
        complete = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, complete
            if complete:  # after the body, receive() waits for the client's disconnect: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout_seconds)
            except TimeoutError:
                raise BodyTimeout(self.timeout_seconds) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
                complete = not message.get("more_body", False)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except (BodyTooLarge, BodyTimeout) as exc:  # raised where no handler turned it into a response
            if started:
                raise
            code = "body_too_large" if exc.status_code == 413 else "body_timeout"
            await error_response(exc.status_code, code, exc.detail, exc.error_detail, exc.headers)(
                scope, receive, send
            )
