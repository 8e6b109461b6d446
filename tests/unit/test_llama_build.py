"""The llama.cpp build: explicit ISA tiers, and a check that refuses AMX code or a failing decode."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ISA_SCRIPT = ROOT / "scripts" / "llama_cpp_isa.py"
CHECK_SCRIPT = ROOT / "scripts" / "check_llama_build.py"

ZEN3 = "fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c bmi1 avx2 bmi2 vaes vpclmulqdq"
ZEN4 = f"{ZEN3} avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16 avx512vbmi avx512_vnni"
SAPPHIRE_RAPIDS = f"{ZEN4} avx_vnni amx_bf16 amx_tile amx_int8 avx512_fp16"


def run_script(
    script: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env)


def isa_for(tmp_path: Path, flags: str, what: str) -> str:
    cpuinfo = tmp_path / f"cpuinfo-{abs(hash(flags))}"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    result = run_script(ISA_SCRIPT, what, "--cpuinfo", str(cpuinfo))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("flags", [ZEN4, SAPPHIRE_RAPIDS])
def test_avx512_machines_get_the_avx512_set_without_amx_or_avx_vnni(tmp_path: Path, flags: str) -> None:
    args = isa_for(tmp_path, flags, "cmake-args").split()
    assert isa_for(tmp_path, flags, "key").startswith("avx512-vnni-bf16-vbmi-")
    for on in ("AVX2", "AVX512", "AVX512_VNNI", "AVX512_BF16", "AVX512_VBMI"):
        assert f"-DGGML_{on}=ON" in args
    for off in ("NATIVE", "OPENMP", "AVX_VNNI", "AMX_TILE", "AMX_INT8", "AMX_BF16"):
        assert f"-DGGML_{off}=OFF" in args


def test_an_avx2_machine_gets_the_avx2_set_under_its_own_key(tmp_path: Path) -> None:
    args = isa_for(tmp_path, ZEN3, "cmake-args").split()
    assert "-DGGML_AVX2=ON" in args and "-DGGML_AVX512=OFF" in args and "-DGGML_NATIVE=OFF" in args
    assert isa_for(tmp_path, ZEN3, "key").startswith("avx2-")
    assert isa_for(tmp_path, ZEN3, "key") != isa_for(tmp_path, ZEN4, "key")


def test_the_check_refuses_a_library_with_amx_instructions(tmp_path: Path) -> None:
    if shutil.which("gcc") is None or shutil.which("objdump") is None:
        pytest.fail("gcc and objdump are needed (binutils comes with gcc)")
    source = tmp_path / "tile.c"
    source.write_text(
        "#include <immintrin.h>\nvoid release_tiles(void) { _tile_release(); }\n"
        "int add(int a, int b) { return a + b; }\n"
    )
    lib_dir = tmp_path / "lib"
    lib_dir.mkdir()
    subprocess.run(
        ["gcc", "-O2", "-shared", "-fPIC", "-mamx-tile", str(source), "-o", str(lib_dir / "libtile.so")],
        check=True,
    )
    refused = run_script(CHECK_SCRIPT, "--lib-dir", str(lib_dir), "--no-decode")
    assert refused.returncode == 1
    assert "AMX" in refused.stderr and "libtile.so" in refused.stderr and "tilerelease" in refused.stderr

    subprocess.run(
        ["gcc", "-O2", "-shared", "-fPIC", "-xc", "-", "-o", str(lib_dir / "libtile.so")],
        input="int add(int a, int b) { return a + b; }\n",
        text=True,
        check=True,
    )
    assert run_script(CHECK_SCRIPT, "--lib-dir", str(lib_dir), "--no-decode").returncode == 0


def test_the_installed_build_passes_the_check_and_decodes() -> None:
    result = run_script(CHECK_SCRIPT)
    assert result.returncode == 0, result.stderr
    assert "decoded 64 prompt tokens, then 4" in result.stdout
