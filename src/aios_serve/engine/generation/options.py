"""Typed engine options for generation models, read from the config's `options`."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

EngineName = Literal["auto", "openvino", "llama.cpp", "transformers"]
OLD_SPELLINGS = {"llama_cpp": "llama.cpp", "openvino-paged": "openvino"}
"""Engine names of earlier releases and what they name now."""
InferencePrecision = Literal["auto", "f32", "bf16"]


class GenerationOptions(BaseModel):
    """Per-model options for the generation engine."""

    model_config = ConfigDict(extra="forbid")

    engine: EngineName = Field(default="auto", validation_alias=AliasChoices("engine", "backend"))
    """`auto`: a .gguf file on OpenVINO where it loads there (else llama.cpp, with the reason
    logged), a folder on transformers. `openvino`: OpenVINO's paged-attention model driven by our
    own loop (backends/openvino_paged). `backend` is the older name of this option."""
    worker: bool = True
    """Run the engine in its own worker process (supervised and restarted); off: in process."""
    kv_cache_gb: int = Field(default=1, ge=1)
    """OpenVINO only: the paged KV cache's size in GB."""
    weights_type: Literal["gguf", "q8_0", "f16"] = "gguf"
    """OpenVINO only: what the model is built from: `gguf` (the file's own Q4_0, Q4_1, Q4_K and
    Q5_0 blocks, other types at Q8_0; closest to llama.cpp, least memory), `q8_0` (every tensor
    from a Q8_0 rewrite) or `f16` (an F16 rewrite: on AMX at bf16 1.37-1.53x Q8_0's aggregate
    at 16 streams, but about 6 bytes a weight in memory; backends/openvino_paged/weights.py)."""
    matmul_kernels: Literal["auto", "openvino", "ggml", "both"] = "auto"
    """OpenVINO only, `gguf` weights: who multiplies the weights. `ggml`: ggml's kernels (those of
    the llama.cpp engine) on the file's own blocks, the rest of the model on OpenVINO; on a Zen 3
    one stream of Qwen2.5-Coder-1.5B 1.70x as fast, 16 streams 0.84x. `both`: ggml's for steps of
    one to three tokens, OpenVINO's for larger ones, two compiled models over one KV cache (both
    sets of weights in memory). `auto`: ggml's for a file of 768 MiB or more where the CPU has no
    VNNI and `batch_invariant` is off, else OpenVINO's (backends/openvino_paged/ggml_kernels.py)."""
    num_kv_blocks: int | None = Field(default=None, gt=0)
    """OpenVINO only: the KV cache in blocks (of 32 tokens on CPU) instead of `kv_cache_gb`."""
    prefix_caching: bool = True
    """OpenVINO only: reuse the KV blocks of a prompt prefix seen before (vLLM's scheme)."""
    inference_precision: InferencePrecision = "auto"
    """OpenVINO only: the CPU plugin's activation precision. `f32` quantizes activations to int8
    on the fly (fastest decoding); `bf16` prefills faster where the CPU computes bf16 natively;
    `auto` picks per CPU (backends/openvino_paged/precision.py)."""
    batch_invariant: bool = False
    """OpenVINO only: f32 without dynamic quantization, so that a sequence's logits do not depend
    on what else is in the batch (batched greedy output equals sequential but for rare near-ties),
    at 0.6-0.8x the decode speed; vLLM calls it batch invariance."""
    n_ctx: int | None = Field(default=None, gt=0)
    """The longest prompt plus output of one sequence; default: min(trained context, 8192)."""
    kv_unified: bool = False
    """One KV cache shared by all sequences (less memory) instead of one per sequence (batched
    logits equal single-stream logits). Without it the cache holds n_ctx * max_num_seqs cells."""
    kv_cells: int | None = Field(default=None, gt=0)
    """Unified cache only: cells shared by all sequences; default: max(n_ctx, 16384)."""
    max_num_seqs: int = Field(default=16, gt=0, le=256)
    """Sequences decoded together (n choices count one each)."""
    max_batch_tokens: int = Field(default=512, ge=16)
    """Tokens per engine step (decode tokens plus prompt chunks)."""
    n_threads: int | None = Field(default=None, gt=0)
    n_threads_batch: int | None = Field(default=None, gt=0)
    flash_attn: bool | None = None
    """llama.cpp flash attention; None lets llama.cpp decide (on, for CPU builds here)."""
    max_queued_requests: int = Field(default=256, gt=0)
    chat_template: str | None = None
    """A Jinja chat template that replaces the one in the weights."""
    reasoning_parser: Literal["think"] | None = None
    """`think`: the model reasons inside <think>…</think>; chat returns that as reasoning_content."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """transformers backend only."""

    @model_validator(mode="after")
    def _invariant_needs_f32(self) -> GenerationOptions:
        if self.batch_invariant and self.inference_precision == "bf16":
            raise ValueError("batch_invariant computes in f32; drop inference_precision: bf16")
        return self

    @model_validator(mode="after")
    def _ggml_needs_own_blocks(self) -> GenerationOptions:
        if self.matmul_kernels in ("ggml", "both") and self.weights_type != "gguf":
            own_blocks = f"matmul_kernels: {self.matmul_kernels} multiplies the file's own blocks"
            raise ValueError(f"{own_blocks}; drop weights_type: {self.weights_type}")
        return self

    @field_validator("engine", mode="before")
    @classmethod
    def _old_spelling(cls, value: object) -> object:
        return OLD_SPELLINGS.get(value, value) if isinstance(value, str) else value
