"""The browser playground, driven in headless chromium against a real server that needs an API key."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.browser import (
    browser,
    console_errors,
    network_requests,
    outside_hosts,
    save_screenshot,
)
from tests.e2e.configs import MINILM, SMOL, minilm, smol
from tests.e2e.server import Server

__all__ = ["browser"]  # the fixture, imported for pytest

CHAT_MODEL = SMOL
EMBEDDING_MODEL = MINILM
API_KEY = "playground-test-key"
MAX_TOKENS = 32
UI_TIMEOUT_S = 30
CHAT_TIMEOUT_S = 180
ASSET_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


@pytest.fixture(scope="module")
def keyed_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with the bundled chat and embedding models whose API needs API_KEY."""
    with Server(
        tmp_path_factory.mktemp("playground-server"),
        [smol(CHAT_MODEL, n_threads=2), minilm(EMBEDDING_MODEL)],
        api_keys=[{"name": "playground-tester", "key": API_KEY}],
    ) as server:
        yield server.url


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


def _model_options(driver: WebDriver, select_id: str) -> list[str]:
    options = driver.find_elements(By.CSS_SELECTOR, f"#{select_id} option")
    return [value for option in options if (value := option.get_attribute("value"))]


def _open_with_key(driver: WebDriver, base_url: str) -> None:
    driver.get(f"{base_url}/")
    driver.find_element(By.ID, "api-key").send_keys(API_KEY)
    WebDriverWait(driver, UI_TIMEOUT_S).until(lambda d: CHAT_MODEL in _model_options(d, "chat-model"))
    console_errors(driver)  # forget the 401 of the model list loaded before the key was typed


def _set_value(driver: WebDriver, element_id: str, value: str) -> None:
    """Set an input's value the way a user would, firing its `input` event."""
    driver.execute_script(
        "const el = document.getElementById(arguments[0]); el.value = arguments[1];"
        "el.dispatchEvent(new Event('input', {bubbles: true}));",
        element_id,
        value,
    )


def test_page_and_assets_are_served_without_a_key(keyed_url: str) -> None:
    assert httpx.get(f"{keyed_url}/v1/models").status_code == 401
    for page in ("/", "/playground"):
        response = httpx.get(f"{keyed_url}{page}")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assets = ASSET_REFERENCE.findall(response.text)
        assert {"/playground/assets/playground.js", "/playground/assets/playground.css"} <= set(assets)
        for asset in assets:
            assert asset.startswith(("/", "data:")) and not asset.startswith("//"), asset
            if asset.startswith("/"):
                assert httpx.get(f"{keyed_url}{asset}").status_code == 200, asset


def test_api_key_field_unlocks_the_models(browser: WebDriver, keyed_url: str) -> None:
    browser.get(f"{keyed_url}/")
    error = browser.find_element(By.ID, "global-error")
    WebDriverWait(browser, UI_TIMEOUT_S).until(lambda _: error.is_displayed())
    assert "401" in error.text and "API key" in error.text
    assert _model_options(browser, "chat-model") == []
    save_screenshot(browser, "playground-without-key")
    network_requests(browser)  # forget the requests made so far

    browser.find_element(By.ID, "api-key").send_keys(API_KEY)
    WebDriverWait(browser, UI_TIMEOUT_S).until(lambda d: CHAT_MODEL in _model_options(d, "chat-model"))
    assert not error.is_displayed()
    assert _model_options(browser, "embed-model") == [EMBEDDING_MODEL]
    assert _model_options(browser, "rerank-model") == [EMBEDDING_MODEL]
    model_requests = [r for r in network_requests(browser) if r["url"].endswith("/v1/models")]
    assert model_requests and model_requests[-1]["headers"]["Authorization"] == f"Bearer {API_KEY}"


def test_chat_model_capabilities_are_shown(browser: WebDriver, keyed_url: str) -> None:
    """The chosen chat model's capabilities, as /v1/models lists them (SmolLM2: no `tools`)."""
    _open_with_key(browser, keyed_url)
    cards = httpx.get(f"{keyed_url}/v1/models", headers=_auth()).json()["data"]
    listed = next(card["capabilities"] for card in cards if card["id"] == CHAT_MODEL)
    badges = browser.find_elements(By.CSS_SELECTOR, "#chat-capabilities .badge")
    save_screenshot(browser, "playground-capabilities")
    assert [badge.text for badge in badges] == listed == ["completions", "chat"]


