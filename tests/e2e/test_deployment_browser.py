"""The Airflow UI in a real headless Chromium (selenium + chromedriver): the trigger form of
the end-to-end DAG (sections, dropdowns), triggering a run from it, and the "forgeline
report" tab. Screenshots land in the test's temp folder.

Needs Debian's ``chromium`` and ``chromium-driver``: installed here with apt-get when this
runs as root and they are missing, otherwise the tests skip saying so (docs/airflow.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from selenium.common.exceptions import StaleElementReferenceException

pytestmark = pytest.mark.slow

SECTIONS = ("Data", "Model & training", "Parallelism", "Data cache", "Checkpoints",
            "Quantization", "Storage")
"""Form sections that must be there (the stage options may add more, e.g. Tokenizer)."""


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if (browser is None or driver is None) and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"],
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                       capture_output=True, timeout=900)
        browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("the UI tests need Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver); not installed here")
    return browser, driver


@pytest.fixture(scope="module")
def browser(deployment, tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # no background networking: this machine's closed network refuses those connections,
    # many at a time, and they slow every page down
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,2400", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(120)
    driver.get(f"{deployment.api}/api/v2/version")  # same origin, so the cookie sticks
    driver.add_cookie({"name": "_token", "value": deployment.token, "path": "/"})
    yield driver
    driver.quit()


def _wait_text(driver, text: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    body = ""
    while time.monotonic() < deadline:
        body = driver.find_element("tag name", "body").text
        if text in body:
            return
        time.sleep(1)
    raise AssertionError(f"{text!r} not on {driver.current_url} within {timeout_s} s; "
                         f"the page shows: {body[:800]!r}")


def _click_button(driver, label: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    shown: list[str] = []
    while time.monotonic() < deadline:  # the page's parts render one after the other
        try:  # and React may replace a button between finding and clicking it
            buttons = [b for b in driver.find_elements("tag name", "button")
                       if b.is_displayed()]
            shown = [b.text.strip() for b in buttons]
            matching = [b for b, text in zip(buttons, shown, strict=True) if text == label]
            if matching:
                matching[-1].click()
                return
        except StaleElementReferenceException:
            pass
        time.sleep(1)
    raise AssertionError(f"no {label!r} button on {driver.current_url} within {timeout_s} s; "
                         f"buttons: {shown}")


def test_trigger_form_has_sections_and_dropdowns_and_triggers_a_run(deployment, browser,
                                                                     tmp_path):
    before = {r["dag_run_id"] for r in deployment.get(
        "/api/v2/dags/forgeline_end_to_end/dagRuns")["dag_runs"]}
    browser.get(f"{deployment.api}/dags/forgeline_end_to_end")
    _wait_text(browser, "forgeline_end_to_end")
    _click_button(browser, "Trigger")
    browser.save_screenshot(str(tmp_path / "trigger-clicked.png"))
    _wait_text(browser, "Model & training")  # the first sections of the form
    text = browser.find_element("tag name", "body").text
    browser.save_screenshot(str(tmp_path / "trigger-form.png"))
    for section in SECTIONS:
        assert section in text, section
    # open every section, then look for the enum fields' dropdowns
    for toggle in browser.find_elements("css selector", "button[aria-expanded='false']"):
        if toggle.is_displayed() and toggle.text.strip() in SECTIONS:
            browser.execute_script("arguments[0].click()", toggle)  # opening moves the rest
    time.sleep(1)
    browser.save_screenshot(str(tmp_path / "trigger-form-open.png"))
    combos = browser.find_elements("css selector", "[role='combobox'], select")
    assert len(combos) >= 4  # model size, quantize scheme, checkpoint codec, cache mode …
    _click_button(browser, "Trigger")
    new = deployment.wait_for("the run triggered from the form", lambda: {
        r["dag_run_id"] for r in deployment.get(
            "/api/v2/dags/forgeline_end_to_end/dagRuns")["dag_runs"]} - before, 60)
    run_id = next(iter(new))
    # the defaults train for minutes: stop that run, the form did its part
    deployment.request("PATCH", f"/api/v2/dags/forgeline_end_to_end/dagRuns/{run_id}",
                       {"state": "failed"})
    browser.save_screenshot(str(tmp_path / "triggered.png"))
    print(f"screenshots: {tmp_path}")


def _console(driver) -> list[dict]:
    """Chromium's console entries since the last call, printed into the test's output."""
    entries = driver.get_log("browser")
    print(f"console: {len(entries)} entries")
    for entry in entries:
        print(f"console {entry['level']}: {entry['message']}")
    return entries


def _open_report_tab(driver, api: str, run_id: str, text: str, timeout_s: float = 90):
    """Open the run's "forgeline report" tab; return its shadow root once it shows ``text``."""
    driver.get(f"{api}/dags/forgeline_end_to_end/runs/{run_id}/plugin/"
               "forgeline-report")
    deadline = time.monotonic() + timeout_s
    shown = ""
    while time.monotonic() < deadline:
        try:  # React may replace the host element while the tab renders
            hosts = driver.find_elements("css selector", "[data-testid='forgeline-report']")
            if hosts:
                shown = driver.execute_script(
                    "return arguments[0].shadowRoot?.textContent ?? ''", hosts[0])
                if text in shown:
                    return hosts[0].shadow_root
        except StaleElementReferenceException:
            pass
        time.sleep(1)
    raise AssertionError(f"{text!r} not in the report tab of {run_id} within {timeout_s} s; "
                         f"it shows {shown[:800]!r}; console: {_console(driver)}")


