"""The ASGI app: `uvicorn service.main:app` (settings from FASCL_* environment variables)."""

from service.app import create_app

app = create_app()
