"""The web page end to end: a real `fascl serve`, headless Chromium without the outside network;
a query typed into the form must show the same peers, in the same order, as GET /similar, in the
table and as one chart line per asset."""

from __future__ import annotations

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import save_screenshot

DATE = "2011-02-15"  # an indexed date whose next 64 trading days are known


def test_a_query_shows_the_peers_of_get_similar_in_the_table_and_the_chart(server, browser):
    ticker = httpx.get(f"{server}/assets", params={"limit": 10}).json()["items"][3]["ticker"]
    expected = httpx.get(f"{server}/similar/{ticker}", params={"date": DATE, "k": 10}).json()
    peers = [r["ticker"] for r in expected["results"]]
    pearson = httpx.get(f"{server}/similar/{ticker}/pearson", params={"date": DATE, "k": 10}).json()
    wait = WebDriverWait(browser, 30)

    browser.get(f"{server}/")
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "body[data-ready='true']")))
    # First paint under a second (the browser's own measure, from navigation start).
    paint = browser.execute_script(
        "const e = performance.getEntriesByName('first-contentful-paint'); return e.length ? e[0].startTime : null;"
    )
    assert paint is not None and paint < 1000, f"first contentful paint at {paint} ms"
    assert not browser.find_element(By.ID, "key-form").is_displayed()  # no key is required here
    box = browser.find_element(By.ID, "ticker")
    box.send_keys(ticker.lower())  # any case: the page asks in upper case
    # Completion from GET /assets?q=: the ticker is among the suggestions.
    wait.until(
        lambda d: (
            ticker
            in [o.get_attribute("value") for o in d.find_elements(By.CSS_SELECTOR, "#ticker-options option")]
        )
    )
    # The date picker: set as a user's pick lands (value, then a change event).
    picker = browser.find_element(By.ID, "date")
    assert picker.get_attribute("max") == httpx.get(f"{server}/dates").json()["last"]
    browser.execute_script(
        "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('change'));", picker, DATE
    )
    assert picker.get_attribute("value") == DATE
    browser.find_element(By.ID, "submit").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "body[data-state='done']")))

    rows = browser.find_elements(By.CSS_SELECTOR, "#model-table tbody tr")
    assert [r.get_attribute("data-ticker") for r in rows] == peers
    first = rows[0].find_elements(By.TAG_NAME, "td")
    assert first[0].text == "1" and first[1].text == peers[0]
    assert first[4].text == f"{expected['results'][0]['score']:.3f}"
    assert first[5].text not in ("", "—")  # the future of DATE is known: a realised correlation
    lines = browser.find_elements(By.CSS_SELECTOR, "#chart svg path.series")
    by_rank = sorted(lines, key=lambda line: int(line.get_attribute("data-rank")))
    assert [line.get_attribute("data-ticker") for line in by_rank] == [ticker, *peers]
    assert all(len(line.get_attribute("d")) > 100 for line in lines)  # drawn over many days
    assert browser.find_elements(By.CSS_SELECTOR, "#chart svg line.mark")  # the date's mark
    beside = browser.find_elements(By.CSS_SELECTOR, "#pearson-table tbody tr")
    assert [r.get_attribute("data-ticker") for r in beside] == [r["ticker"] for r in pearson["results"]]

    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]  # read, and so cleared
    assert not errors, errors

    # A wrong ticker: the service's message, the peers of the last query left in place.
    box.clear()
    box.send_keys("NOPE")
    browser.find_element(By.ID, "submit").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "body[data-state='error']")))
    assert "unknown ticker" in browser.find_element(By.ID, "status").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#model-table tbody tr")) == len(peers)
    box.clear()
    box.send_keys(ticker)
    browser.find_element(By.ID, "submit").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "body[data-state='done']")))

    browser.find_element(By.ID, "track-load").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#track-table tbody tr.overall")))
    browser.execute_script("window.scrollTo(0, 0)")
    save_screenshot(browser, "page")
    # Nothing failed since but the wrong ticker's requests (the browser logs their 404s).
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "/NOPE" not in e["message"]]
    assert not errors, errors


def test_with_keys_required_the_page_asks_for_one_and_answers_with_it(keyed_server, browser):
    """The page and its files load without a key; its first data request is refused, so it asks for
    one; a wrong key is refused and asked for again; with the right one the query answers as GET
    /similar does for that key."""
    server, key = keyed_server
    headers = {"X-API-Key": key}
    ticker = httpx.get(f"{server}/assets", params={"limit": 10}, headers=headers).json()["items"][2]["ticker"]
    expected = httpx.get(f"{server}/similar/{ticker}", params={"date": DATE, "k": 10}, headers=headers).json()
    wait = WebDriverWait(browser, 30)

    browser.get(f"{server}/")
    form = wait.until(ec.visibility_of_element_located((By.ID, "key-form")))
    assert browser.execute_script("return sessionStorage.getItem('fascl-api-key')") is None
    browser.find_element(By.ID, "api-key").send_keys("fascl_wrong_key")
    form.find_element(By.TAG_NAME, "button").click()
    wait.until(lambda d: "refused" in d.find_element(By.ID, "status").text)
    assert form.is_displayed()  # asked again

    browser.find_element(By.ID, "api-key").clear()
    browser.find_element(By.ID, "api-key").send_keys(key)
    form.find_element(By.TAG_NAME, "button").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "body[data-ready='true']")))
    assert not form.is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('fascl-api-key')") == key
    browser.find_element(By.ID, "ticker").send_keys(ticker)
    picker = browser.find_element(By.ID, "date")
    browser.execute_script(
        "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('change'));", picker, DATE
    )
    browser.find_element(By.ID, "submit").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "body[data-state='done']")))
    rows = browser.find_elements(By.CSS_SELECTOR, "#model-table tbody tr")
    assert [r.get_attribute("data-ticker") for r in rows] == [r["ticker"] for r in expected["results"]]
