"""Encoder forward passes on torch + transformers: pooled embeddings and cross-encoder logits."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoModelForSequenceClassification

from aios_serve.backends.encoder_base import (
    PAD_MULTIPLE,
    EncoderLoadError,
    HfEncoderBackend,
    Pooling,
    pool_packed,
    sigmoid,
)
from aios_serve.backends.packed_bert import PackedBatch, PackedBert, packable
from aios_serve.backends.protocols.encoder import DType, EncodedInput
from aios_serve.cpu_features import has_native_bf16

__all__ = [
    "PAD_MULTIPLE",
    "DType",
    "EncodedInput",
    "EncoderLoadError",
    "Pooling",
    "TorchEncoderBackend",
    "resolve_dtype",
    "use_math_threads",
]

log = logging.getLogger("aios_serve.backends.torch_encoder")


def use_math_threads(count: int) -> None:
    """Set torch's math threads for passes run from the calling thread (OpenMP keeps the count
    per thread; every forward thread of a model sets the same count)."""
    torch.set_num_threads(count)


def resolve_dtype(dtype: DType) -> torch.dtype:
    if dtype == "float32":
        return torch.float32
    if dtype == "bfloat16":
        return torch.bfloat16
    return torch.bfloat16 if has_native_bf16() else torch.float32


class TorchEncoderBackend(HfEncoderBackend):
    """Runs an HF encoder in torch at the chosen precision."""

    def __init__(
        self,
        folder: Path,
        cross_encoder: bool,
        dtype: DType = "auto",
        max_model_len: int | None = None,
        threads: int | None = None,
        packed: bool = True,
    ) -> None:
        super().__init__(folder, cross_encoder, max_model_len)
        use_math_threads(threads or os.cpu_count() or 1)
        self.torch_dtype = resolve_dtype(dtype)
        loader = AutoModelForSequenceClassification if cross_encoder else AutoModel
        self.model = loader.from_pretrained(str(folder)).to(self.torch_dtype).eval()
        self.packed = PackedBert(self.model) if packed and packable(self.model) else None
        self.packs_sequences = self.packed is not None
        self.warm_up()

    def describe(self) -> str:
        layout = "packed" if self.packed is not None else "padded"
        return f"{super().describe()} on torch {self.torch_dtype}, {layout}"

    def embed(self, batch: list[EncodedInput]) -> np.ndarray:
        if self.packed is None:
            return super().embed(batch)
        packed = PackedBatch.of(batch)
        hidden = self.packed.hidden_states(packed)[: packed.real_tokens].float().numpy()
        return pool_packed(hidden, packed.starts, self.pooling)

    def score(self, batch: list[EncodedInput]) -> np.ndarray:
        if self.packed is None:
            return super().score(batch)
        return sigmoid(self.packed.first_logits(PackedBatch.of(batch)).float().numpy())

    @staticmethod
    def _tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {name: torch.from_numpy(array) for name, array in arrays.items()}

    @torch.inference_mode()
    def _hidden_states(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        return self.model(**self._tensors(arrays)).last_hidden_state.float().numpy()

    @torch.inference_mode()
    def _logits(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        return self.model(**self._tensors(arrays)).logits.float()[:, 0].numpy()
