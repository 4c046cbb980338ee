"""The CLI tests share the index tests' sample deployment (tests/index/conftest.py)."""

from tests.index.conftest import checkpoint, panel, sample  # noqa: F401 - fixtures
