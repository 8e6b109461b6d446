"""Headless Debian chromium driven by selenium: a helper and a pytest fixture for browser tests.

`make setup` installs /usr/bin/chromium and /usr/bin/chromedriver through apt. Selenium is given
both paths, so it never looks for (or downloads) a browser or a driver of its own.

Use in a test module:

    from tests.e2e.browser import browser, console_errors, outside_hosts, save_screenshot

    __all__ = ["browser"]  # the fixture, imported for pytest

    def test_page(browser: WebDriver, some_url: str) -> None:
        browser.get(some_url)
        save_screenshot(browser, "page")  # artifacts/page.png
        assert outside_hosts(browser, some_url) == set()  # nothing requested from another host
        assert console_errors(browser) == []
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
from selenium.webdriver import Chrome
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS_DIR = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
WINDOW_SIZE = (1280, 860)
NETWORK_SCHEMES = ("http", "https", "ws", "wss", "ftp")


def missing_browser_files() -> list[str]:
    """The chromium files that are not installed (empty when the browser tests can run)."""
    return [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]


@contextlib.contextmanager
def headless_chromium(window_size: tuple[int, int] = WINDOW_SIZE) -> Iterator[WebDriver]:
    """A fresh headless chromium with its own throwaway profile; quit on exit."""
    with tempfile.TemporaryDirectory(prefix="aios-chromium-") as profile:
        options = Options()
        options.binary_location = str(CHROMIUM)
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.add_argument(f"--window-size={window_size[0]},{window_size[1]}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        service = Service(executable_path=str(CHROMEDRIVER))
        driver = Chrome(service=service, options=options)
        try:
            yield driver
        finally:
            driver.quit()


def save_screenshot(driver: WebDriver, name: str) -> Path:
    """Save a PNG of the current page as artifacts/<name>.png and return its path."""
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS_DIR / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
    driver.save_screenshot(str(path))
    return path


def network_requests(driver: WebDriver) -> list[dict[str, Any]]:
    """Requests the page started since the last call: url, method, headers, blocked_reason.

    Read from chromium's DevTools network log, so requests that failed (an unreachable host) are
    listed too; `blocked_reason` is set (e.g. "csp") for those the browser refused to send.
    """
    requests: dict[str, dict[str, Any]] = {}
    blocked: dict[str, str] = {}
    for entry in cast(Chrome, driver).get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.requestWillBeSent":
            requests[params["requestId"]] = dict(params["request"])
        elif message["method"] == "Network.loadingFailed" and params.get("blockedReason"):
            blocked[params["requestId"]] = params["blockedReason"]
    return [
        {**request, "blocked_reason": blocked.get(request_id)} for request_id, request in requests.items()
    ]


def sent_urls(driver: WebDriver) -> list[str]:
    """URLs of the requests that actually left the browser since the last call."""
    return [request["url"] for request in network_requests(driver) if request["blocked_reason"] is None]


def hosts_outside(urls: Iterable[str], base_url: str) -> set[str]:
    """The network hosts among `urls` other than the server's (chrome:, data:, blob: are local)."""
    own = urlsplit(base_url).netloc
    hosts = set()
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme in NETWORK_SCHEMES and parts.netloc != own:
            hosts.add(parts.netloc)
    return hosts


def outside_hosts(driver: WebDriver, base_url: str) -> set[str]:
    """Hosts other than the server's that requests sent since the last network-log read went to."""
    return hosts_outside(sent_urls(driver), base_url)


def console_errors(driver: WebDriver) -> list[str]:
    """The browser console's SEVERE messages since the last call."""
    return [
        entry["message"] for entry in cast(Chrome, driver).get_log("browser") if entry["level"] == "SEVERE"
    ]


@pytest.fixture
def browser(request: pytest.FixtureRequest) -> Iterator[WebDriver]:
    """A headless chromium per test; its last page is saved as artifacts/<test name>-end.png."""
    missing = missing_browser_files()
    if missing:
        pytest.fail(f"chromium is not installed ({', '.join(missing)} missing): run `make setup`")
    with headless_chromium() as driver:
        yield driver
        with contextlib.suppress(Exception):
            save_screenshot(driver, f"{request.node.name}-end")
