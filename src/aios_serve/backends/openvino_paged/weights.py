"""Which IR the paged model is compiled from (the `weights_type` option), each rewrite made once
by llama.cpp's quantizer and cached by content hash. GenAI decodes F32, F16 and Q8_0 as
llama.cpp does but misreads 4-bit k-quants, so a file of other types is never read as is.

- `gguf` (default): GenAI's graph with every MatMul weight put back (exact_ir.py): the file's
  own Q4_0, Q4_1, Q4_K and Q5_0 blocks, 4-bit codes at 4 bits; other types (Q6_K among them)
  at Q8_0 as llama.cpp's quantizer makes it (the graph comes from a Q4_0 frame since
  `own-blocks-v6`, before from the Q8_0 rewrite, with the same weights). A file of F32, F16
  and Q8_0 only is read as is. Where activations stay f32, the same weights without zero points
  (`own-blocks-v6-no-zero-points`; exact_ir.py, precision.zero_points). Q4_1's and Q4_K's offsets are
  integer zero points plus a remainder taken off the output (exact_ir.py, since the cache label
  `own-blocks-v4`), so the plugin keeps its int8 activations; teacher-forced at the default f32
  with int8 activations (tests/unit/test_openvino_fidelity.py -s), SmolLM2 top-1 630/640, mean
  |Δ logprob| 0.033 (`q8_0`: 623, 0.041), Qwen2.5-Coder-0.5B 625/640, 0.018 (`q8_0`: 623,
  0.019). Measured on the route's first form (f16 zero points), on a 2-core Sapphire Rapids,
  against `q8_0`:
  - closer to llama.cpp on the same file, teacher-forced at f32, 20 prompts x 32 tokens
    (tests/unit/test_openvino_fidelity.py -s): SmolLM2 top-1 625/640 against 624, mean
    |Δ logprob| 0.0294 against 0.0359; Qwen2.5-Coder-0.5B 628/640 against 624, 0.0160 against
    0.0175;
  - as fast or faster, in process at bf16, one stream / 16 streams, tok/s
    (benchmarks/generation/openvino_speed.py --precision bf16 --weights-type q8_0 gguf --rounds 2
    --max-tokens 64 --models smollm2-135m-instruct qwen2.5-coder-0.5b-instruct FILE; the 1.5B
    model one round): SmolLM2 68.6 / 501.9 against 59.8 / 505.6; Qwen2.5-Coder-0.5B (mostly
    Q5_0: 8-bit codes either way) 25.6 / 185.5 against 24.9 / 185.9; Qwen2.5-Coder-1.5B (Q4_K)
    7.8 / 60.9 against 6.9 / 59.8;
  - less memory: Qwen2.5-Coder-1.5B's IR holds 1,345 MiB of weights against 1,809, and the
    process 2,893 MiB of RSS after 16 steps at bf16 against 3,798 (128.1 ms a step against
    147.2; at f32 124.0 against 133.3; benchmarks/generation/openvino_footprint.py FILE
    --precision f32 bf16 --weights-type gguf|q8_0).
- `gguf` with ggml's kernels (`matmul_kernels`, ggml_kernels.py): the same frame's graph with
  every MatMul a GgmlMatMul node over the file's own blocks, whatever their type
  (`ggml-blocks-v2-<layouts>`; ggml_ir.py, ggml_layouts.py).
- `q8_0`: the file as is when it holds only F32, F16 and Q8_0 tensors, else a Q8_0
  rewrite (`pure`: every tensor Q8_0, none kept at a k-quant GenAI misreads).
- `f16`: the file as is when it holds only F32 and F16 tensors, else an F16 rewrite. At bf16 on
  AMX the CPU plugin multiplies by weights it converted once, where it decompresses u8 weights
  in every call. Sapphire Rapids, in process, bf16, 64 greedy tokens, medians of two rounds
  (`benchmarks/generation/openvino_speed.py --precision bf16 --weights-type q8_0 f16 --rounds 2
  --max-tokens 64`): SmolLM2 at 16 streams 722.2 tok/s against 527.1 from Q8_0, one stream 62.1
  against 65.0; Qwen2.5-Coder-0.5B 289.1 against 188.8, one stream 22.4 against 25.3. But the
  compiled model holds about 6 bytes a weight: Qwen2.5-Coder-1.5B took 10.2 GiB of anonymous
  memory once loaded at bf16 against 0.7 GiB (2.2 GiB after the first pass) from Q8_0
  (benchmarks/generation/openvino_footprint.py FILE --precision bf16 [--weights-type f16]).
  Memory near the file's size is the default.

Why Q8_0 for the types not put back, and not F16 (the route of the GenAI
pipeline engine this one replaced): on a 2-core Sapphire Rapids at f32 (dynamic activation
quantization off, see graph.py), SmolLM2's Q8_0 model stepped in 15.8 ms for one sequence and
35.6 ms for 16, against 26.4 and 42.9 ms from F16 (it reads half the weight bytes; with dynamic
quantization on, 12.9 and 21.8 ms, but prompt and decode passes then disagree). Teacher-forced
against llama.cpp on the original Q4_1 file (engine/generation/fidelity.py, 20 prompts x 32
tokens): top-1 624/640, mean |Δ logprob| 0.036 (F16: 625/640, 0.029). The file is 138 MiB, not
258; RSS was not compared.

Why not Q4_0 (llama.cpp's quantizer, Q8_0 kept for the embeddings and the output layer), though
GenAI reads it exactly too: it is faster but requantizes 4-bit k-quants a second time. Same
machine, f32, in process (10 prompts x 32 tokens teacher-forced against llama.cpp on the original):
SmolLM2 one stream 86.2 against 64.1 tok/s, 16 streams 435 against 371, top-1 77.8% against
98.1%; Qwen2.5-Coder-0.5B 31.4 against 25.0 tok/s, 156 against 147, top-1 88.8% against 97.8%.
The `gguf` route keeps 4 bits without requantizing: the file's own blocks.

Why not the file's Q6_K blocks too: as u8 codes in groups of 16 they made Qwen2.5-Coder-1.5B step
in 186.8 ms at bf16 against 147.2 from Q8_0 (exact_ir.PUT_BACK).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path

from aios_serve.backends.openvino_paged.exact_ir import PUT_BACK, save_with_own_blocks
from aios_serve.backends.openvino_paged.ggml_ir import save_with_ggml_matmuls
from aios_serve.backends.openvino_paged.ggml_layouts import signature
from aios_serve.backends.openvino_paged.ir import (
    IR_NAME,
    cached,
    cached_ir,
    check_may_build,
    ir_folder,
    remove_superseded,
    save_ir,
)
from aios_serve.models.ggml_quants import GGML_TYPE_Q8_0
from aios_serve.models.gguf_rewrite import (
    F16,
    Q4_0,
    Q8_0,
    holds_any,
    holds_only,
    quantize,
    rewrite_path,
    rewritten,
    tensor_types,
)

EXACT_TYPES = frozenset({"F32", "F16", "Q8_0"})
"""Tensor types GenAI 2026.4 decodes as llama.cpp does."""
FLOAT_TYPES = frozenset({"F32", "F16"})
"""Tensor types the f16 route reads as is."""
OWN_BLOCKS_LABEL = "own-blocks-v6"
"""The own-blocks IR's cache label; v6: built over a Q4_0 frame, every MatMul weight put back
(v1: f16 zero points; v2: offsets whole off the output; v3: a group sum per MatMul; v4: integer
zero points, the offsets' remainder taken off the output, group sums shared; v5: weights with
offsets that read one input stacked into one MatMul)."""
NO_ZERO_POINTS_LABEL = f"{OWN_BLOCKS_LABEL}-no-zero-points"
"""The same IR without zero points (exact_ir.py), for f32 activations."""
FRAME_NAME = "frame.q4_0.gguf"
"""The frame's file name in a build's scratch folder."""


OWN_BLOCKS_FAMILY = "own-blocks"
"""What every own-blocks label starts with: older ones are removed once the current one is made."""
GGML_BLOCKS_LABEL = "ggml-blocks-v2"
"""The IR whose MatMuls are ggml's over the file's own blocks (ggml_ir.py), followed by the
signature of this CPU's layouts for them (ggml_layouts.py)."""
GGML_BLOCKS_FAMILY = "ggml-blocks"
"""What every ggml-blocks label starts with (as OWN_BLOCKS_FAMILY)."""
Q8_0_REWRITE = {"label": "q8_0-pure", "folder": "openvino-ir"}
"""Where the Q8_0 rewrite is cached (`gguf_rewrite.rewrite_path`)."""
F16_REWRITE = {"label": "f16", "folder": "openvino"}
"""Where the F16 rewrite is cached."""


