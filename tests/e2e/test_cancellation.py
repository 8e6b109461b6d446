"""Cancellation against a real server: a client that leaves, or a request past its timeout, frees
the queue. Measured with the scheduler's own count of sequences dropped unrun, read from its log."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.configs import minilm_fp32
from tests.e2e.server import Server

SLOW = "slow-minilm"
SEQUENCES = 120
TEXT = "the quick brown fox jumps over the lazy dog " * 20  # ~180 tokens
REQUEST_TIMEOUT_S = 6


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One sequence per forward pass: a 120-input request takes seconds, so it can be left midway."""
    with Server(
        tmp_path_factory.mktemp("cancellation-server"),
        [minilm_fp32(SLOW, max_batch_tokens=256, max_batch_size=1)],
        limits={"request_timeout_s": REQUEST_TIMEOUT_S},
    ) as server:
        yield server


def dropped_counts(server: Server) -> list[int]:
    return [int(n) for n in re.findall(r"dropped (\d+) of its \d+ queued sequences", server.log_text())]


def test_client_that_disconnects_frees_its_sequences(slow_server: Server) -> None:
    before = len(dropped_counts(slow_server))
    body = {"model": SLOW, "input": [TEXT] * SEQUENCES}
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
        httpx.post(f"{slow_server.url}/v1/embeddings", json=body, timeout=httpx.Timeout(30, read=0.8))
    slow_server.wait_for_log(r"client left POST /v1/embeddings; cancelling its request")
    deadline = time.monotonic() + 10
    while len(dropped_counts(slow_server)) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    dropped = dropped_counts(slow_server)[before:]
    assert len(dropped) == 1
    # Most of the request never ran: a leaving client frees the queue, it is not served anyway.
    assert dropped[0] >= SEQUENCES // 2, dropped
    quick = httpx.post(f"{slow_server.url}/v1/embeddings", json={"model": SLOW, "input": "hi"}, timeout=10)
    assert quick.status_code == 200


def test_request_past_its_timeout_is_504_and_dropped(slow_server: Server) -> None:
    before = len(dropped_counts(slow_server))
    body = {"model": SLOW, "input": [TEXT] * 1000}  # 1000 forward passes: far past the timeout
    started = time.monotonic()
    response = httpx.post(f"{slow_server.url}/v1/embeddings", json=body, timeout=60)
    elapsed = time.monotonic() - started
    assert response.status_code == 504, response.text
    error = response.json()["error"]
    assert error["code"] == 504 and str(REQUEST_TIMEOUT_S) in error["message"]
    assert elapsed < REQUEST_TIMEOUT_S + 5
    dropped = dropped_counts(slow_server)[before:]
    assert len(dropped) == 1 and dropped[0] > 500, dropped


def test_requests_within_the_timeout_are_unaffected(slow_server: Server) -> None:
    response = httpx.post(
        f"{slow_server.url}/v1/embeddings", json={"model": SLOW, "input": ["hi", "there"]}, timeout=30
    )
    assert response.status_code == 200
    assert len(response.json()["data"]) == 2
