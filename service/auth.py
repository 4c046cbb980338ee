"""API keys: checked before anything reads the request body, and declared in the OpenAPI document.

With FASCL_REQUIRE_API_KEY, every path but /health/* and the web page's files (/ and
/static/page/*, which hold no data: the page asks for a key and sends it with its requests) needs an
X-API-Key: /admin/* one with the `admin` scope, everything else (the OpenAPI document and unknown
paths included) one with `read`.
The check runs as a pure ASGI middleware ahead of routing, so a request without a valid key is
answered 401/403 from its headers alone: an unauthenticated upload costs nothing to refuse.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from catalogue.repository import check_api_key
from service.errors import error_response
from service.registry import IndexRegistry

OPEN_PREFIX = "/health/"
# A browser cannot send a header with the request for a page or its files.
PAGE_PATH, PAGE_FILES = "/", "/static/page/"
ADMIN_PREFIX = "/admin/"
SCHEME = "APIKeyHeader"


def required_scope(path: str) -> str | None:
    if path.startswith(OPEN_PREFIX) or path == PAGE_PATH or path.startswith(PAGE_FILES):
        return None
    return "admin" if path.startswith(ADMIN_PREFIX) else "read"


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, registry: IndexRegistry) -> None:
        self.app, self.registry = app, registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (wanted := required_scope(scope["path"])) is None:
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope, wanted)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        # The body, if any, is never read: the connection closes after the answer.
        await error_response(*refusal, headers={"connection": "close"})(scope, receive, send)

    def refusal(self, scope: Scope, wanted: str) -> tuple | None:
        """(status, code, message, detail) of the refusal, or None when the key may go on."""
        if not getattr(self.registry, "keys_loaded", True):  # started while the database was down
            return (
                503,
                "keys_unavailable",
                "API keys cannot be checked until the database answers; retry shortly",
                self.registry.database_error,
            )
        key = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-api-key"), None)
        scopes = check_api_key(self.registry.api_keys, key)
        if scopes is None:
            return 401, "unauthorized", "a valid X-API-Key header is required", None
        if wanted not in scopes:
            return 403, "forbidden", f"this key lacks the {wanted!r} scope", {"scopes": sorted(scopes)}
        return None


def document_api_keys(app: FastAPI) -> None:
    """Declare the key in the app's OpenAPI document: the apiKey scheme, and on every protected
    operation its security requirement and the 401/403 answers."""
    plain = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = plain()
        schema.setdefault("components", {})["securitySchemes"] = {
            SCHEME: {"type": "apiKey", "in": "header", "name": "X-API-Key"}
        }
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
        for path, operations in schema["paths"].items():
            if required_scope(path) is None:
                continue
            for operation in operations.values():
                operation["security"] = [{SCHEME: []}]
                operation["responses"].setdefault(
                    "401", {"description": "No or an unknown X-API-Key", "content": error}
                )
                operation["responses"].setdefault(
                    "403", {"description": "The key lacks the route's scope", "content": error}
                )
        return schema

    app.openapi = openapi
