"""The server under load: a real `aios-serve serve` on loopback, and the RSS of its process tree
(the server and its children: generation workers, multiprocessing's resource tracker)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generation"))
from servers import process_tree

MIB = 1024 * 1024
WORKER_STARTED = re.compile(r"worker of (\S+) started \(pid (\d+)\)")
"""The server's log line for each generation worker it spawns (engine/generation/worker/client.py)."""


@dataclass(frozen=True)
class Server:
    """A running server: its URL, pid and log file."""

    url: str
    pid: int
    log: Path

    def label(self, pid: int) -> str:
        """`server`, `worker <model>` (from the log's line for its start), else the start of the
        process's command line (e.g. multiprocessing's resource tracker)."""
        if pid == self.pid:
            return "server"
        with contextlib.suppress(OSError):
            for name, started in WORKER_STARTED.findall(self.log.read_text(errors="replace")):
                if int(started) == pid:
                    return f"worker {name}"
        return command_label(pid)


def cpu_name() -> str:
    """The CPU's model name and count, to print beside the figures."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    return "unknown CPU"


def rss_bytes(pid: int) -> int | None:
    """VmRSS of a process; None once it has exited."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def command_label(pid: int) -> str:
    """A short name for a process from its command line."""
    with contextlib.suppress(OSError):
        words = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        text = " ".join(w for w in words if w)
        if "resource_tracker" in text:
            return "resource tracker"
        if "multiprocessing" in text:
            return "spawned child"
        return text[:60]
    return "gone"


@dataclass
class TreeRss:
    """RSS samples of the server's process tree: per process (MiB) and their total."""

    server: Server
    started: float = field(default_factory=time.monotonic)
    labels: dict[int, str] = field(default_factory=dict)
    per_process: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    total: list[tuple[float, float]] = field(default_factory=list)

    def now(self) -> dict[int, float]:
        """Each live process's RSS in MiB now, labelling new ones."""
        sizes = {}
        for pid in process_tree(self.server.pid):
            size = rss_bytes(pid)
            if size is not None:
                if pid not in self.labels:
                    self.labels[pid] = self.server.label(pid)
                sizes[pid] = size / MIB
        return sizes

    def sample(self) -> None:
        at = time.monotonic() - self.started
        sizes = self.now()
        for pid, mib in sizes.items():
            self.per_process.setdefault(pid, []).append((at, mib))
        self.total.append((at, sum(sizes.values())))


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_server(folder: Path, host: str, models: list[dict[str, Any]]) -> Iterator[Server]:
    """A real `aios-serve serve` process on loopback with `models`, healthy (every model loaded,
    every worker ready) before it is yielded; terminated afterwards."""
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump({"models": models, "data_dir": str(folder / "data")}))
    port = free_port(host)
    log_path = folder / "server.log"
    log = log_path.open("wb")
    command = [sys.executable, "-m", "aios_serve.cli", "serve", "--host", host, "--port", str(port)]
    process = subprocess.Popen([*command, "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + 900
        while True:
            if process.poll() is not None:
                raise RuntimeError(log_path.read_text(errors="replace")[-3000:])
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not become healthy in 15 minutes")
            time.sleep(0.3)
        yield Server(url, process.pid, log_path)
    finally:
        process.terminate()
        process.wait(timeout=90)
        log.close()
