"""A generation engine in a worker process: a worker killed (SIGKILL), crashed (SIGSEGV) or hung
fails only its own requests, at once, with a 503-class error; it comes back on its own; a server
killed with SIGKILL leaves no worker behind.

The first tests drive `WorkerEngine` directly over the bundled SmolLM2 on llama.cpp; the server
tests start a real server whose SmolLM2 runs with `worker: true` beside an embedding model."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aios_serve.engine.generation.factory import EngineSpec
from aios_serve.engine.generation.interface import EngineUnavailable
from aios_serve.engine.generation.sampling import SamplingParams
from aios_serve.engine.generation.worker import WorkerEngine
from aios_serve.engine.generation.worker.state import HANG_TIMEOUT_ENV, TEST_HANG_ENV
from aios_serve.models.bundled import resolve_bundled
from tests.servers import running_server, write_config

SMOL = "smollm2-135m-instruct"
EMBEDDING = "minilm"
PROMPT = [1, 9690, 314, 253, 1953, 2030, 3456, 422, 1152, 28]
LONG = SamplingParams(max_tokens=2000, temperature=1.0, ignore_eos=True)
SHORT = SamplingParams(max_tokens=8, temperature=0.0)


def engine_spec() -> EngineSpec:
    options = {"engine": "llama.cpp", "n_threads": 2, "max_num_seqs": 8}
    return EngineSpec(SMOL, str(resolve_bundled(SMOL)), options=options)


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (FileNotFoundError, IndexError, ValueError):
                continue
    return found


async def drain(stream: object) -> str:
    """Consume a stream; `ok` or the error's type name."""
    try:
        async for _ in stream:  # type: ignore[attr-defined]
            pass
    except EngineUnavailable:
        return "unavailable"
    return "ok"


async def wait_ready(engine: WorkerEngine, timeout: float) -> float:
    started = time.monotonic()
    while engine.health().state != "ready":
        assert time.monotonic() - started < timeout, engine.health()
        await asyncio.sleep(0.1)
    return time.monotonic() - started


# --- WorkerEngine directly ----------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL])
def test_dead_worker_fails_its_streams_and_comes_back(sig: signal.Signals) -> None:
    async def scenario() -> None:
        engine = WorkerEngine(engine_spec(), name=SMOL)
        await engine.start()
        try:
            streams = [engine.generate([*PROMPT, i], LONG, 1) for i in range(4)]
            first = [await stream.__anext__() for stream in streams]  # all four run
            assert all(update.choices for update in first)
            pid = engine.pid
            assert pid is not None
            os.kill(pid, sig)
            killed_at = time.monotonic()
            outcomes = await asyncio.wait_for(asyncio.gather(*(drain(s) for s in streams)), 15)
            assert outcomes == ["unavailable"] * 4
            assert time.monotonic() - killed_at < 15
            with pytest.raises(EngineUnavailable) as refused:  # while it restarts
                engine.generate(PROMPT, SHORT, 1)
            assert refused.value.retry_after >= 1
            assert engine.health().last_exit == f"was killed by {sig.name}"
            await wait_ready(engine, 60)
            assert engine.health().restarts == 1 and engine.pid not in (None, pid)
            assert await drain(engine.generate(PROMPT, SHORT, 1)) == "ok"
        finally:
            await engine.stop()
        assert engine.health().state == "stopped" and engine.pid is None

    asyncio.run(scenario())


def test_hung_worker_is_killed_and_restarted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TEST_HANG_ENV, "3")  # the first worker's loop sleeps after 3 batches

    async def scenario() -> None:
        engine = WorkerEngine(engine_spec(), name=SMOL, hang_timeout_s=3)
        await engine.start()
        try:
            started = time.monotonic()
            stream = engine.generate(PROMPT, LONG, 1)
            with pytest.raises(EngineUnavailable, match="hung"):
                async for _ in stream:
                    pass
            assert time.monotonic() - started < 3 + 10
            await wait_ready(engine, 60)
            assert engine.health().restarts == 1
            assert await drain(engine.generate(PROMPT, SHORT, 1)) == "ok"  # the hook was one-off
        finally:
            await engine.stop()

    asyncio.run(scenario())


PARENT = textwrap.dedent(
    """
    import asyncio, sys, time
    from tests.test_worker_faults import engine_spec
    from aios_serve.engine.generation.worker import WorkerEngine

    async def main():
        engine = WorkerEngine(engine_spec(), name="smol")
        await engine.start()
        print(engine.pid, flush=True)
        time.sleep(600)

    if __name__ == "__main__":
        asyncio.run(main())
    """
)


def test_worker_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env)
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        assert alive(worker)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while alive(worker):
            assert time.monotonic() < deadline, "the worker outlived its parent"
            time.sleep(0.1)
    finally:
        parent.kill()


# --- a real server ------------------------------------------------------------------------


@contextlib.contextmanager
def worker_server(folder: Path, env: dict[str, str] | None = None) -> Iterator[tuple[str, int]]:
    """(base URL, server pid) of a server with SmolLM2 in a worker and an embedding model."""
    config = write_config(
        folder,
        [
            {
                "name": SMOL,
                "kind": "generate",
                "bundled": SMOL,
                "options": {"engine": "llama.cpp", "n_threads": 2, "max_num_seqs": 8, "worker": True},
            },
            {"name": EMBEDDING, "kind": "embedding", "bundled": "all-minilm-l6-v2"},
        ],
    )
    with running_server(config, folder / "server.log", ("--log-level", "info"), env=env) as url:
        body = httpx.get(f"{url}/health").json()
        if body.get("engines", {}).get(SMOL) != "ready":
            pytest.skip("generation models do not run in worker processes yet (worker: true)")
        yield url, _pid_of(url)


def _pid_of(url: str) -> int:
    """The server process listening at `url` (found by its command line)."""
    wanted = ["--port", url.rsplit(":", 1)[1]]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_text().split("\0")
            except (FileNotFoundError, PermissionError):
                continue
            if "aios_serve.cli" in args and any(args[i : i + 2] == wanted for i in range(len(args))):
                return int(entry.name)
    raise RuntimeError(f"no server process for {url}")


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


def test_killed_server_leaves_no_worker(tmp_path: Path) -> None:
    with worker_server(tmp_path) as (_, server_pid):
        worker = worker_pid(server_pid)
        os.kill(server_pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(worker):
            assert time.monotonic() < deadline, "the worker outlived the server"
            time.sleep(0.1)
