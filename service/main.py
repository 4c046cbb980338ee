"""The ASGI app: `uvicorn service.main:app` (settings from FASCL_* environment variables)."""

import os

from fascl.settings import get_settings

settings = get_settings()
# Before faiss loads: OpenMP sizes the pool of every thread from this (uvicorn's own threads
# included), and a pool as wide as the machine per worker oversubscribes the cores.
os.environ.setdefault("OMP_NUM_THREADS", str(settings.omp_threads))

from service.app import create_app  # noqa: E402
from service.memory import fix_mmap_threshold  # noqa: E402

fix_mmap_threshold()  # in every worker: each is its own process with its own allocator
app = create_app(settings)
