"""A server with API keys, tight limits and a small queue, shared by the guard tests."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.servers import running_server, write_config

EMBEDDING = "all-minilm-l6-v2"
QUEUED = "queued-minilm"
"""Runs one sequence per forward pass and queues at most 2 requests: easy to fill."""
MISCONFIGURED = "misconfigured-minilm"
"""max_model_len 1024 on a model with 512 positions: inputs past 512 tokens fail in the forward pass."""
CROSS_ENCODER = "tiny-cross-encoder"

KEYS = {"alice": "sk-alice-4f1c9d", "bob": "sk-bob-77ab02"}
MAX_BODY_BYTES = 256 * 1024
MAX_EMBEDDING_INPUTS = 64
MAX_REQUEST_TOKENS = 8000


def auth(name: str = "bob") -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


@dataclass(frozen=True)
class GuardedServer:
    url: str
    log_path: Path

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


def minilm(name: str, **extra: object) -> dict[str, object]:
    options = {"dtype": "float32", **extra.pop("options", {})}  # type: ignore[dict-item]
    return {"name": name, "kind": "embedding", "bundled": "all-minilm-l6-v2", "options": options, **extra}


@contextlib.contextmanager
def guarded_server(folder: Path, cross_encoder_dir: Path) -> Iterator[GuardedServer]:
    config = write_config(
        folder,
        [
            minilm(EMBEDDING),
            minilm(QUEUED, options={"max_batch_tokens": 64, "max_batch_size": 1, "max_queued_requests": 2}),
            minilm(MISCONFIGURED, max_model_len=1024),
            {
                "name": CROSS_ENCODER,
                "kind": "cross-encoder",
                "path": str(cross_encoder_dir),
                "options": {"dtype": "float32"},
            },
        ],
        api_keys=[{"name": "alice", "key": KEYS["alice"], "admin": True}],
        limits={
            "max_body_bytes": MAX_BODY_BYTES,
            "max_embedding_inputs": MAX_EMBEDDING_INPUTS,
            "max_request_tokens": MAX_REQUEST_TOKENS,
        },
    )
    log_path = folder / "server.log"
    with running_server(config, log_path, extra_args=("--api-key", f"bob:{KEYS['bob']}")) as url:
        yield GuardedServer(url, log_path)
