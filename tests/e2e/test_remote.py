"""Remote models: a third aios-serve proxies to two aios-serve upstreams over HTTP. Answers and
streams match the upstream's own, usage and metrics count proxied calls, /tokenize is relayed,
clients that leave early leave nothing in flight, and killing one upstream mid-load fails no
request after the ejection window; a restarted upstream is re-admitted."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import orjson
import pytest

from tests.e2e.configs import SMOL, SMOL_EMBEDDING, minilm, remote
from tests.e2e.server import Server, free_port, scrape, value
from tests.e2e.slow_upstream import SlowUpstream

EMBEDDING = SMOL_EMBEDDING
CHAT = SMOL
REMOTE_EMBEDDING = "remote-minilm"
NOWHERE = "remote-nowhere"
SLOW = "remote-slow-to-start"
EARLY_LEAVERS = 4
FAST_HEALTH = {"health_interval_s": 0.3, "health_timeout_s": 1.0, "unhealthy_after": 1, "healthy_after": 2}
# Checks every 0.3 s, ejected on the first failure; a refused connection ejects at once.
EJECTION_WINDOW_S = 1.5


@pytest.fixture(scope="module")
def upstream_a(smol_openvino: Server) -> str:
    """The shared SmolLM2 server (OpenVINO, what `auto` picks) with its embedding model."""
    return smol_openvino.url


@pytest.fixture(scope="module")
def upstream_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The embedding model alone; killed and started again (at the same URL) by the last test."""
    with Server(tmp_path_factory.mktemp("upstream-b"), [minilm(EMBEDDING)]) as server:
        yield server


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[SlowUpstream]:
    with SlowUpstream().serving() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory,
    upstream_a: str,
    upstream_b: Server,
    slow_upstream: SlowUpstream,
) -> Iterator[str]:
    models = [
        remote(
            REMOTE_EMBEDDING,
            ["embeddings", "rerank", "score"],
            [{"url": upstream_a, "model": EMBEDDING}, {"url": f"{upstream_b.url}/v1", "model": EMBEDDING}],
            **FAST_HEALTH,
        ),
        remote(CHAT, ["completions", "chat"], [{"url": upstream_a}]),
        remote(NOWHERE, ["embeddings"], [{"url": f"http://127.0.0.1:{free_port()}"}], **FAST_HEALTH),
        remote(SLOW, ["chat"], [{"url": slow_upstream.url}]),
    ]
    with Server(tmp_path_factory.mktemp("proxy"), models) as server:
        yield server.url


def _client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_embeddings_rerank_and_score_match_the_upstream(upstream_a: str, proxy: str) -> None:
    texts = ["a proxy forwards requests", "to its upstream servers"]
    direct = _client(upstream_a).embeddings.create(model=EMBEDDING, input=texts)
    proxied = _client(proxy).embeddings.create(model=REMOTE_EMBEDDING, input=texts)
    assert np.allclose([d.embedding for d in proxied.data], [d.embedding for d in direct.data], atol=1e-5)
    assert proxied.usage.prompt_tokens == direct.usage.prompt_tokens > 0
    rerank = {"query": "what forwards requests?", "documents": ["a proxy", "a banana", "a router"]}
    score = {"text_1": "proxy", "text_2": ["gateway", "fruit"]}
    for path, body in (("/v1/rerank", rerank), ("/v1/score", score)):
        want = httpx.post(upstream_a + path, json={"model": EMBEDDING, **body}, timeout=60).json()
        got = httpx.post(proxy + path, json={"model": REMOTE_EMBEDDING, **body}, timeout=60).json()
        key = "results" if path == "/v1/rerank" else "data"
        assert [(r["index"], round(r.get("relevance_score", r.get("score")), 5)) for r in got[key]] == [
            (r["index"], round(r.get("relevance_score", r.get("score")), 5)) for r in want[key]
        ]
        assert got["usage"] == want["usage"]


def _stream_chunks(base_url: str, body: dict[str, Any]) -> list[Any]:
    """The stream's events, each chunk without the fields unique to one response."""
    events: list[Any] = []
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                continue
            assert line.startswith("data: ")
            payload = line.removeprefix("data: ")
            if payload == "[DONE]":
                events.append(payload)
                continue
            chunk = orjson.loads(payload)
            for unique in ("id", "created"):
                chunk.pop(unique, None)
            events.append(chunk)
    return events


