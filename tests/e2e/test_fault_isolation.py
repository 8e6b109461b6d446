"""Fault isolation on a real model: one request whose forward pass raises gets a 500 in the error
shape and a log line with its request id; the requests batched with it, and the server, go on.

The failure is real, not injected: MISCONFIGURED declares max_model_len 1024 on a model with 512
position embeddings, so an input past 512 tokens passes validation and then makes torch raise
inside the forward pass, as a misconfigured model would in production."""

from __future__ import annotations

import asyncio
import re

import httpx
import numpy as np

from tests.e2e.configs import EMBEDDING, MISCONFIGURED, auth
from tests.e2e.server import Server

SHORT_TEXTS = [f"short request number {i} about topic {i * 7}" for i in range(6)]
# 512 tokens fit the model's real position table, 514 do not; lengths this close share a
# forward pass, so the failure hits a batch that also holds good requests.
LONGEST_GOOD = ["word " * 510, "text " * 510, "more " * 510]
TOO_LONG = "word " * 512
BLOCKER = ["a longer text that keeps the forward thread busy for a while " * 20] * 24


async def burst(server: Server, request_id: str) -> tuple[httpx.Response, list[httpx.Response]]:
    async with httpx.AsyncClient(base_url=server.url, headers=auth(), timeout=120) as client:

        def post(model: str, given: object, **headers: str) -> asyncio.Task[httpx.Response]:
            body = {"model": model, "input": given}
            return asyncio.create_task(client.post("/v1/embeddings", json=body, headers=headers))

        blocker = post(MISCONFIGURED, BLOCKER)  # the others queue behind it and share the next batch
        await asyncio.sleep(0.3)
        failing = post(MISCONFIGURED, TOO_LONG, **{"X-Request-Id": request_id})
        others = [post(MISCONFIGURED, text) for text in LONGEST_GOOD + SHORT_TEXTS]
        others += [post(EMBEDDING, text) for text in SHORT_TEXTS]  # 256-token model
        await blocker
        return await failing, list(await asyncio.gather(*others))


def test_one_failing_request_leaves_the_others_working(guarded: Server) -> None:
    failing, others = asyncio.run(burst(guarded, "fault-isolation-1"))

    assert failing.status_code == 500
    error = failing.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == 500
    request_id = failing.headers.get("x-request-id", "fault-isolation-1")
    guarded.wait_for_log(rf"request_id={re.escape(request_id)} POST /v1/embeddings answered 500")
    # The failure really happened inside a shared batch, which was then rerun request by request.
    batch = guarded.wait_for_log(r"encoder forward failed for a batch of (\d+) sequences")
    assert int(batch.group(1)) > 1

    references = {
        text: httpx.post(
            f"{guarded.url}/v1/embeddings", json={"model": MISCONFIGURED, "input": text}, headers=auth()
        ).json()["data"][0]["embedding"]
        for text in LONGEST_GOOD + SHORT_TEXTS
    }  # one request alone: the same weights as EMBEDDING, and the reference for every response
    sent = LONGEST_GOOD + SHORT_TEXTS + SHORT_TEXTS
    for text, response in zip(sent, others, strict=True):
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json()["data"][0]["embedding"], references[text], atol=1e-4)

    # The server and the failing model itself keep serving.
    assert httpx.get(f"{guarded.url}/health").status_code == 200
    again = httpx.post(
        f"{guarded.url}/v1/embeddings", json={"model": MISCONFIGURED, "input": "fine"}, headers=auth()
    )
    assert again.status_code == 200
