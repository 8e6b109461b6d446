"""Check an installed llama.cpp build before anything serves with it.

1. No shared library may hold an AMX instruction (GCC 12 miscompiles llama.cpp's tile-config
   code, which faults on the first request on Sapphire Rapids), nor AVX-512 code on a CPU that
   lacks AVX-512.
2. A 64-token prompt and a few greedy tokens decode in a child process, so a crash shows here,
   with the signal, instead of at the first request.
Exit 0 when both pass; 1 with a message naming the problem otherwise.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
from pathlib import Path

from llama_cpp_isa import cpu_flags  # this script's folder is on sys.path when run as a script

AMX_MNEMONIC = re.compile(
    r"^\s*[0-9a-f]+:\s+(ldtilecfg|sttilecfg|tilerelease|tilezero|tileloaddt?1?|tilestored|tdp\w+|tcmm\w+)\b"
)
ZMM_REGISTER = re.compile(r"%zmm\d+")
HINT = (
    "remove the cached wheel (~/.cache/aios-serve/wheels/llama-cpp-python-*) and run `make setup` "
    "again, or pick a narrower tier with AIOS_LLAMA_ISA=avx2 make setup"
)

SMOKE_DECODE = """
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=256, n_threads=2, n_batch=64, verbose=False)
prompt = llm.tokenize(b"The quick brown fox jumps over the lazy dog. " * 12)[:64]
assert len(prompt) == 64, len(prompt)
out = llm.create_completion(prompt, max_tokens=4, temperature=0.0)
print(out["usage"]["completion_tokens"], repr(out["choices"][0]["text"]))
"""


def find_amx_and_avx512(library: Path) -> tuple[list[str], int]:
    """AMX lines and the number of zmm-register lines in the library's disassembly."""
    listing = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", str(library)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    amx: list[str] = []
    zmm = 0
    for line in listing.splitlines():
        if AMX_MNEMONIC.search(line):
            amx.append(line.strip())
        if ZMM_REGISTER.search(line):
            zmm += 1
    return amx, zmm


def check_libraries(lib_dir: Path) -> list[str]:
    """Problems found in every shared library under lib_dir."""
    libraries = sorted(lib_dir.glob("*.so*"))
    if not libraries:
        return [f"no shared library in {lib_dir}"]
    problems: list[str] = []
    avx512_ok = "avx512f" in cpu_flags()
    for library in libraries:
        amx, zmm = find_amx_and_avx512(library)
        if amx:
            problems.append(f"{library.name} holds {len(amx)} AMX instructions, e.g. {amx[0]!r}")
        if zmm and not avx512_ok:
            problems.append(f"{library.name} uses AVX-512 registers ({zmm} lines); this CPU has no AVX-512")
    return problems


def smoke_decode(gguf: Path, timeout_s: float) -> str | None:
    """Decode in a child process; None when it worked, else what went wrong."""
    try:
        child = subprocess.run(
            [sys.executable, "-c", SMOKE_DECODE, str(gguf)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return f"decoding 64 + 4 tokens took over {timeout_s:.0f} s"
    if child.returncode < 0:
        name = signal.Signals(-child.returncode).name
        return f"the decode crashed with {name}"
    if child.returncode != 0:
        return f"the decode failed (exit {child.returncode}): {child.stderr.strip()[-400:]}"
    print(f"check_llama_build: decoded 64 prompt tokens, then {child.stdout.strip()}")
    return None


def bundled_gguf() -> Path:
    from aios_serve.models.bundled import resolve_bundled

    return resolve_bundled("smollm2-135m-instruct")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lib-dir", type=Path, help="default: the installed llama_cpp/lib")
    parser.add_argument("--gguf", type=Path, help="model for the smoke decode (default: bundled SmolLM2)")
    parser.add_argument("--no-decode", action="store_true", help="only disassemble the libraries")
    parser.add_argument("--timeout", type=float, default=120.0)
    options = parser.parse_args()
    lib_dir = options.lib_dir
    if lib_dir is None:
        import importlib.util

        spec = importlib.util.find_spec("llama_cpp")
        if spec is None or not spec.submodule_search_locations:
            print("check_llama_build: llama_cpp is not installed", file=sys.stderr)
            return 1
        lib_dir = Path(next(iter(spec.submodule_search_locations))) / "lib"
    problems = check_libraries(lib_dir)
    if not problems and not options.no_decode:
        failure = smoke_decode(options.gguf or bundled_gguf(), options.timeout)
        problems += [failure] if failure else []
    if problems:
        for problem in problems:
            print(f"check_llama_build: FAILED: {problem}", file=sys.stderr)
        print(f"check_llama_build: this llama.cpp build would crash at serve time; {HINT}", file=sys.stderr)
        return 1
    print(f"check_llama_build: {lib_dir} holds no AMX instruction and no ISA this CPU lacks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