def test_chat_streams_an_answer_with_usage(browser: WebDriver, keyed_url: str) -> None:
    _open_with_key(browser, keyed_url)
    browser.find_element(By.ID, "chat-system").send_keys("You are a friendly poet.")
    _set_value(browser, "chat-temperature", "0")
    _set_value(browser, "chat-max-tokens", str(MAX_TOKENS))
    # Record every length the answer takes on the page: a streamed answer grows in steps.
    browser.execute_script(
        "window.answerLengths = [];"
        "new MutationObserver(() => {"
        "  const answers = document.querySelectorAll('#chat-log .message.assistant .content');"
        "  if (answers.length) window.answerLengths.push(answers[answers.length - 1].textContent.length);"
        "}).observe(document.getElementById('chat-log'),"
        "           {subtree: true, childList: true, characterData: true});"
    )
    network_requests(browser)
    browser.find_element(By.ID, "chat-input").send_keys("Write a short poem about the sea.", Keys.ENTER)

    WebDriverWait(browser, CHAT_TIMEOUT_S).until(
        lambda d: (
            d.find_elements(By.CSS_SELECTOR, "#chat-log .message.assistant[data-state='done']")
            or d.find_element(By.ID, "chat-error").is_displayed()
        )
    )
    save_screenshot(browser, "playground-chat")
    assert not browser.find_element(By.ID, "chat-error").is_displayed(), browser.find_element(
        By.ID, "chat-error"
    ).text
    answer = browser.find_element(By.CSS_SELECTOR, "#chat-log .message.assistant .content").text
    assert answer.strip()
    lengths = {length for length in browser.execute_script("return window.answerLengths;") if length}
    assert len(lengths) >= 2, f"the answer did not stream in: {lengths}"

    stats = {
        name: browser.find_element(By.ID, f"stat-{name}").text
        for name in ("prompt", "completion", "total", "tps", "ttft", "finish")
    }
    prompt, completion = int(stats["prompt"]), int(stats["completion"])
    assert prompt > 0 and 1 <= completion <= MAX_TOKENS
    assert int(stats["total"]) == prompt + completion
    assert float(stats["tps"]) > 0 and stats["ttft"].endswith(" s")
    assert stats["finish"] in {"stop", "length"}

    sent = [r for r in network_requests(browser) if r["url"].endswith("/v1/chat/completions")]
    assert len(sent) == 1 and sent[0]["headers"]["Authorization"] == f"Bearer {API_KEY}"
    body = json.loads(sent[0]["postData"])
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0 and body["max_tokens"] == MAX_TOKENS
    assert body["messages"][0] == {"role": "system", "content": "You are a friendly poet."}
    assert console_errors(browser) == []


def test_rerank_sorts_pasted_documents(browser: WebDriver, keyed_url: str) -> None:
    _open_with_key(browser, keyed_url)
    browser.find_element(By.ID, "tab-rerank").click()
    query = "Which city is the capital of France?"
    documents = [
        "Bananas are rich in potassium.",
        "Berlin is the capital of Germany.",
        "Paris is the capital and largest city of France.",
    ]
    _set_value(browser, "rerank-query", query)
    _set_value(browser, "rerank-documents", "\n".join(documents) + "\n\n")
    browser.find_element(By.ID, "rerank-run").click()
    WebDriverWait(browser, UI_TIMEOUT_S).until(
        lambda d: (
            d.find_elements(By.CSS_SELECTOR, "#rerank-rows tr")
            or d.find_element(By.ID, "rerank-error").is_displayed()
        )
    )
    save_screenshot(browser, "playground-rerank")
    rows = [
        [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        for row in browser.find_elements(By.CSS_SELECTOR, "#rerank-rows tr")
    ]
    expected = httpx.post(
        f"{keyed_url}/rerank",
        json={"model": EMBEDDING_MODEL, "query": query, "documents": documents},
        headers=_auth(),
    ).json()["results"]
    assert [(int(index), text) for _, _, index, text in rows] == [
        (result["index"], result["document"]["text"]) for result in expected
    ]
    assert [float(score) for _, score, _, _ in rows] == [
        pytest.approx(result["relevance_score"], abs=1e-4) for result in expected
    ]
    assert rows[0][3] == documents[2]


def test_embeddings_tab_shows_the_cosine_similarity(browser: WebDriver, keyed_url: str) -> None:
    _open_with_key(browser, keyed_url)
    browser.find_element(By.ID, "tab-embeddings").click()
    texts = ["A man is playing a guitar.", "Someone plays music on a stringed instrument."]
    _set_value(browser, "embed-a", texts[0])
    _set_value(browser, "embed-b", texts[1])
    browser.find_element(By.ID, "embed-run").click()
    score = browser.find_element(By.ID, "embed-score")
    WebDriverWait(browser, UI_TIMEOUT_S).until(lambda _: score.is_displayed() and score.text)
    save_screenshot(browser, "playground-embeddings")
    data = httpx.post(
        f"{keyed_url}/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": texts}, headers=_auth()
    ).json()["data"]
    first, second = (item["embedding"] for item in sorted(data, key=lambda item: item["index"]))
    cosine = sum(a * b for a, b in zip(first, second, strict=True)) / math.sqrt(
        sum(a * a for a in first) * sum(b * b for b in second)
    )
    assert float(score.text) == pytest.approx(cosine, abs=1e-4)
    assert "384 dimensions" in browser.find_element(By.ID, "embed-meta").text
    assert outside_hosts(browser, keyed_url) == set()
