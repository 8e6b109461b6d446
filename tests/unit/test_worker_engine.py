"""A generation engine in a worker process, driven directly as `WorkerEngine` over the bundled
SmolLM2 on llama.cpp: a worker killed (SIGKILL), crashed (SIGSEGV) or hung fails only its own
streams, at once, with EngineUnavailable, and comes back on its own; a worker whose parent is
killed exits. (Behind a real server: tests/e2e/test_worker_faults.py.)"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from aios_serve.engine.generation.factory import EngineSpec
from aios_serve.engine.generation.interface import EngineUnavailable
from aios_serve.engine.generation.model import worker_engine
from aios_serve.engine.generation.options import GenerationOptions
from aios_serve.engine.generation.sampling import SamplingParams
from aios_serve.engine.generation.worker import WorkerEngine
from aios_serve.engine.generation.worker.state import TEST_HANG_ENV
from aios_serve.models.bundled import resolve_bundled
from tests.processes import alive

SMOL = "smollm2-135m-instruct"
PROMPT = [1, 9690, 314, 253, 1953, 2030, 3456, 422, 1152, 28]
LONG = SamplingParams(max_tokens=2000, temperature=1.0, ignore_eos=True)
SHORT = SamplingParams(max_tokens=8, temperature=0.0)


def engine_spec() -> EngineSpec:
    options = {"engine": "llama.cpp", "n_threads": 2, "max_num_seqs": 8}
    return EngineSpec(SMOL, str(resolve_bundled(SMOL)), options=options)


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


def test_a_request_its_client_lets_in_is_not_refused_by_the_worker() -> None:
    """One running, one waiting (a queue of 1): the running one is cancelled and a third sent at
    once. The client counts the queue from the last stats and lets it in; the worker, which has
    not yet dropped the cancelled one, used to refuse it inside its stream (a 200 cut short)."""

    async def scenario() -> None:
        options = GenerationOptions(engine="llama.cpp", n_threads=2, max_num_seqs=1, max_queued_requests=1)
        spec = EngineSpec(SMOL, str(resolve_bundled(SMOL)), options=options.model_dump())
        engine = worker_engine(spec, options)
        await engine.start()
        try:
            running = engine.generate(PROMPT, LONG, 1)
            await running.__anext__()
            waiting = engine.generate(PROMPT, SHORT, 1)
            while engine.stats().waiting != 1:
                await asyncio.sleep(0.01)
            running.cancel()
            let_in = engine.generate(PROMPT, SHORT, 1)
            assert await drain(let_in) == "ok"
            assert await drain(waiting) == "ok"
        finally:
            await engine.stop()

    asyncio.run(scenario())


PARENT = textwrap.dedent(
    """
    import asyncio, sys, time
    from tests.unit.test_worker_engine import engine_spec
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
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
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