@pytest.mark.parametrize("include_usage", [True, False])
def test_streaming_through_the_proxy_matches_direct_streaming(
    upstream_a: str, proxy: str, include_usage: bool
) -> None:
    body: dict[str, Any] = {
        "model": CHAT,
        "messages": [{"role": "user", "content": "Name three colours."}],
        "temperature": 0,
        "max_tokens": 12,
        "stream": True,
    }
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    direct = _stream_chunks(upstream_a, body)
    proxied = _stream_chunks(proxy, body)
    assert proxied == direct
    assert direct[-1] == "[DONE]" and len(direct) > 4
    has_usage_chunk = any(isinstance(e, dict) and e.get("choices") == [] for e in proxied)
    assert has_usage_chunk == include_usage


def test_completions_and_usage_report_and_metrics_count_proxied_calls(upstream_a: str, proxy: str) -> None:
    direct = _client(upstream_a).completions.create(
        model=CHAT, prompt="One, two,", max_tokens=5, temperature=0
    )
    proxied = _client(proxy).completions.create(model=CHAT, prompt="One, two,", max_tokens=5, temperature=0)
    assert proxied.choices[0].text == direct.choices[0].text
    assert proxied.usage == direct.usage
    stream = _client(proxy).chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    rows = httpx.get(f"{proxy}/v1/usage", params={"group_by": "model,api"}, timeout=30).json()["data"]
    by_key = {(row["model"], row["api"]): row for row in rows}
    completions = by_key[(CHAT, "completions")]
    assert completions["prompt_tokens"] >= direct.usage.prompt_tokens
    assert completions["completion_tokens"] >= direct.usage.completion_tokens
    # The stream carried no usage for the client, but the proxy still counted its tokens.
    assert by_key[(CHAT, "chat")]["completion_tokens"] > 0
    metrics = httpx.get(f"{proxy}/metrics", timeout=30).text
    assert f'model="{CHAT}"' in metrics and 'endpoint="/v1/completions"' in metrics


def test_errors_pass_through_and_dead_upstreams_answer_503(upstream_a: str, proxy: str) -> None:
    bad = {"input": ""}
    want = httpx.post(f"{upstream_a}/v1/embeddings", json={"model": EMBEDDING, **bad}, timeout=30)
    got = httpx.post(f"{proxy}/v1/embeddings", json={"model": REMOTE_EMBEDDING, **bad}, timeout=30)
    assert got.status_code == want.status_code == 400
    assert got.json() == want.json()
    with pytest.raises(openai.BadRequestError):  # a remote model asked for a task it was not given
        _client(proxy).embeddings.create(model=CHAT, input="x")
    with pytest.raises(openai.NotFoundError):
        _client(proxy).embeddings.create(model="no-such-model", input="x")
    dead = httpx.post(f"{proxy}/v1/embeddings", json={"model": NOWHERE, "input": "x"}, timeout=30)
    assert dead.status_code == 503 and "Retry-After" in dead.headers
    assert dead.json()["error"]["code"] == 503


def test_tokenize_and_detokenize_are_relayed_to_the_upstream(upstream_a: str, proxy: str) -> None:
    prompt: dict[str, Any] = {
        "model": CHAT,
        "prompt": "Tokens come from the upstream.",
        "return_token_strs": True,
    }
    chat: dict[str, Any] = {"model": CHAT, "messages": [{"role": "user", "content": "Hi there"}]}
    for body in (prompt, chat):
        want = httpx.post(f"{upstream_a}/tokenize", json=body, timeout=30)
        got = httpx.post(f"{proxy}/tokenize", json=body, timeout=30)
        assert got.status_code == want.status_code == 200
        assert got.json() == want.json() and want.json()["count"] > 0
    tokens = httpx.post(f"{upstream_a}/tokenize", json=prompt, timeout=30).json()["tokens"]
    for body in ({"model": CHAT, "tokens": tokens}, {"model": CHAT, "tokens": [10**9]}):
        want = httpx.post(f"{upstream_a}/detokenize", json=body, timeout=30)
        got = httpx.post(f"{proxy}/detokenize", json=body, timeout=30)
        assert (got.status_code, got.json()) == (want.status_code, want.json())
    assert got.status_code == 400  # the upstream's own refusal of an unknown token id, passed on
    text = httpx.post(f"{proxy}/detokenize", json={"model": CHAT, "tokens": tokens}, timeout=30).json()
    assert "Tokens come from the upstream." in text["prompt"]
    not_generative = httpx.post(f"{proxy}/tokenize", json={"model": REMOTE_EMBEDDING, "prompt": "x"})
    assert not_generative.status_code == 400 and not_generative.json()["error"]["param"] == "model"


