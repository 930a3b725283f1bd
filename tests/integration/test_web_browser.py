"""The dashboard in a real browser: Debian's headless Chromium (/usr/bin/chromium, driven
by Selenium through Debian's chromedriver; nothing is downloaded) on a phone-sized
screen, against a history written by real `phobos run` processes. Each test checks what
a person sees and saves a screenshot under the test run's temporary directory.

A missing Chromium fails these tests: install Debian's `chromium` and `chromium-driver`
(scripts/setup does).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from test_web import (
    SECRET,
    Server,
    fill,
    get,
    interrupt,
    start_server,
    wait_for_output,
    write_config,
)
from test_web import filled as filled  # the module-scoped fixtures
from test_web import server as server
from test_web_token import TOKEN, with_token

from conftest import Sandbox

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")
PHONE = {"width": 390, "height": 844, "pixelRatio": 2.0}
RED = "rgb(216, 56, 58)"
GREEN = "rgb(63, 155, 74)"


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("screenshots")
    print(f"screenshots in {path}")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: apt-get install chromium"
    assert CHROMEDRIVER.is_file(), f"{CHROMEDRIVER} is missing: apt-get install chromium-driver"
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch anything
    profile = tempfile.mkdtemp(prefix="phobos-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.add_experimental_option("mobileEmulation", {"deviceMetrics": PHONE})
    driver = webdriver.Chrome(options=options,
                              service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(check: Callable[[], Any], seconds: float = 15, what: str = "") -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            value = check()
        except Exception:
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        time.sleep(0.1)


def visible_text(driver: WebDriver) -> str:
    text: str = driver.find_element(By.TAG_NAME, "body").text
    return text


def colour(driver: WebDriver, css: str) -> str:
    element = driver.find_element(By.CSS_SELECTOR, css)
    value: str = driver.execute_script(
        "return getComputedStyle(arguments[0]).backgroundColor", element)
    return value


def box(driver: WebDriver, css: str) -> dict[str, float]:
    rect: dict[str, float] = driver.execute_script(
        "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
        "return {width: r.width, height: r.height, top: r.top, left: r.left};", css)
    return rect


def fits_the_screen(driver: WebDriver) -> None:
    """The page itself never scrolls sideways (wide pictures scroll inside their box)."""
    width, inner = driver.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]")
    assert inner == PHONE["width"]
    assert width <= inner, f"page is {width}px wide on a {inner}px screen"


def shoot(driver: WebDriver, shots: Path, name: str) -> Path:
    path = shots / f"{name}.png"
    height = driver.execute_script("return document.documentElement.scrollHeight")
    # Full-page: grow the emulated screen to the page's height for the picture.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": PHONE["width"], "height": min(int(height), 4000),
        "deviceScaleFactor": PHONE["pixelRatio"], "mobile": True})
    try:
        assert driver.save_screenshot(str(path))
    finally:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": PHONE["width"], "height": PHONE["height"],
            "deviceScaleFactor": PHONE["pixelRatio"], "mobile": True})
    assert path.stat().st_size > 5000
    return path


def test_overview(browser: WebDriver, server: Server, shots: Path) -> None:
    browser.get(server.url + "/")
    text = visible_text(browser)
    for job in ("nightly", "pull-luv", "offsite"):
        assert job in text
    assert "LED red: nightly failed at" in text
    # The LED dot: red, and big enough to see.
    assert colour(browser, "#led") == RED
    led = box(browser, "#led")
    assert led["width"] >= 15 and led["height"] >= 15
    assert colour(browser, 'tr[data-job="nightly"] .dot') == RED
    assert colour(browser, 'tr[data-job="pull-luv"] .dot') == GREEN
    assert "disk <full> & broken" in text  # the failure, as text
    assert "ext-b" in text and "due next" in text and "never synced" in text
    fits_the_screen(browser)
    shoot(browser, shots, "overview")


def test_timeline(browser: WebDriver, server: Server, shots: Path) -> None:
    browser.get(server.url + "/timeline")
    schedule = box(browser, "#schedule svg")
    assert schedule["width"] >= 300 and schedule["height"] >= 60, schedule
    slots = browser.find_elements(By.CSS_SELECTOR, "#schedule svg rect.run")
    assert len(slots) >= 2
    assert all(s.rect["width"] > 0 and s.rect["height"] > 0 for s in slots)
    week = box(browser, "#week svg")
    assert week["width"] >= 300 and week["height"] >= 40, week
    assert len(browser.find_elements(By.CSS_SELECTOR, "#week svg g.run")) == 3
    text = visible_text(browser)
    assert "Next 24 hours" in text and "Past week" in text and "waits 1m for nightly" in text
    fits_the_screen(browser)
    shoot(browser, shots, "timeline")


def test_job_page(browser: WebDriver, server: Server, shots: Path) -> None:
    browser.get(server.url + "/jobs/pull-luv")
    text = visible_text(browser)
    assert "pull-luv" in text and "Durations" in text and "storage (write)" in text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#runs tr.run")) == 2
    chart = box(browser, "#durations svg")
    assert chart["width"] >= 300 and chart["height"] >= 100
    bars = browser.find_elements(By.CSS_SELECTOR, "#durations svg a rect")
    assert len(bars) >= 2 and all(b.rect["height"] > 0 for b in bars)
    fits_the_screen(browser)
    shoot(browser, shots, "job")


def test_run_page(browser: WebDriver, server: Server, shots: Path) -> None:
    browser.get(server.url + "/jobs/nightly")
    browser.find_element(By.CSS_SELECTOR, "#runs tr.run a").click()
    wait_for(lambda: "/runs/" in browser.current_url, what="the run page")
    text = visible_text(browser)
    assert "Run 1 of nightly" in text
    assert "failed (exit 1)" in text
    log = browser.find_element(By.ID, "log").text
    assert "archiving /home" in log and "disk <full> & broken" in log
    stderr = browser.find_element(By.CSS_SELECTOR, "#log .stderr")
    assert stderr.value_of_css_property("color") != browser.find_element(
        By.CSS_SELECTOR, "#log .phobos").value_of_css_property("color")
    fits_the_screen(browser)
    shoot(browser, shots, "run")
    browser.get(server.url + "/runs/2")
    assert SECRET not in browser.page_source and "token=" in visible_text(browser)


def test_drives_page(browser: WebDriver, server: Server, shots: Path) -> None:
    browser.get(server.url + "/drives")
    text = visible_text(browser)
    assert "ext-a" in text and "ext-b" in text and "due next" in text
    assert colour(browser, '.drive[data-drive="ext-b"] .dot') == RED  # never synced
    assert colour(browser, '.drive[data-drive="ext-a"] .dot') == GREEN
    fits_the_screen(browser)
    shoot(browser, shots, "drives")


def test_the_token_link_logs_the_browser_in(browser: WebDriver, tmp_path: Path,
                                            shots: Path) -> None:
    sandbox = Sandbox(root=tmp_path, config=tmp_path / "phobos.toml")
    with_token(sandbox)
    fill(sandbox)
    guarded = start_server(sandbox)
    try:
        browser.get(guarded.url + "/timeline")
        assert "needs its token" in visible_text(browser)
        browser.get(f"{guarded.url}/?token={TOKEN}")
        assert browser.current_url == guarded.url + "/"  # the token left the address bar
        assert "nightly" in visible_text(browser)
        browser.get(guarded.url + "/timeline")
        assert "Next 24 hours" in visible_text(browser)
    finally:
        guarded.stop()
        browser.delete_all_cookies()


def test_the_overview_reloads_itself_while_a_job_runs(browser: WebDriver, tmp_path: Path,
                                                      shots: Path) -> None:
    sandbox = Sandbox(root=tmp_path, config=tmp_path / "phobos.toml")
    write_config(sandbox)
    sandbox.config.write_text(sandbox.config.read_text().replace("sleep 0.3", "sleep 60"))
    guarded = start_server(sandbox)
    job = sandbox.start("run", "pull-luv")
    try:
        wait_for(lambda: 'data-state="running"' in get(guarded.url + "/").body, 20,
                 "the run to start")
        browser.get(guarded.url + "/")
        row = browser.find_element(By.CSS_SELECTOR, 'tr[data-job="pull-luv"]')
        assert row.get_attribute("data-state") == "running"
        assert colour(browser, 'tr[data-job="pull-luv"] .dot') == "rgb(47, 111, 214)"
        note = browser.find_element(By.CSS_SELECTOR, "#running").text
        assert note.startswith("Running now:"), note
        assert browser.find_element(
            By.CSS_SELECTOR, '#running .running[data-job="pull-luv"]').is_displayed()
        shoot(browser, shots, "running")
        browser.execute_script("window.phobosMarker = 1")
        wait_for(lambda: browser.execute_script("return window.phobosMarker") is None, 10,
                 "the page to reload itself")
        wait_for_output(guarded.url, "pull-luv", "pulled")
        interrupt(job)
        wait_for(lambda: browser.find_element(
            By.CSS_SELECTOR, 'tr[data-job="pull-luv"]').get_attribute("data-state")
            == "interrupted", 12, "the reloaded page to show the outcome")
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
        guarded.stop()
