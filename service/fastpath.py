"""GET /similar/{ticker} without the framework's per-request layers.

The hot route's own work (parse, look up, serialise) is about a fifth of a request's cost in the
process; the rest is the framework around it: request-body limits that a GET does not need, the
exception and exit-stack middlewares, the router's match over every route, the endpoint wrapper.
This pure-ASGI layer sits inside the metrics and API-key middlewares and answers exactly the
requests the route would (GET, one path segment after /similar/) with the route's own endpoint and
the app's own exception handlers, so status codes and bodies are the route's; anything else goes on
to the framework. The route stays declared for the OpenAPI document and as the fallback.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

PREFIX = "/similar/"


class SimilarFastPath:
    def __init__(self, app: ASGIApp, *, route: BaseRoute, handlers: dict) -> None:
        self.app, self.route, self.handlers = app, route, handlers
        self.endpoint = route.endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        ticker = path[len(PREFIX) :]
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or not path.startswith(PREFIX)
            or not ticker
            or "/" in ticker
        ):
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route  # what the router would set: the metrics label it by its path
        scope["path_params"] = {"ticker": ticker}
        request = Request(scope, receive)
        try:
            response = await self.endpoint(request)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)

    def _handler(self, exc: Exception):
        """The app's handler of `exc`: the first registered for a class in its MRO, as Starlette's
        exception middleware looks them up. Not the catch-all (Exception): an unexpected error
        goes on up to the server-error middleware, which answers with that handler and logs it."""
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            handler = self.handlers.get(cls)
            if handler is not None:
                return handler
        return None
