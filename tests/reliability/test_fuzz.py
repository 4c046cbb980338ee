"""Suite 1, schema-based fuzzing: schemathesis, every check, generated from the service's own OpenAPI
document against a real `fascl serve` with API keys required.

Passes when schemathesis finds nothing: no 5xx, every status code, content type, header and body
documented, invalid input rejected and valid input accepted, requests without the key refused. The
fast level runs few examples per operation, the full level many.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from catalogue.repository import create_api_key
from catalogue.sessions import make_engine, session_factory, session_scope
from tests.reliability.harness import Service, clone_home, level, prepare_database

TITLE = "1. Schema-based fuzzing (schemathesis, all checks)"
EXAMPLES = level(8, 200)
SCHEMATHESIS = [sys.executable, "-m", "schemathesis.cli"]
# A schema-valid request may still name what the served index does not hold: a sector, an exchange,
# an `among` ticker. The document cannot list those (they change with the index), and the service
# answers them 422 saying what would be right (`valid`, `close_matches`): an expected answer to valid
# data, beside schemathesis' defaults. Invalid data over the request head's bound (many parameters
# each at its documented maximum and beyond) is refused by the server before the application, 431:
# a rejection, beside the defaults. Every other check runs as shipped.
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2XX", "3XX", "401", "403", "404", "409", "422", "429", "5XX"]

[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429", "431", "5XX"]
"""


def make_key(database_url: str) -> str:
    engine = make_engine(database_url)
    try:
        with session_scope(session_factory(engine)) as session:
            return create_api_key(session, "fuzz", ["read", "admin"])
    finally:
        engine.dispose()


def test_schemathesis_finds_nothing(reliability_deployment, database_url, tmp_path, scenario):
    backend = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    scenario.title, scenario.database = TITLE, backend
    home = clone_home(reliability_deployment, tmp_path / "home")
    prepare_database(
        database_url, reliability_deployment, home / "indexes", active=reliability_deployment.version
    )
    key = make_key(database_url)
    env = {"FASCL_REQUIRE_API_KEY": "true"}
    with Service(home, database_url, tmp_path / "server.log", env=env) as service:
        service.start(wait="live")
        service.wait_for("/health/ready")
        schema = httpx.get(f"{service.base_url}/openapi.json", headers={"X-API-Key": key}).json()
        operations = sum(len(ops) for ops in schema["paths"].values())
        schema_file = tmp_path / "openapi.json"
        schema_file.write_text(json.dumps(schema))
        report = tmp_path / "schemathesis.json"
        config = tmp_path / "schemathesis.toml"
        config.write_text(CONFIG)
        args = [
            "--config-file",
            str(config),
            "run",
            str(schema_file),
            "--url",
            service.base_url,
            "--header",
            f"X-API-Key: {key}",
            "--checks",
            "all",
            "--max-examples",
            str(EXAMPLES),
            "--seed",
            "0",
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--request-timeout",
            "10",
            "--no-color",
            "--report",
            "json",
            "--report-json-path",
            str(report),
        ]
        done = subprocess.run(
            SCHEMATHESIS + args,
            capture_output=True,
            text=True,
            timeout=level(600, 3600),
            cwd=tmp_path,  # its cache stays there
        )
        rss = service.rss_bytes()
        alive = service.alive()
    # Generated values can be megabytes long: the kept output cuts every line.
    output = "\n".join(line[:400] for line in (done.stdout + done.stderr).splitlines())
    (tmp_path / "schemathesis.txt").write_text(output)
    summary = next((ln for ln in reversed(output.splitlines()) if " in " in ln and "=====" in ln), "")
    scenario.load = f"schemathesis, all checks, {EXAMPLES} examples per operation, {operations} operations"
    scenario.lost = "-"
    scenario.metrics = {"summary": summary.strip("= "), "rss_mib": round((rss or 0) / 2**20)}
    scenario.artifacts += [str(report), str(tmp_path / "schemathesis.txt")]
    scenario.check(alive, "the service is still up after the run")
    scenario.check(done.returncode == 0, f"schemathesis reports no failure ({summary.strip('= ')})")
    if done.returncode != 0:
        print(output[-12000:])
    scenario.conclude()
