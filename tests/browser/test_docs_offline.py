"""/docs (Swagger UI) and /redoc render from the service's own files, with the outside network cut."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.browser.conftest import save_screenshot

RENDER_SECONDS = 60

# The page's scripts, stylesheets and other links, and every resource it asked for (resource timing
# lists those that failed or were refused too), as absolute URLs.
PAGE_URLS = """
return {
    scripts: [...document.scripts].filter(s => s.src).map(s => s.src),
    styles: [...document.querySelectorAll('link[rel~="stylesheet"]')].map(l => l.href)
        .concat([...document.styleSheets].filter(s => s.href).map(s => s.href)),
    links: [...document.querySelectorAll('link[href]')].map(l => l.href),
    requested: performance.getEntriesByType('resource').map(e => e.name),
};
"""


def wait_for(driver, css: str, text: str | None = None):
    """The first element matching `css` (and holding `text`) once the page has rendered it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def found(d):
        for element in d.find_elements(By.CSS_SELECTOR, css):
            if text is None or text in element.text:
                return element
        return False

    return WebDriverWait(driver, RENDER_SECONDS).until(found, f"{css!r} {text or ''} never rendered")


def assert_served_by_the_service(driver, base: str) -> dict:
    """Every script, stylesheet and link of the page is the service's; an outside resource may only
    have been asked for if the page's own policy refused it before any request (ReDoc's logo), and
    nothing failed to load. Returns the page's URLs."""
    urls = driver.execute_script(PAGE_URLS)
    console = [entry["message"] for entry in driver.get_log("browser")]  # read once: reading empties it
    refused = [m for m in console if "violates the following Content Security Policy" in m]
    origin = urlsplit(base)[:2]
    assert urls["scripts"] and urls["requested"], urls
    for kind, found in urls.items():
        for url in found:
            if urlsplit(url)[:2] != origin:
                assert kind == "requested", f"{kind} from outside the service: {url}"
                assert any(url in m for m in refused), f"requested from outside the service: {url}"
    # A request the harness blocked, or a file the service lacks, shows as a failed load.
    failed = [m for m in console if "net::ERR" in m or "Failed to load resource" in m]
    assert not failed, failed
    return urls


def test_swagger_ui_renders_the_operations_offline(server, browser):
    browser.get(f"{server}/docs")
    operation = wait_for(browser, '.opblock-get .opblock-summary-path[data-path="/similar/{ticker}"]')
    assert "/similar/{ticker}" in operation.text
    assert wait_for(browser, ".info .title", "FASCL asset retrieval")
    urls = assert_served_by_the_service(browser, server)
    assert any(u.endswith("/swagger-ui-bundle.js") for u in urls["scripts"]), urls
    assert any(u.endswith("/swagger-ui.css") for u in urls["styles"]), urls
    path = save_screenshot(browser, "docs-swagger-ui")
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one


def test_redoc_renders_the_operations_offline(server, browser):
    browser.get(f"{server}/redoc")
    assert wait_for(browser, ".api-info h1", "FASCL asset retrieval")
    # The operation's endpoint panel: the method and the path template, rendered from the document.
    assert wait_for(browser, ".api-content", "/similar/{ticker}")
    urls = assert_served_by_the_service(browser, server)
    assert any(u.endswith("/redoc.standalone.js") for u in urls["scripts"]), urls
    save_screenshot(browser, "docs-redoc")


def test_the_browser_cannot_reach_outside_hosts(server, browser):
    """What makes the tests above prove offline: the harness itself refuses a CDN's file and an
    address (not whatever network the machine has: the error is the harness's dead proxy)."""
    browser.get(f"{server}/docs")
    wait_for(browser, ".opblock-summary-path")
    browser.get_log("browser")  # the page's own messages, read off
    outside = ("https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css", "http://1.1.1.1/")
    for url in outside:
        status = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch(arguments[0], {mode: 'no-cors'}).then(() => done('loaded'), e => done('failed: ' + e));",
            url,
        )
        assert status.startswith("failed"), (url, status)
    console = [entry["message"] for entry in browser.get_log("browser")]
    for url in outside:
        assert any(url in m and "ERR_PROXY_CONNECTION_FAILED" in m for m in console), (url, console)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_pages_reference_no_outside_host(server, page):
    """Without a browser: the HTML names only the service's own paths, and those files are there."""
    with httpx.Client(base_url=server, timeout=10) as http:
        response = http.get(page)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        assert response.headers["content-security-policy"] == "img-src 'self' data:"
        html = response.text
        for host in ("cdn.jsdelivr.net", "unpkg.com", "cdnjs", "fonts.googleapis.com", "tiangolo.com"):
            assert host not in html, host
        references = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']+)["\']', html)
        assert references, html
        for reference in references:
            assert reference.startswith("/") and not reference.startswith("//"), reference
            asset = http.get(urljoin(server, reference))
            assert asset.status_code == 200, reference
            assert "max-age=31536000" in asset.headers["cache-control"], reference
