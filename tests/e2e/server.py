"""The one way the tests run a server: `Server` starts `aios-serve serve` as a real process from a
config (or from command-line flags), waits for /health, hands out its URL and real clients, and
stops it. Session fixtures (tests/e2e/conftest.py) hold the standard configurations; a test that
needs its own (fault injection, shutdown, special limits, keys) makes a `Server` itself:

    with Server(tmp_path, [configs.minilm("slow", max_batch_size=1)], drain_timeout_s=1) as server:
        server.client().embeddings.create(model="slow", input="hi")
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import openai
import yaml
from prometheus_client.parser import text_string_to_metric_families

STARTUP_TIMEOUT_S = 600
STOP_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(folder: Path, models: list[dict[str, Any]], **settings: Any) -> Path:
    """folder/config.yaml with `models` and the top-level `settings`; the usage store goes to
    folder/data unless `data_dir` says otherwise (never into the repository)."""
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({"models": models, "data_dir": str(folder / "data"), **settings}))
    return path


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample of a server's /metrics, keyed by (sample name, labels)."""
    response = httpx.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 where the server has not reported it yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)


class Server:
    """An `aios-serve serve` process on a free port of 127.0.0.1, logging to folder/server.log.

    `models` and `settings` make folder/config.yaml; with `models=None` the server gets no config
    file and is configured by `args` alone (`--model PATH`, ...). `start()` returns once /health
    answers 200; `stop()` sends SIGTERM (SIGKILL after 30 s). The port stays the same across a
    stop (or `kill()`) and another `start()`, so a restarted server answers at the same URL.
    """

    def __init__(
        self,
        folder: Path,
        models: list[dict[str, Any]] | None = None,
        *,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        **settings: Any,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.args = args
        self.env = env or {}
        self.data_dir = Path(settings.get("data_dir", folder / "data"))
        self.config_path: Path | None = None
        if models is not None:
            self.config_path = write_config(folder, models, **settings)
        elif settings:
            raise TypeError(f"settings without models: {sorted(settings)}")
        self.log_path = folder / "server.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    # --- the process ------------------------------------------------------------------------

    @property
    def command(self) -> list[str]:
        command = [sys.executable, "-m", "aios_serve.cli", "serve", "--port", str(self.port), *self.args]
        if self.config_path is not None:
            command += ["--config", str(self.config_path)]
        return command

    @property
    def pid(self) -> int:
        assert self.process is not None, "the server is not started"
        return self.process.pid

    def start(self) -> Server:
        """Start the process (its log appended to server.log) and wait until it is healthy;
        RuntimeError with the log's tail if it exits or is not healthy in time."""
        assert self.process is None or self.process.poll() is not None, "the server is running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
            )
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_text()[-4000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"server not healthy in {STARTUP_TIMEOUT_S}s:\n{self.log_text()[-4000:]}")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 30 s; nothing if it is not running."""
        if not self.running():
            return
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL (a crash), and reap the process."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    # --- clients ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.url

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def client(self, api_key: str = "unused", **options: Any) -> openai.OpenAI:
        """The openai client on this server; no retries, so a test sees every error."""
        return openai.OpenAI(
            base_url=self.v1, api_key=api_key, **{"max_retries": 0, "timeout": 300, **options}
        )

    def async_client(self, api_key: str = "unused", **options: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.v1, api_key=api_key, **{"max_retries": 0, "timeout": 300, **options}
        )

    # --- the log --------------------------------------------------------------------------------

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout_s: float = 10.0) -> re.Match[str]:
        """The first match of `pattern` in the server log, waiting for it to be written."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = re.search(pattern, self.log_text())
            if found or time.monotonic() > deadline:
                assert found, f"{pattern!r} not in the server log:\n{self.log_text()[-3000:]}"
                return found
            time.sleep(0.1)

    def __repr__(self) -> str:
        return f"Server({self.url}, log={self.log_path})"
