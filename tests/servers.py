"""Start a real aios-serve process from a config file and wait until it is healthy."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

STARTUP_TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(folder: Path, models: list[dict[str, Any]], **extra: Any) -> Path:
    path = folder / "config.yaml"
    settings = {"data_dir": str(folder / "data"), **extra}  # keep usage stores out of the repo
    path.write_text(yaml.safe_dump({"models": models, **settings}))
    return path


@contextlib.contextmanager
def running_server(
    config: Path | None, log_path: Path, extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> Iterator[str]:
    """Yield the base URL of a server started as `aios-serve serve`; stop it afterwards."""
    port = free_port()
    command = [sys.executable, "-m", "aios_serve.cli", "serve", "--port", str(port), *extra_args]
    if config is not None:
        command += ["--config", str(config)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(base_url, process, log_path)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_healthy(base_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log_path.read_text()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"server not healthy in {STARTUP_TIMEOUT_S}s:\n{log_path.read_text()[-4000:]}")
