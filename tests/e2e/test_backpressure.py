"""Back-pressure against a real server: a full model queue answers 503 with Retry-After, never hangs."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np

from tests.e2e.configs import EMBEDDING, QUEUED, auth
from tests.e2e.server import Server

TEXTS = [f"request {i}: " + "the quick brown fox jumps over the lazy dog " * 12 for i in range(12)]


def test_full_queue_answers_503_and_served_requests_are_correct(guarded: Server) -> None:
    async def one(client: httpx.AsyncClient, text: str) -> httpx.Response:
        # QUEUED runs one sequence per forward pass and queues two requests at most.
        return await client.post("/v1/embeddings", json={"model": QUEUED, "input": [text] * 24})

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=guarded.url, headers=auth(), timeout=120) as client:
            return await asyncio.gather(*(one(client, text) for text in TEXTS))

    responses = asyncio.run(burst())
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) >= 1 and statuses.count(200) >= 1, statuses
    for text, response in zip(TEXTS, responses, strict=True):
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) >= 1
            error = response.json()["error"]
            assert error["code"] == 503 and error["type"] == "ServiceUnavailableError"
            continue
        reference = httpx.post(
            f"{guarded.url}/v1/embeddings", json={"model": EMBEDDING, "input": text}, headers=auth()
        ).json()["data"][0]["embedding"]
        vectors = np.array([item["embedding"] for item in response.json()["data"]])
        assert vectors.shape == (24, 384)
        np.testing.assert_allclose(vectors, np.tile(reference, (24, 1)), atol=1e-4)
    # Once the burst is over the queue is empty again.
    after = httpx.post(
        f"{guarded.url}/v1/embeddings", json={"model": QUEUED, "input": "after"}, headers=auth()
    )
    assert after.status_code == 200
