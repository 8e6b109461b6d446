"""SmolLM2 generation servers shared by every generation test module, one per engine (started on
first use, stopped at interpreter exit), plus the small helpers those tests share."""

from __future__ import annotations

import atexit
import contextlib
import tempfile
from pathlib import Path

from tests.servers import running_server, write_config

SMOL = "smollm2-135m-instruct"
SMOL_ALIAS = "HuggingFaceTB/SmolLM2-135M-Instruct"

ENGINES = ("openvino", "llama.cpp")
"""The engines the generation tests run on (`auto` picks one of them)."""

_state: dict[str, tuple[str, Path]] = {}


def _start(engine: str) -> tuple[str, Path]:
    folder = Path(tempfile.mkdtemp(prefix="gen-server-"))
    config = write_config(
        folder,
        [
            {
                "name": SMOL,
                "aliases": [SMOL_ALIAS],
                "kind": "generate",
                "bundled": "smollm2-135m-instruct",
                "options": {"n_threads": 2, "max_num_seqs": 8, "engine": engine},
            },
            {"name": "minilm", "kind": "embedding", "bundled": "all-minilm-l6-v2"},
        ],
    )
    log_path = folder / "server.log"
    stack = contextlib.ExitStack()
    url = stack.enter_context(running_server(config, log_path, ("--log-level", "info")))
    atexit.register(stack.close)
    return url, log_path


def generation_server(engine: str = "auto") -> tuple[str, Path]:
    """(base URL, server log path) of the shared server whose SmolLM2 runs on `engine`."""
    if engine not in _state:
        _state[engine] = _start(engine)
    return _state[engine]
