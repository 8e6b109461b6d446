"""Servers for the usage, metrics and request-id tests: real processes with a temp data folder."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import _wait_healthy, free_port, write_config

EMBEDDING = "minilm"
GENERATION = "smollm2"
EMBEDDING_MODEL = {"name": EMBEDDING, "kind": "embedding", "bundled": "all-minilm-l6-v2"}
GENERATION_MODEL = {
    "name": GENERATION,
    "kind": "generate",
    "bundled": "smollm2-135m-instruct",
    "options": {"n_threads": 2, "max_num_seqs": 4},
}


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    data_dir: Path
    config_path: Path


@contextlib.contextmanager
def usage_server(folder: Path, models: list[dict[str, Any]], **extra: Any) -> Iterator[Server]:
    """A server whose data folder is `folder/data`; the test may kill the process itself."""
    data_dir = folder / "data"
    config = write_config(folder, models, data_dir=str(data_dir), **extra)
    port = free_port()
    log_path = folder / "server.log"
    command = [sys.executable, "-m", "aios_serve.cli", "serve", "--port", str(port), "--config", str(config)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(url, process, log_path)
            yield Server(url, process, log_path, data_dir, config)
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample of /metrics, keyed by (sample name, labels)."""
    response = httpx.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)
