"""Graceful shutdown of a real server process: SIGTERM stops accepting, drains requests in flight
within the configured time, flushes usage records, and exits 0."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.configs import minilm_fp32
from tests.e2e.server import Server

SLOW = "slow-minilm"
TEXT = "the quick brown fox jumps over the lazy dog " * 20
BARE_KEY = "sk-bare-from-env-5521"


@contextlib.contextmanager
def server_process(folder: Path, drain_timeout_s: int) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    server = Server(
        folder,
        [minilm_fp32(SLOW, max_batch_tokens=256, max_batch_size=1)],
        env={"AIOS_API_KEYS": BARE_KEY},  # a bare key: its caller name is key-1
        drain_timeout_s=drain_timeout_s,
        data_dir=str(folder / "data"),
    )
    server.start()
    try:
        assert server.process is not None
        yield server.process, server.url
    finally:
        server.kill()


def post_in_background(url: str, inputs: int) -> tuple[threading.Thread, dict[str, object]]:
    outcome: dict[str, object] = {}

    def send() -> None:
        try:
            outcome["response"] = httpx.post(
                f"{url}/v1/embeddings",
                json={"model": SLOW, "input": [TEXT] * inputs},
                headers={"Authorization": f"Bearer {BARE_KEY}"},
                timeout=120,
            )
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=send)
    thread.start()
    return thread, outcome


def wait_until_refused(url: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/health", timeout=1)
        except httpx.ConnectError:
            return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    pytest.fail("the server kept accepting connections after SIGTERM")


def test_sigterm_drains_in_flight_requests_and_flushes_usage(tmp_path: Path) -> None:
    with server_process(tmp_path, drain_timeout_s=60) as (process, url):
        # 100 sequences, one per forward pass: seconds of work even on a quiet machine.
        thread, outcome = post_in_background(url, inputs=100)
        time.sleep(0.5)  # the request is now being served
        assert thread.is_alive()
        process.send_signal(signal.SIGTERM)
        wait_until_refused(url)
        assert thread.is_alive(), "the in-flight request should still be running while new ones are refused"
        thread.join(timeout=120)
        response = outcome.get("response")
        assert isinstance(response, httpx.Response), outcome
        assert response.status_code == 200 and len(response.json()["data"]) == 100
        assert process.wait(timeout=60) == 0
    log = (tmp_path / "server.log").read_text()
    assert log.index('"POST /v1/embeddings" 200') < log.index("Application shutdown complete")
    report = subprocess.run(
        [sys.executable, "-m", "aios_serve.cli", "usage", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "key-1" in report.stdout and SLOW in report.stdout, report.stdout


def test_drain_time_bounds_shutdown(tmp_path: Path) -> None:
    with server_process(tmp_path, drain_timeout_s=1) as (process, url):
        thread, outcome = post_in_background(url, inputs=200)  # far longer than the drain time
        time.sleep(1.0)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert time.monotonic() - signalled < 15
        thread.join(timeout=30)
    assert "response" not in outcome or outcome["response"].status_code != 200  # type: ignore[union-attr]
    assert "timeout graceful shutdown exceeded" in (tmp_path / "server.log").read_text()