async def _in_flight(proxy: str, model: str) -> float:
    """What /metrics reports as the remote model's requests in flight at its upstreams."""
    return value(await asyncio.to_thread(scrape, proxy), "vllm:num_requests_running", model_name=model)


async def _wait_for_stream(proxy: str, body: dict[str, Any]) -> None:
    async with (
        httpx.AsyncClient(timeout=120) as client,
        client.stream("POST", f"{proxy}/v1/chat/completions", json=body) as response,
    ):
        raise AssertionError(f"the upstream is held, yet an answer began: {response.status_code}")


async def test_clients_that_leave_before_the_stream_starts_leave_nothing_in_flight(
    proxy: str, slow_upstream: SlowUpstream
) -> None:
    body = {"model": SLOW, "messages": [{"role": "user", "content": "Anyone there?"}], "stream": True}
    clients = [asyncio.create_task(_wait_for_stream(proxy, body)) for _ in range(EARLY_LEAVERS)]
    await asyncio.to_thread(slow_upstream.wait_for_arrivals, EARLY_LEAVERS)
    assert await _in_flight(proxy, SLOW) == EARLY_LEAVERS
    for client in clients:  # each hangs up while the proxy still waits for the upstream's headers
        client.cancel()
    await asyncio.gather(*clients, return_exceptions=True)
    deadline = time.monotonic() + 10
    while (left := await _in_flight(proxy, SLOW)) != 0:
        assert time.monotonic() < deadline, f"{left:g} requests of clients long gone still in flight"
        await asyncio.sleep(0.1)
    slow_upstream.release.set()  # the upstream answers again: a client that stays gets its stream
    chunks = _stream_chunks(proxy, body)
    assert chunks[-1] == "[DONE]" and chunks[0]["choices"][0]["delta"]["content"] == "late"
    assert await _in_flight(proxy, SLOW) == 0


def _embedding_requests_seen(upstream_url: str) -> float:
    text = httpx.get(f"{upstream_url}/metrics", timeout=30).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("aios_serve_http_requests_total{") and 'endpoint="/v1/embeddings"' in line
    )


def _load(proxy: str, stop: threading.Event, outcomes: list[tuple[float, int]]) -> None:
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                status = client.post(
                    f"{proxy}/v1/embeddings", json={"model": REMOTE_EMBEDDING, "input": ["keep going"] * 4}
                ).status_code
            except httpx.HTTPError:
                status = -1
            outcomes.append((started, status))


def test_killing_one_upstream_mid_load_fails_nothing_after_the_ejection_window(
    proxy: str, upstream_b: Server
) -> None:
    """Runs last in this module: it kills upstream B, then starts it again to see it re-admitted."""
    outcomes: list[tuple[float, int]] = []
    stop = threading.Event()
    workers = [threading.Thread(target=_load, args=(proxy, stop, outcomes)) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(2.0)
        assert _embedding_requests_seen(upstream_b.url) > 0, "both upstreams take load"
        killed_at = time.monotonic()
        upstream_b.kill()
        time.sleep(EJECTION_WINDOW_S + 3.0)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    after_window = [status for started, status in outcomes if started > killed_at + EJECTION_WINDOW_S]
    assert len(after_window) > 10
    assert set(after_window) == {200}
    before_kill = [status for started, status in outcomes if started < killed_at]
    assert before_kill and set(before_kill) <= {200, 502}

    upstream_b.start()  # same URL: the health checks re-admit it
    deadline = time.monotonic() + 30
    while _embedding_requests_seen(upstream_b.url) == 0 and time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(
                f"{proxy}/v1/embeddings", json={"model": REMOTE_EMBEDDING, "input": "back"}, timeout=30
            )
    assert _embedding_requests_seen(upstream_b.url) > 0
