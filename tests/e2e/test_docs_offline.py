"""/docs (Swagger UI) and /redoc work air-gapped: every asset comes from this server."""

from __future__ import annotations

import re

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.browser import (
    browser,
    console_errors,
    hosts_outside,
    network_requests,
    save_screenshot,
    sent_urls,
)
from tests.e2e.server import Server

__all__ = ["browser"]  # the fixture, imported for pytest

RENDER_TIMEOUT_S = 30
ASSET_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


def _referenced_assets(html: str) -> list[str]:
    return ASSET_REFERENCE.findall(html)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_reference_only_local_assets(encoder: Server, page: str) -> None:
    response = httpx.get(f"{encoder.url}{page}")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assets = _referenced_assets(response.text)
    assert any(asset.endswith(".js") for asset in assets)
    for asset in assets:
        assert asset.startswith("/") and not asset.startswith("//"), f"{page} references {asset}"
        fetched = httpx.get(f"{encoder.url}{asset}")
        assert fetched.status_code == 200 and len(fetched.content) > 1000, asset
    assert "openapi.json" in response.text
    for cdn in ("cdn.jsdelivr.net", "fonts.googleapis.com", "unpkg.com", "fastapi.tiangolo.com"):
        assert cdn not in response.text


def test_docs_pages_are_not_part_of_the_api_schema(encoder: Server) -> None:
    document = httpx.get(f"{encoder.url}/openapi.json").json()
    assert not {"/docs", "/redoc", "/", "/playground"} & set(document["paths"])
    # No API keys on this server: nothing to authorize (test_auth checks a server with keys).
    assert "securitySchemes" not in document.get("components", {})


def test_swagger_ui_lists_the_endpoints_offline(browser: WebDriver, encoder: Server) -> None:
    browser.get(f"{encoder.url}/docs")
    WebDriverWait(browser, RENDER_TIMEOUT_S).until(
        lambda driver: driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    )
    listed = {
        element.get_attribute("data-path")
        for element in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    }
    save_screenshot(browser, "docs-swagger-ui")
    assert {"/v1/embeddings", "/v1/models", "/health"} <= listed
    assert browser.find_element(By.CSS_SELECTOR, ".info .title").text.startswith("aios-serve")
    urls = sent_urls(browser)
    assert any(url.endswith("/swagger-ui-bundle.js") for url in urls)
    assert hosts_outside(urls, encoder.url) == set()
    assert console_errors(browser) == []


def test_redoc_renders_offline(browser: WebDriver, encoder: Server) -> None:
    browser.get(f"{encoder.url}/redoc")
    WebDriverWait(browser, RENDER_TIMEOUT_S).until(
        lambda driver: "/v1/embeddings" in driver.find_element(By.TAG_NAME, "body").text
    )
    save_screenshot(browser, "docs-redoc")
    assert "aios-serve" in browser.find_element(By.TAG_NAME, "h1").text
    requests = network_requests(browser)
    urls = [request["url"] for request in requests if request["blocked_reason"] is None]
    assert any(url.endswith("/redoc.standalone.js") for url in urls)
    assert hosts_outside(urls, encoder.url) == set()
    # ReDoc's sidebar logo points at its CDN: the page's policy must stop it in the browser.
    refused = {request["url"] for request in requests if request["blocked_reason"] is not None}
    assert hosts_outside(refused, encoder.url) <= {"cdn.redoc.ly"}
