"""The usage report page in headless Debian chromium: charts visible, nothing fetched elsewhere."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.e2e.browser import browser, save_screenshot
from tests.e2e.configs import minilm
from tests.e2e.server import Server

__all__ = ["browser"]  # the fixture, used by name

EMBEDDING = "minilm"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A fresh usage store: the page's bars and rows are exactly this module's requests."""
    models = [minilm(EMBEDDING), minilm("minilm-second")]
    with Server(tmp_path_factory.mktemp("report-server"), models) as server:
        yield server


@pytest.fixture(scope="module")
def prompt_tokens(server: Server) -> dict[str, int]:
    """Requests to two models; the prompt tokens each model's responses reported."""
    sums = {EMBEDDING: 0, "minilm-second": 0}
    for model, text in [
        (EMBEDDING, "first"),
        (EMBEDDING, "second call"),
        ("minilm-second", "third one here"),
    ]:
        response = httpx.post(f"{server.url}/v1/embeddings", json={"model": model, "input": text}, timeout=60)
        sums[model] += response.json()["usage"]["prompt_tokens"]
    return sums


def test_report_page_charts_usage_per_model(
    browser: WebDriver, server: Server, prompt_tokens: dict[str, int]
) -> None:
    browser.get(f"{server.url}/usage/report")
    assert browser.title == "aios-serve usage"
    for chart_id in ("calls-chart", "tokens-chart"):
        chart = browser.find_element(By.ID, chart_id)
        assert chart.is_displayed()
        assert chart.size["width"] > 400 and chart.size["height"] > 150
        bars = chart.find_elements(By.CSS_SELECTOR, "rect.bar")
        assert len(bars) == 2, "one bar segment per model in the current hour"
        assert all(bar.is_displayed() and bar.size["height"] > 0 for bar in bars)
        legend = chart.text
        assert EMBEDDING in legend and "minilm-second" in legend
    rows = {
        row.find_elements(By.TAG_NAME, "td")[0].text: [
            cell.text for cell in row.find_elements(By.TAG_NAME, "td")
        ]
        for row in browser.find_elements(By.CSS_SELECTOR, "#by-model tbody tr")
    }
    assert rows[EMBEDDING][1:5] == ["embeddings", "2", "0", str(prompt_tokens[EMBEDDING])]
    assert rows["minilm-second"][1:5] == ["embeddings", "1", "0", str(prompt_tokens["minilm-second"])]
    shot = save_screenshot(browser, "usage-report")
    assert shot.stat().st_size > 10_000
    # The page loads nothing at all besides itself: no script, stylesheet, font or image.
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_report_page_by_day_and_bad_window(server: Server, prompt_tokens: dict[str, int]) -> None:
    page = httpx.get(f"{server.url}/usage/report", params={"hours": 240, "bucket": "day"})
    assert page.status_code == 200 and "Calls per day, by model" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert httpx.get(f"{server.url}/usage/report", params={"hours": 0}).status_code == 400
    assert httpx.get(f"{server.url}/usage/report", params={"bucket": "week"}).status_code == 400
