"""The paged model's IR, any build it needs run in a child process.

A build (llama.cpp's rewrite, GenAI's IR, the own blocks put back) needs far more memory than
serving: for Qwen2.5-Coder-1.5B's 1.1 GB file on a 2-core Zen 3 it peaked at 5.7 GB of RSS
over a Q8_0 rewrite, 2.0 GB over today's Q4_0 frame, and a worker that built in process then
served at 3,342 MiB against 2,135 (allocator arenas, mapped pages). Run in a child, it returns
everything when the child exits, so a worker's first start serves at the same memory as later
ones (benchmarks/generation/first_start_memory.py).

    python -m aios_serve.backends.openvino_paged.child_build FILE.gguf [WEIGHTS_TYPE [no-zero-points] [ggml]]
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from aios_serve.backends.openvino_paged.ir import NotBuilt, cached_only
from aios_serve.backends.openvino_paged.weights import paged_ir

log = logging.getLogger("aios_serve.backends.openvino_paged")


NO_ZERO_POINTS = "no-zero-points"
"""The command line's word for `zero_points=False`."""
GGML = "ggml"
"""The command line's word for `ggml=True`."""


def prepared_ir(
    gguf: Path, weights_type: str = "gguf", zero_points: bool = True, ggml: bool = False
) -> tuple[Path, str]:
    """`weights.paged_ir(gguf, weights_type, zero_points, ggml)`, built first in a child process
    if it is not cached."""
    try:
        with cached_only():
            return paged_ir(gguf, weights_type, zero_points, ggml)
    except NotBuilt as missing:
        log.info("%s is not cached: building it in a child process", missing)
    command = [sys.executable, "-m", __name__, str(gguf), weights_type]
    if not zero_points:
        command.append(NO_ZERO_POINTS)
    if ggml:
        command.append(GGML)
    finished = subprocess.run(command, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"building the OpenVINO IR of {gguf} failed (exit status {finished.returncode})")
    with cached_only():
        return paged_ir(gguf, weights_type, zero_points, ggml)


def main(arguments: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    weights_type = arguments[1] if len(arguments) > 1 else "gguf"
    words = arguments[2:]
    xml, route = paged_ir(Path(arguments[0]), weights_type, NO_ZERO_POINTS not in words, GGML in words)
    log.info("IR ready (%s): %s", route, xml)


if __name__ == "__main__":
    main(sys.argv[1:])
