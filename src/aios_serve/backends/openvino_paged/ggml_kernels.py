"""ggml's matrix kernels inside the paged model (`matmul_kernels`): the native operation
(native/ggml_matmul.cpp), compiled on first use against the OpenVINO and llama.cpp libraries
of this environment and cached, and when to use it.

Where the CPU has no VNNI (Zen 3), OpenVINO's plugin multiplies f32 activations by weights it
unpacks from 4 bits at every step, where llama.cpp quantizes each activation row to 8 bits and
multiplies integers with AVX2. ggml's kernels on the file's own blocks decode few rows faster
and many rows slower: Qwen2.5-Coder-1.5B (Q4_K_M), one decode step of M sequences on a 2-core
Zen 3, ggml's on plain blocks (ggml_layouts.py for the interleaved ones) / OpenVINO's, ms
(benchmarks/generation/openvino_rows.py, both IRs loaded and stepped in turns): M=1 84 / 111,
2 132 / 176, 4 232 / 210, 6 334 / 331, 8 424 / 306, 12 549 / 368, 16 695 / 431. Over HTTP
(benchmarks/generation/README.md) one stream 15.0 against 9.0 tok/s, 16 streams 19.7 against
28.2, 1,683 MiB peak RSS against 2,506.
The operation has no ISA-specific code of its own: the kernels are those of the llama.cpp build
that the `llama.cpp` engine uses (its ISA flags are chosen and checked by
scripts/llama_cpp_isa.py).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

from aios_serve.cpu_features import has_vnni
from aios_serve.models.bundled import cache_dir, file_sha256

log = logging.getLogger("aios_serve.backends.openvino_paged")

SOURCE = Path(__file__).parent / "native" / "ggml_matmul.cpp"
LARGE_FILE_BYTES = 768 << 20
"""From this file size on, `auto` takes ggml's kernels (on a CPU without VNNI): where the
MatMuls are most of a step. The bundled models gained little for one sequence and lost more
under load (model alone, 2-core Zen 3, a first form of the operation with a thread pool of its
own, ggml's / OpenVINO's: one sequence 15.4 / 17.4 ms on SmolLM2-135M and 26.9 / 29.8 on
Qwen2.5-Coder-0.5B, 16 sequences 113.4 / 67.1 and 209.0 / 171.3, a 500-token prompt 2.0 / 1.0
and 4.6 / 2.9 s)."""


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec and spec.origin else None


def _inputs() -> tuple[list[str], bytes] | None:
    """The compiler's command (without its output) and what the library depends on, or None
    where a header, a library or the compiler is missing."""
    openvino, llama_cpp = _package_dir("openvino"), _package_dir("llama_cpp")
    compiler = shutil.which("g++") or shutil.which("c++")
    if openvino is None or llama_cpp is None or compiler is None:
        return None
    ggml_headers, ggml_libs = llama_cpp.parent / "include", llama_cpp / "lib"
    openvino_libs = sorted((openvino / "libs").glob("libopenvino.so.*"))
    needed = (ggml_headers / "ggml-cpu.h", ggml_libs / "libggml-cpu.so")
    if not all(path.is_file() for path in needed) or not openvino_libs:
        return None
    command = [
        compiler, "-O2", "-std=c++17", "-shared", "-fPIC", str(SOURCE),
        f"-I{openvino / 'include'}", f"-I{ggml_headers}",
        f"-L{openvino / 'libs'}", f"-l:{openvino_libs[0].name}", "-l:libtbb.so.12",
        f"-L{ggml_libs}", "-lggml-cpu", "-lggml-base", "-lggml",
        f"-Wl,-rpath,{ggml_libs}", f"-Wl,-rpath,{openvino / 'libs'}",
    ]  # fmt: skip
    depends = SOURCE.read_bytes() + " ".join(command).encode()
    for library in (ggml_libs / "libggml-cpu.so", openvino_libs[0]):
        depends += file_sha256(library).encode()  # remembered by the file's stat
    return command, depends


@cache
def library() -> Path | None:
    """The compiled operation (made once per source and libraries, under the cache folder), or
    None, with the reason logged, where it cannot be built here."""
    found = _inputs()
    if found is None:
        log.warning("ggml's kernels are not available: no C++ compiler, or no OpenVINO or ggml headers")
        return None
    command, depends = found
    folder = cache_dir() / "native"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"libaios_ggml_matmul-{hashlib.sha256(depends).hexdigest()[:16]}.so"
    with open(folder / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_file():
            partial = target.with_suffix(f".{os.getpid()}.tmp")
            compile_command = [*command, "-o", str(partial)]
            built = subprocess.run(compile_command, capture_output=True, text=True, check=False)
            if built.returncode != 0:
                log.warning("ggml's kernels did not compile: %s", built.stderr[-2000:])
                partial.unlink(missing_ok=True)
                return None
            partial.replace(target)
    return target


def chosen(option: str, *, precision: str, quantized: bool, batch_invariant: bool, file_bytes: int) -> str:
    """Who multiplies for the option `matmul_kernels`: `openvino`, `ggml`, or `both` (ggml's
    kernels for steps of one to three tokens, OpenVINO's for the rest, over one KV cache); an
    option other than `auto` is taken as asked. `auto` takes ggml's for a file of
    `LARGE_FILE_BYTES` or more where OpenVINO's activations stay f32 for lack of VNNI and the
    batch may matter (ggml quantizes each row's activations, and its batched kernels need not
    sum in one row's order). With VNNI, OpenVINO's int8 path keeps them: on a Zen 4 ggml's
    kernels alone ran 16 streams of Qwen2.5-Coder-1.5B at 0.48-0.58x its aggregate; `both` holds
    two sets of weights, more memory than `auto` may take (benchmarks/generation/README.md)."""
    if option != "auto":
        return option
    plain_f32 = precision == "f32" and not quantized and not batch_invariant
    return "ggml" if plain_f32 and not has_vnni() and file_bytes >= LARGE_FILE_BYTES else "openvino"
