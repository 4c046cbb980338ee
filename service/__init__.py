"""The FastAPI similarity service."""