def _problems(entries: list[dict]) -> list[dict]:
    """The iframe sandbox warning, and any warning or error that names forgeline."""
    return [e for e in entries if "sandbox" in e["message"]
            or (e["level"] in ("SEVERE", "WARNING") and "forgeline" in e["message"])]


def test_report_tab_shows_the_report(deployment, browser, successful_run, tmp_path):
    _console(browser)  # only this page's entries below
    report = _open_report_tab(browser, deployment.api, successful_run, "Artifacts")
    browser.save_screenshot(str(tmp_path / "report-tab.png"))
    assert browser.find_elements("tag name", "iframe") == []
    body = report.find_element("css selector", "body").text.lower()
    assert "perplexity" in body and "quantize" in body
    # the report's CSS applies inside the shadow root and nowhere else
    card = report.find_element("css selector", ".card")
    assert browser.execute_script("return getComputedStyle(arguments[0]).borderRadius",
                                  card) == "8px"
    assert not browser.execute_script(
        "return [...document.querySelectorAll('style')].some(s => s.textContent.includes("
        "'summary { cursor: pointer'))")
    # an artifact link downloads the file from the app, authenticated by the UI's cookie
    link = report.find_element("css selector", "a[href$='/artifacts/prepare/manifest.json']")
    href = link.get_attribute("href")
    assert href.startswith(f"{deployment.api}/forgeline/dags/forgeline_end_to_end/runs/")
    assert link.get_attribute("download") is not None
    fetched = browser.execute_async_script(
        "fetch(arguments[0]).then(r => r.json().then(j => arguments[1]([r.status, j])))", href)
    assert fetched[0] == 200, fetched
    assert fetched[1]["window_tokens"] == deployment.TINY["data_window_tokens"], fetched
    assert _problems(_console(browser)) == []


def test_report_tab_of_a_failed_run_says_so(deployment, browser):
    response = deployment.trigger({"stepz": 3})  # the validate task fails on it
    assert response.status_code == 200, response.text
    run_id = response.json()["dag_run_id"]
    assert deployment.wait_run(run_id, 300) == "failed"
    _console(browser)
    report = _open_report_tab(browser, deployment.api, run_id, "No report yet")
    assert "The run failed before its report task ran" in \
        report.find_element("css selector", "body").text
    assert _problems(_console(browser)) == []
