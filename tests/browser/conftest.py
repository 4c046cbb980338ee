"""Browser tests: a real `fascl serve` on a small deployment, and the system's headless Chromium
driven by Selenium with every request that leaves 127.0.0.1 refused, so that a page that renders
here renders in an air-gapped deployment too.

Chromium and its driver come from Debian (`apt-get install chromium chromium-driver`; .ci/run
installs them); without them the browser tests skip with the reason. Screenshots go to
FASCL_TEST_ARTIFACTS, or var/test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from catalogue.migrate import upgrade
from catalogue.repository import create_api_key, register_index, upsert_assets
from catalogue.sessions import make_engine, session_factory, session_scope
from index.store import IndexStore
from market.panel import Panel
from tests.service.fixtures import make_deployment

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1280, 900)


def offline_flags(dead_port: int) -> tuple[str, ...]:
    """Chromium's outside world cut off: every request not to a loopback address goes to a proxy
    on `dead_port`, where nothing listens, and fails with ERR_PROXY_CONNECTION_FAILED (this stops
    URLs with an IP address too; Chrome never sends loopback requests through a proxy); and no host
    name resolves but 127.0.0.1, should anything bypass the proxy."""
    return (
        f"--proxy-server=http://127.0.0.1:{dead_port}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def artifacts_dir() -> Path:
    path = Path(os.environ.get("FASCL_TEST_ARTIFACTS", REPO / "var" / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_screenshot(driver, name: str) -> Path:
    """A PNG of the browser's window in the test-artifacts folder, as `name`.png; returns its path."""
    path = artifacts_dir() / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"the screenshot {path} could not be written"
    return path


@pytest.fixture(scope="session")
def browser_deployment(tmp_path_factory):
    """The 40-asset deployment of the service tests, built once for every browser test module."""
    return make_deployment(tmp_path_factory.mktemp("browser-home"))


@contextlib.contextmanager
def running_server(deployment, workdir: Path, *, require_api_key: bool = False):
    """A real `fascl serve` process on a free port of 127.0.0.1 (one worker) on its own migrated SQLite
    database holding the deployment's assets with the first index version active; yields (its base
    URL, e.g. http://127.0.0.1:41234, and a key with the read scope, created in that database)."""
    database_url = f"sqlite:///{workdir / 'fascl.db'}"
    upgrade(database_url)
    engine = make_engine(database_url)
    with session_scope(session_factory(engine)) as session:
        upsert_assets(session, Panel.load(deployment.panel_path), "synthetic")
        store = IndexStore(deployment.home / "indexes")
        register_index(session, store.open_version(deployment.versions[0]), activate=True)
        key = create_api_key(session, "browser", ["read"])
    engine.dispose()

    port = free_port()
    env = {
        **os.environ,
        "FASCL_HOME": str(deployment.home),
        "FASCL_DATABASE_URL": database_url,
        "FASCL_DATASET": "synthetic",
        "FASCL_REQUIRE_API_KEY": "true" if require_api_key else "false",
        "FASCL_INDEX_POLL_SECONDS": "3600",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log_path = workdir / "server.log"
    command = [sys.executable, "-m", "fascl.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command + ["--workers", "1"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    pytest.fail(f"fascl serve exited with {process.returncode}:\n{log_path.read_text()}")
                try:
                    if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"fascl serve not ready in 60 s:\n{log_path.read_text()}")
                time.sleep(0.2)
            yield base, key
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(browser_deployment, tmp_path_factory) -> str:
    """The base URL of a real `fascl serve` with API keys not required (the HTML docs are off with keys)."""
    with running_server(browser_deployment, tmp_path_factory.mktemp("browser-server")) as (base, _):
        yield base


@pytest.fixture(scope="module")
def keyed_server(browser_deployment, tmp_path_factory) -> tuple[str, str]:
    """(base URL, a read key) of a real `fascl serve` that requires API keys."""
    workdir = tmp_path_factory.mktemp("browser-keyed-server")
    with running_server(browser_deployment, workdir, require_api_key=True) as served:
        yield served


@pytest.fixture
def browser():
    """Headless Chromium (window 1280x900) with the outside network cut off (offline_flags); its
    console is kept, for driver.get_log("browser")."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # A port held bound but not listening: connections to it are refused, and nothing else can take it.
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (
            "--headless=new",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
            "--disable-dev-shm-usage",  # /dev/shm is small in containers
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",  # no update or safe-browsing calls
            *offline_flags(dead.getsockname()[1]),
        ):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        # The system's driver, matched to the system's Chromium: Selenium must not download one.
        driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
        driver.set_page_load_timeout(60)
        try:
            yield driver
        finally:
            driver.quit()
