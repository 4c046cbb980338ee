"""A bound on request bodies, enforced before anything reads them.

A body announced larger than the limit is refused at once from its Content-Length; a body without
one (chunked) is counted as it streams and refused as soon as it passes the limit, so a large upload
costs at most the limit in memory, never its own size. Pure ASGI: no task per request.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a streamed body passes the limit. An HTTPException, so that FastAPI's
    body parsing lets it through (it turns any other exception into a 400) to the error handlers."""

    def __init__(self, limit: int):
        super().__init__(413, too_large_message(limit), {"connection": "close"})
        self.error_detail = {"limit_bytes": limit}


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
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        announced = content_length(scope)
        if announced is not None and announced > self.max_bytes:
            await body_too_large(self.max_bytes)(scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:  # raised where no handler turned it into a response
            if started:
                raise
            await body_too_large(self.max_bytes)(scope, receive, send)
