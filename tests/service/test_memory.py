"""The service's allocator setting: glibc's mmap threshold fixed, unless the environment sets it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

SCRIPT = "from service.memory import fix_mmap_threshold; print(fix_mmap_threshold())"


def run(env: dict) -> str:
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting exists in glibc only")
def test_the_threshold_is_fixed_on_glibc_and_the_environment_wins():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    assert run(env) == "True"
    assert run({**env, "MALLOC_MMAP_THRESHOLD_": "262144"}) == "False"
