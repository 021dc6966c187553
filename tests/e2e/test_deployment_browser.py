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


def _click_button(driver, label: str) -> None:
    buttons = [b for b in driver.find_elements("tag name", "button")
               if b.text.strip() == label and b.is_displayed()]
    assert buttons, f"no {label!r} button on {driver.current_url}"
    buttons[-1].click()


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


def test_report_tab_shows_the_report(deployment, browser, tmp_path):
    runs = deployment.get("/api/v2/dags/forgeline_end_to_end/dagRuns",
                          state=["success"])["dag_runs"]
    if not runs:
        pytest.skip("no successful run in this deployment (run test_deployment.py first)")
    run_id = runs[-1]["dag_run_id"]
    browser.get(f"{deployment.api}/dags/forgeline_end_to_end/runs/{run_id}/plugin/"
                "forgeline-report")
    deadline = time.monotonic() + 90
    while not browser.find_elements("tag name", "iframe") and time.monotonic() < deadline:
        time.sleep(1)
    frames = browser.find_elements("tag name", "iframe")
    assert frames, "no report frame"
    source = frames[0].get_attribute("src")
    assert "/forgeline/dags/forgeline_end_to_end/runs/" in source, source
    browser.switch_to.frame(frames[0])
    _wait_text(browser, "Artifacts")
    body = browser.find_element("tag name", "body").text
    browser.switch_to.default_content()
    browser.save_screenshot(str(tmp_path / "report-tab.png"))
    assert "perplexity" in body.lower() and "quantize" in body.lower()
    # Airflow's own plugin iframe asks for allow-scripts + allow-same-origin, which Chromium
    # warns about; the report itself has no scripts. Anything else from the page is a defect.
    problems = [entry for entry in browser.get_log("browser")
                if entry.get("level") in ("SEVERE", "WARNING")
                and "allow-same-origin" not in entry.get("message", "")
                and "/forgeline/" in entry.get("message", "")]
    assert problems == [], problems
