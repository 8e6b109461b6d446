"""A generation engine in a worker process behind a real server: a server whose SmolLM2 runs with
`worker: true` beside an embedding model. A worker killed (SIGKILL), crashed (SIGSEGV) or hung
fails only its own requests, at once, with a 503-class error, while the embedding model keeps
answering; it comes back on its own; a server killed with SIGKILL leaves no worker behind.
(`WorkerEngine` driven directly: tests/unit/test_worker_engine.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aios_serve.engine.generation.worker.state import HANG_TIMEOUT_ENV, TEST_HANG_ENV
from tests.e2e.configs import SMOL, minilm, smol
from tests.e2e.server import Server
from tests.processes import alive, children

EMBEDDING = "minilm"


@contextlib.contextmanager
def worker_server(folder: Path, env: dict[str, str] | None = None) -> Iterator[tuple[str, int]]:
    """(base URL, server pid) of a server with SmolLM2 in a worker and an embedding model."""
    models = [
        smol(SMOL, engine="openvino", n_threads=2, max_num_seqs=8, worker=True),
        minilm(EMBEDDING),
    ]
    with Server(folder, models, env=env) as server:
        body = httpx.get(f"{server.url}/health").json()
        if body.get("engines", {}).get(SMOL) != "ready":
            pytest.skip("generation models do not run in worker processes yet (worker: true)")
        yield server.url, server.pid


def chat_body(stream: bool, max_tokens: int) -> dict[str, object]:
    return {
        "model": SMOL,
        "messages": [{"role": "user", "content": "Tell me a long story about the sea."}],
        "max_tokens": max_tokens,
        "stream": stream,
        "ignore_eos": True,
    }


async def chat_stream(client: httpx.AsyncClient, started: asyncio.Event) -> tuple[bool, bool, float]:
    """(got an error chunk, ended with [DONE], seconds after the first chunk to the end)."""
    error = done = False
    first = 0.0
    async with client.stream("POST", "/v1/chat/completions", json=chat_body(True, 3000)) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            if not first:
                first = time.monotonic()
                started.set()
            if line == "data: [DONE]":
                done = True
            elif "error" in (chunk := json.loads(line[6:])):
                assert chunk["error"]["code"] == 503, chunk  # EngineUnavailable, in the OpenAI shape
                error = True
    return error, done, time.monotonic()


async def embeddings_loop(client: httpx.AsyncClient, stop: asyncio.Event) -> list[int]:
    codes = []
    while not stop.is_set():
        response = await client.post("/v1/embeddings", json={"model": EMBEDDING, "input": "hello there"})
        codes.append(response.status_code)
        await asyncio.sleep(0.05)
    return codes


def restarts(url: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("aios_serve_engine_restarts_total") and f'model_name="{SMOL}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def usage_errors(url: str) -> int:
    """Usage records of the generation model with a status of 400 or more."""
    rows = httpx.get(f"{url}/v1/usage", params={"group_by": "model"}).json()["data"]
    return sum(int(row["errors"]) for row in rows if row.get("model") == SMOL)


def worker_pid(server_pid: int) -> int:
    found = [pid for pid in children(server_pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    with worker_server(tmp_path_factory.mktemp("worker-server")) as running:
        yield running


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL])
def test_server_survives_a_dead_worker(server: tuple[str, int], sig: signal.Signals) -> None:
    url, server_pid = server
    before = restarts(url)
    errors_before = usage_errors(url)
    refused: list[int] = []  # 503s of the new request while the worker restarts
    victim = worker_pid(server_pid)

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            stop = asyncio.Event()
            embeddings = asyncio.create_task(embeddings_loop(client, stop))
            started = [asyncio.Event() for _ in range(4)]
            streams = [asyncio.create_task(chat_stream(client, event)) for event in started]
            await asyncio.wait_for(asyncio.gather(*(event.wait() for event in started)), 120)
            await asyncio.sleep(0.5)
            os.kill(victim, sig)
            killed_at = time.monotonic()
            for error, done, ended in await asyncio.wait_for(asyncio.gather(*streams), 30):
                assert error and done
                assert ended - killed_at < 15
            health = await client.get("/health")
            if health.status_code == 503:  # unless it is back already
                assert health.json()["engines"][SMOL] in ("restarting", "starting")
            while True:  # a new chat request succeeds within 60 s
                answer = await client.post("/v1/chat/completions", json=chat_body(False, 4))
                if answer.status_code == 200:
                    break
                assert answer.status_code == 503 and answer.headers.get("retry-after")
                refused.append(503)
                assert answer.json()["error"]["code"] == 503
                assert time.monotonic() - killed_at < 60
                await asyncio.sleep(0.5)
            stop.set()
            codes = await embeddings
            assert codes and set(codes) == {200}

    asyncio.run(scenario())
    assert alive(server_pid)
    assert restarts(url) == before + 1
    deadline = time.monotonic() + 5  # usage is committed within 0.25 s of each response's end
    expected = errors_before + len(refused) + 4
    while usage_errors(url) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert usage_errors(url) == expected, "the four failed streams' records carry their 503"
    assert httpx.get(f"{url}/health").status_code == 200


def test_hung_worker_behind_a_server_is_restarted(tmp_path: Path) -> None:
    env = {TEST_HANG_ENV: "5", HANG_TIMEOUT_ENV: "3"}
    with worker_server(tmp_path, env) as (url, _):
        started = time.monotonic()
        body = chat_body(True, 500)
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as response:
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]" and "hung" in json.loads(lines[-2][6:])["error"]["message"]
        assert time.monotonic() - started < 30
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert restarts(url) == 1
        answer = httpx.post(f"{url}/v1/chat/completions", json=chat_body(False, 4), timeout=60)
        assert answer.status_code == 200


def test_an_idle_worker_is_not_taken_for_hung(tmp_path: Path) -> None:
    """The hang clock starts when work arrives: a worker idle for longer than the bound, then
    asked to check a request (a grammar to compile), is not killed."""
    with worker_server(tmp_path, {HANG_TIMEOUT_ENV: "2"}) as (url, _):
        time.sleep(4)
        body = {**chat_body(False, 8), "response_format": {"type": "json_object"}}
        answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        assert restarts(url) == 0


def test_killed_server_leaves_no_worker(server: tuple[str, int]) -> None:
    """Runs last in this module: it kills the module's server with SIGKILL, as a crash would."""
    _, server_pid = server
    worker = worker_pid(server_pid)
    os.kill(server_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(worker):
        assert time.monotonic() < deadline, "the worker outlived the server"
        time.sleep(0.1)