def q8_0_rewrite(gguf: Path) -> Path:
    """The file with every tensor rewritten to Q8_0, made once per content hash under
    `cache_dir() / "openvino-ir"`."""
    return _rewrite(gguf, Q8_0, Q8_0_REWRITE, pure=True)


def f16_rewrite(gguf: Path) -> Path:
    """The file with every tensor rewritten to F16 (F32 ones kept), made once per content hash."""
    return _rewrite(gguf, F16, F16_REWRITE, pure=False)


def _rewrite(gguf: Path, ftype: int, where: dict[str, str], *, pure: bool) -> Path:
    """`gguf_rewrite.rewritten` at `where` (label and folder); NotBuilt inside `ir.cached_only`
    where it is not there yet."""
    target = rewrite_path(gguf, **where)
    if not target.is_file():
        check_may_build(target)
    return rewritten(gguf, ftype=ftype, pure=pure, label=where["label"], folder=where["folder"])


def _from_frame(gguf: Path, put_back: Callable[[Path, Path, Path, Path], object]) -> Callable[[Path], None]:
    """A build that makes the frame (the Q4_0 rewrite GenAI builds the graph from) and its IR
    in the scratch folder, then calls `put_back(frame IR, gguf, frame, target IR)`."""

    def build(scratch: Path) -> None:
        frame, frame_ir = scratch / FRAME_NAME, scratch / "frame"
        frame_ir.mkdir()
        try:
            quantize(gguf, frame, ftype=Q4_0, pure=True, embedding_type=GGML_TYPE_Q8_0)
            save_ir(frame, frame_ir)
            put_back(frame_ir / IR_NAME, gguf, frame, scratch / IR_NAME)
        finally:
            frame.unlink(missing_ok=True)
            shutil.rmtree(frame_ir, ignore_errors=True)

    return build


