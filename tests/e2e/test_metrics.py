"""/metrics: Prometheus text through prometheus-client, vLLM's names; the counters move. On the
shared SmolLM2 server of `engine: auto` (OpenVINO): every check compares scrapes before and after
its own requests."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.e2e.configs import SMOL, SMOL_EMBEDDING
from tests.e2e.server import Server, scrape, value

EMBEDDING = SMOL_EMBEDDING
GENERATION = SMOL


def test_embedding_requests_move_the_counters(smol_openvino: Server) -> None:
    client = smol_openvino.client(timeout=120)
    before = scrape(smol_openvino.url)
    usages = [client.embeddings.create(model=EMBEDDING, input=text).usage for text in ("one", "two words")]
    after = scrape(smol_openvino.url)
    requests = "aios_serve_http_requests_total"
    labels = {"endpoint": "/v1/embeddings", "model": EMBEDDING, "status": "200"}
    assert value(after, requests, **labels) - value(before, requests, **labels) == 2
    prompt = sum(u.prompt_tokens for u in usages)
    tokens = "vllm:prompt_tokens_total"
    assert value(after, tokens, model_name=EMBEDDING) - value(before, tokens, model_name=EMBEDDING) == prompt
    latency = "vllm:e2e_request_latency_seconds_count"
    assert value(after, latency, model_name=EMBEDDING) - value(before, latency, model_name=EMBEDDING) == 2
    http_latency = "aios_serve_http_request_duration_seconds_count"
    assert (
        value(after, http_latency, endpoint="/v1/embeddings")
        - value(before, http_latency, endpoint="/v1/embeddings")
        == 2
    )


def test_errors_are_counted_by_status(smol_openvino: Server) -> None:
    client = smol_openvino.client(timeout=120)
    before = scrape(smol_openvino.url)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=EMBEDDING, input="x", dimensions=3)
    after = scrape(smol_openvino.url)
    name = "aios_serve_http_requests_total"
    not_found = {"endpoint": "/v1/embeddings", "model": "", "status": "404"}
    bad = {"endpoint": "/v1/embeddings", "model": EMBEDDING, "status": "400"}
    assert value(after, name, **not_found) - value(before, name, **not_found) == 1
    assert value(after, name, **bad) - value(before, name, **bad) == 1


def test_streamed_generation_moves_tokens_and_time_to_first_token(smol_openvino: Server) -> None:
    client = smol_openvino.client(timeout=120)
    before = scrape(smol_openvino.url)
    stream = client.chat.completions.create(
        model=GENERATION,
        messages=[{"role": "user", "content": "Count to three"}],
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [chunk.usage for chunk in stream if chunk.usage is not None][-1]
    after = scrape(smol_openvino.url)

    def moved(name: str) -> float:
        return value(after, name, model_name=GENERATION) - value(before, name, model_name=GENERATION)

    assert moved("vllm:time_to_first_token_seconds_count") == 1
    assert 0 < moved("vllm:time_to_first_token_seconds_sum") <= moved("vllm:e2e_request_latency_seconds_sum")
    assert moved("vllm:generation_tokens_total") == usage.completion_tokens > 0
    assert moved("vllm:prompt_tokens_total") == usage.prompt_tokens > 0
    assert moved("vllm:request_generation_tokens_sum") == usage.completion_tokens
    assert moved("vllm:request_prompt_tokens_count") == 1


def test_engine_gauges_are_exposed(smol_openvino: Server) -> None:
    text = httpx.get(f"{smol_openvino.url}/metrics").text
    samples = scrape(smol_openvino.url)
    assert (("vllm:num_requests_waiting", frozenset({("model_name", EMBEDDING)}))) in samples
    assert (("aios_serve_batch_size", frozenset({("model_name", EMBEDDING)}))) in samples
    for family in (
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
        "vllm:time_to_first_token_seconds",
        "aios_serve_usage_records_dropped",
    ):
        assert f"# TYPE {family} " in text
    assert value(samples, "aios_serve_http_requests_in_progress") == 1  # the scrape itself


def test_a_stream_the_client_leaves_is_counted_as_499(smol_openvino: Server) -> None:
    """The response never ends; the request is still counted once, when the app gives up on it."""
    labels = {"endpoint": "/v1/chat/completions", "model": GENERATION, "status": "499"}
    before = value(scrape(smol_openvino.url), "aios_serve_http_requests_total", **labels)
    body = {
        "model": GENERATION,
        "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
        "max_tokens": 400,
        "stream": True,
    }
    with httpx.stream("POST", f"{smol_openvino.url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        next(response.iter_lines())  # the first chunk, then hang up
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if value(scrape(smol_openvino.url), "aios_serve_http_requests_total", **labels) == before + 1:
            return
        time.sleep(0.2)
    raise AssertionError("the abandoned stream was not counted with status 499")


def test_the_generation_engine_reports_running_requests_and_kv_cache_use(smol_openvino: Server) -> None:
    """While a stream is generating, its sequence is running and holds KV cells; after, none."""
    body = {
        "model": GENERATION,
        "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
        "max_tokens": 200,
        "temperature": 0,
        "stream": True,
    }
    labels = {"model_name": GENERATION}
    with httpx.stream("POST", f"{smol_openvino.url}/v1/chat/completions", json=body, timeout=120) as response:
        lines = response.iter_lines()
        for _ in range(4):
            next(lines)
        during = scrape(smol_openvino.url)
        assert value(during, "vllm:num_requests_running", **labels) == 1
        assert 0 < value(during, "vllm:kv_cache_usage_perc", **labels) < 1
        assert value(during, "aios_serve_batch_size", **labels) >= 1
        for _ in lines:
            pass
    deadline = time.monotonic() + 10
    while value(scrape(smol_openvino.url), "vllm:num_requests_running", **labels) != 0:
        assert time.monotonic() < deadline, "the finished request still counts as running"
        time.sleep(0.1)
