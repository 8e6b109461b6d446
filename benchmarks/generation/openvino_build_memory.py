"""The openvino engine's IR build from an empty cache, as a first start runs it: seconds, and the
peak of the process's RSS split into anonymous memory and mapped files, sampled every 20 ms.

Each FILE in a fresh process with its own empty cache (the file's digest memo copied in, so the
figure is the build's alone). To set the code of another revision beside it:

    git worktree add /tmp/old REV
    PYTHONPATH=/tmp/old/src .venv/bin/python benchmarks/generation/openvino_build_memory.py FILE...
    PYTHONPATH=src .venv/bin/python benchmarks/generation/openvino_build_memory.py FILE...
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from servers import machine, status_mib

FIELDS = ("VmRSS", "RssAnon", "RssFile")


def _status() -> dict[str, int]:
    status = status_mib()
    return {key: int(status[key]) for key in FIELDS}


def build(gguf: Path, weights_type: str) -> None:
    """In this process: build the IR, print one JSON line."""
    peaks = dict.fromkeys(FIELDS, 0)

    def sample() -> None:
        while True:
            for key, value in _status().items():
                peaks[key] = max(peaks[key], value)
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    from aios_serve.backends.openvino_paged import paged_ir

    started = time.perf_counter()
    _, route = paged_ir(gguf, weights_type)
    seconds = time.perf_counter() - started
    print(json.dumps({"route": route, "seconds": seconds, "peak_mib": peaks, "after_mib": _status()}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--weights-type", default="gguf")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.in_process:
        build(options.files[0], options.weights_type)
        return
    from aios_serve.models.bundled import cache_dir

    print(machine())
    for gguf in options.files:
        with tempfile.TemporaryDirectory(prefix="aios-build-") as empty:
            memo = cache_dir() / "sha256"
            if memo.is_dir():
                shutil.copytree(memo, Path(empty) / "sha256")
            command = [
                sys.executable,
                __file__,
                str(gguf),
                "--weights-type",
                options.weights_type,
                "--in-process",
            ]
            done = subprocess.run(
                command,
                env={**os.environ, "AIOS_CACHE_DIR": empty},
                capture_output=True,
                text=True,
                check=True,
            )
            report = json.loads(done.stdout.strip().splitlines()[-1])
            peak, after = report["peak_mib"], report["after_mib"]
            print(
                f"{gguf.name}: {report['route']}, {report['seconds']:.1f} s; peak RSS {peak['VmRSS']} MiB "
                f"(anonymous {peak['RssAnon']}, files {peak['RssFile']}); after {after['VmRSS']} MiB",
                flush=True,
            )


if __name__ == "__main__":
    main()
