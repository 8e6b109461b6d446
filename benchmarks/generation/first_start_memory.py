"""A server's first start on a GGUF, from an empty IR cache: `aios-serve serve --model FILE`,
then each process's RSS once /health answers and after one chat request, and the peak of every
process seen meanwhile (the IR build's child included, sampled every 0.2 s).

    .venv/bin/python benchmarks/generation/first_start_memory.py FILE.gguf [--port 8141]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from servers import machine, process_tree, status_mib

ROOT = Path(__file__).resolve().parents[2]


def memory(pid: int) -> tuple[str, int, int, int]:
    """A process's command (shortened), VmRSS, RssAnon and VmHWM in MiB."""
    status = status_mib(pid)
    command = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ").split(" -c ")[0][-60:]
    return command, *(int(status[key]) for key in ("VmRSS", "RssAnon", "VmHWM"))


def snapshot(root: int, peaks: dict[int, tuple[str, int]]) -> list[str]:
    lines = []
    for pid in process_tree(root):
        try:
            command, rss, anonymous, peak = memory(pid)
        except (OSError, KeyError, ValueError):
            continue
        peaks[pid] = (command, max(peak, peaks.get(pid, ("", 0))[1]))
        lines.append(f"  {pid} {command}: RSS {rss} MiB (anonymous {anonymous}), peak {peak}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("gguf", type=Path)
    parser.add_argument("--port", type=int, default=8141)
    options = parser.parse_args()
    print(machine())
    from aios_serve.models.bundled import cache_dir

    with tempfile.TemporaryDirectory(prefix="aios-first-start-") as empty:
        if (cache_dir() / "sha256").is_dir():
            shutil.copytree(cache_dir() / "sha256", Path(empty) / "sha256")
        url = f"http://127.0.0.1:{options.port}"
        command = [
            str(ROOT / ".venv/bin/aios-serve"),
            "serve",
            "--port",
            str(options.port),
            "--model",
            str(options.gguf),
        ]
        command += ["--data-dir", str(Path(empty) / "data")]
        env = {**os.environ, "AIOS_CACHE_DIR": empty}
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peaks: dict[int, tuple[str, int]] = {}
        started = time.perf_counter()
        try:
            while True:
                snapshot(server.pid, peaks)
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None:
                    sys.exit(f"the server exited with {server.returncode}")
                time.sleep(0.2)
            print(
                f"ready after {time.perf_counter() - started:.1f} s", *snapshot(server.pid, peaks), sep="\n"
            )
            name = httpx.get(f"{url}/v1/models").json()["data"][0]["id"]
            chat = {
                "model": name,
                "messages": [{"role": "user", "content": "Write a haiku."}],
                "max_tokens": 64,
            }
            answer = httpx.post(f"{url}/v1/chat/completions", json=chat, timeout=600)
            print(f"after one chat ({answer.status_code})", *snapshot(server.pid, peaks), sep="\n")
            print(
                "peaks of every process seen:",
                *(f"  {pid} {c}: {p} MiB" for pid, (c, p) in peaks.items()),
                sep="\n",
            )
        finally:
            server.terminate()
            server.wait(60)


if __name__ == "__main__":
    main()
