"""Typed engine options for encoder models, read from the config's `options`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from aios_serve.backends.protocols.encoder import DType


class EncoderOptions(BaseModel):
    """Per-model options for encoders."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["torch", "onnx"] = "torch"
    dtype: DType = "auto"  # torch's precision; onnx runs float32
    threads: int | None = Field(default=None, gt=0)  # all forward passes together; default: cores
    # Forward passes at once, sharing the threads; default 2 on torch (with 2+ threads), 1 on onnx.
    forward_workers: int | None = Field(default=None, gt=0)
    max_batch_tokens: int = Field(default=8192, gt=0)
    max_batch_size: int = Field(default=128, gt=0)
    max_queued_requests: int = Field(default=1024, gt=0)
    micro_batch_tokens: int = Field(default=4096, gt=0)  # padded (or packed) tokens per forward pass
    packed: bool = True  # torch, BERT models: run real tokens only; false runs the padded forward
    matryoshka_dimensions: list[PositiveInt] | None = None
    """The output sizes a Matryoshka-trained model may be cut to (`dimensions`)."""

    @model_validator(mode="after")
    def _onnx_runs_float32(self) -> EncoderOptions:
        if self.backend == "onnx" and self.dtype == "bfloat16":
            raise ValueError("backend onnx runs float32; dtype bfloat16 needs backend torch")
        return self