def own_blocks_ir(gguf: Path, zero_points: bool = True) -> Path:
    """The IR of the file's own blocks (exact_ir.py), with integer zero points or without any,
    made once per content hash. The frame and its IR live in the build's scratch folder only."""
    label = OWN_BLOCKS_LABEL if zero_points else NO_ZERO_POINTS_LABEL
    folder = ir_folder(gguf, label)
    xml = cached(folder, _from_frame(gguf, partial(save_with_own_blocks, zero_points=zero_points)))
    remove_superseded(folder, label, OWN_BLOCKS_FAMILY, (OWN_BLOCKS_LABEL, NO_ZERO_POINTS_LABEL))
    return xml


def ggml_blocks_ir(gguf: Path) -> Path:
    """The IR whose MatMuls are ggml's over the file's own blocks (ggml_ir.py), made once per
    content hash and layout signature from the same frame as the own-blocks IR."""
    label = f"{GGML_BLOCKS_LABEL}-{signature(tensor_types(gguf))}"
    folder = ir_folder(gguf, label)
    xml = cached(folder, _from_frame(gguf, save_with_ggml_matmuls))
    remove_superseded(folder, label, GGML_BLOCKS_FAMILY, (label,))
    return xml


def paged_ir(
    gguf: Path, weights_type: str = "gguf", zero_points: bool = True, ggml: bool = False
) -> tuple[Path, str]:
    """The IR to compile for `weights_type` (q8_0, f16, gguf) and its route: `as-is`,
    `q8_0-rewrite`, `f16-rewrite` or `own-blocks` (`gguf` on a file with no block type to put
    back takes the `q8_0` route); the own blocks with integer zero points or without any, or,
    with `ggml`, every MatMul weight as the file's blocks in ggml's kernels (`gguf` only)."""
    if weights_type == "gguf" and ggml:
        return ggml_blocks_ir(gguf), "own blocks in ggml's kernels"
    if weights_type == "gguf" and holds_any(gguf, PUT_BACK):
        xml = own_blocks_ir(gguf, zero_points)
        form = "" if zero_points else ", no zero points"
        if holds_only(gguf, EXACT_TYPES | PUT_BACK):
            return xml, f"own-blocks{form}"
        return xml, f"own-blocks, others q8_0{form}"
    if weights_type == "f16":
        if holds_only(gguf, FLOAT_TYPES):
            return cached_ir(gguf), "as-is"
        return cached_ir(f16_rewrite(gguf)), "f16-rewrite"
    if holds_only(gguf, EXACT_TYPES):
        return cached_ir(gguf), "as-is"
    return cached_ir(q8_0_rewrite(gguf)), "q8_0-rewrite"
