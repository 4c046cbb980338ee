"""What the routers share: JSON responses without response-model validation, the route class of
GET /similar, the documented error responses of the query routes, and how the app takes a router."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.responses import Response

from service.schemas import MAX_K, ErrorResponse

ERRORS = {
    404: {
        "model": ErrorResponse,
        "description": "Unknown ticker (with close matches) or no data on that date",
    },
    422: {
        "model": ErrorResponse,
        "description": f"Malformed date, k outside 1..{MAX_K}, unknown sector or exchange",
    },
    503: {"model": ErrorResponse, "description": "No index loaded yet"},
}


def json_response(payload, status: int = 200) -> Response:
    # orjson and a plain Response: no response-model validation on the hot path (the schema is
    # documented through `responses=`), which is most of FastAPI's per-request cost.
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


class DirectRoute(APIRoute):
    """A route whose endpoint takes the Request and returns a Response, with no dependency solving.

    For GET /similar: FastAPI resolves an endpoint's parameters (path, query, header and cookie
    fields) on every call, which profiled at a third of the route's in-process cost. The endpoint
    parses its own parameters (service/params.py) and `openapi_extra` documents them."""

    def get_route_handler(self):
        return self.endpoint


# A declared route's options, carried onto the app's own router by include_flat.
ROUTE_OPTIONS = (
    "response_model",
    "status_code",
    "tags",
    "dependencies",
    "summary",
    "description",
    "response_description",
    "responses",
    "deprecated",
    "methods",
    "operation_id",
    "response_model_include",
    "response_model_exclude",
    "response_model_by_alias",
    "response_model_exclude_unset",
    "response_model_exclude_defaults",
    "response_model_exclude_none",
    "include_in_schema",
    "response_class",
    "name",
    "callbacks",
    "openapi_extra",
    "generate_unique_id_function",
    "strict_content_type",
    "max_body_size",
    "form_limits",
)


def include_flat(app: FastAPI, router: APIRouter) -> None:
    """`app.include_router(router)`, with the router's routes declared on the app's own router.

    FastAPI 0.165 keeps an included router as one nested route that matches each request twice
    (the app's pass, then its own) and switches per-request route context on the way: measured at
    +25 us a GET /similar in-process (bench/route_cost.py), a quarter of the route. Declared on the
    app, a route is matched once, as when the routes were written in create_app, and it is the
    app's (its dependency overrides, its defaults). The routers have no prefix and no dependencies
    of their own: each route already carries everything it declares."""
    assert not router.prefix and not router.dependencies, "include_flat takes routers without either"
    for route in router.routes:
        assert isinstance(route, APIRoute), f"include_flat takes API routes, not {route!r}"
        options = {name: getattr(route, name) for name in ROUTE_OPTIONS}
        app.router.add_api_route(route.path, route.endpoint, route_class_override=type(route), **options)
