"""Encoder forward passes on torch + transformers: pooled embeddings and cross-encoder logits."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)

log = logging.getLogger("aios_serve.backends.torch_encoder")

DType = Literal["auto", "float32", "bfloat16"]
Pooling = Literal["mean", "cls", "max"]


class EncoderLoadError(RuntimeError):
    """The folder does not hold a model this backend can serve."""


def cpu_has_native_bf16() -> bool:
    """True where the CPU flags show AVX512-BF16 or AMX-BF16."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: DType) -> torch.dtype:
    if dtype == "float32":
        return torch.float32
    if dtype == "bfloat16":
        return torch.bfloat16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


@dataclass(frozen=True)
class EncodedInput:
    """One tokenized sequence ready for a forward pass."""

    input_ids: list[int]
    token_type_ids: list[int] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


def _read_json(path: Path) -> dict[str, object]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _sentence_transformers_pooling(folder: Path) -> Pooling:
    """The pooling a sentence-transformers folder declares; mean when it declares none."""
    modules = json.loads((folder / "modules.json").read_text()) if (folder / "modules.json").exists() else []
    for module in modules:
        if str(module.get("type", "")).endswith("Pooling"):
            config = _read_json(folder / str(module.get("path", "")) / "config.json")
            if config.get("pooling_mode_cls_token"):
                return "cls"
            if config.get("pooling_mode_max_tokens"):
                return "max"
    return "mean"


PAD_MULTIPLE = 16


class TorchEncoderBackend:
    """Loads an HF folder and runs batched forward passes; thread-confined by the caller."""

    def __init__(
        self,
        folder: Path,
        cross_encoder: bool,
        dtype: DType = "auto",
        max_model_len: int | None = None,
        threads: int | None = None,
    ) -> None:
        if not (folder / "config.json").exists():
            raise EncoderLoadError(f"{folder} has no config.json; expected a Hugging Face model folder")
        torch.set_num_threads(threads or os.cpu_count() or 1)
        self.folder = folder
        self.cross_encoder = cross_encoder
        self.torch_dtype = resolve_dtype(dtype)
        self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(str(folder))
        config = AutoConfig.from_pretrained(str(folder))
        if cross_encoder:
            labels = int(getattr(config, "num_labels", 1))
            if labels != 1:
                raise EncoderLoadError(
                    f"{folder} is a sequence-classification model with {labels} labels; a "
                    "cross-encoder reranker must have exactly one label (num_labels=1)"
                )
            self.model = AutoModelForSequenceClassification.from_pretrained(str(folder))
        else:
            self.model = AutoModel.from_pretrained(str(folder))
        self.model = self.model.to(self.torch_dtype).eval()
        self.pooling = _sentence_transformers_pooling(folder)
        self.max_model_len = max_model_len or self._declared_max_len(config)
        self.vocab_size = int(getattr(config, "vocab_size", len(self.tokenizer)))
        self.pad_token_id = int(self.tokenizer.pad_token_id or 0)
        self._warm_up()
        log.info(
            "loaded %s (%s, %s, max_model_len=%d)",
            folder,
            "cross-encoder" if cross_encoder else f"embedding/{self.pooling}",
            self.torch_dtype,
            self.max_model_len,
        )

    def _warm_up(self) -> None:
        """One short and one padded batch, so the first request does not pay for kernel set-up."""
        pad = max(self.pad_token_id, 1)
        for rows, length in ((1, 8), (4, 64)):
            length = min(length, self.max_model_len)
            batch = [EncodedInput([pad] * length, [0] * length) for _ in range(rows)]
            if self.cross_encoder:
                self.score(batch)
            else:
                self.embed(batch)

    def _declared_max_len(self, config: object) -> int:
        st_config = _read_json(self.folder / "sentence_bert_config.json")
        candidates = [
            st_config.get("max_seq_length"),
            getattr(config, "max_position_embeddings", None),
            getattr(self.tokenizer, "model_max_length", None),
        ]
        for value in candidates:
            if isinstance(value, int) and 0 < value < 1_000_000:
                return value
        return 512

    def _pad(self, batch: list[EncodedInput]) -> dict[str, torch.Tensor]:
        longest = max(len(item) for item in batch)
        # Round up so that the kernels (and the memory they cache per shape) see few shapes.
        longest = min(-(-longest // PAD_MULTIPLE) * PAD_MULTIPLE, max(longest, self.max_model_len))
        ids = np.full((len(batch), longest), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(batch), longest), dtype=np.int64)
        types = np.zeros((len(batch), longest), dtype=np.int64)
        for row, item in enumerate(batch):
            n = len(item)
            ids[row, :n] = item.input_ids
            mask[row, :n] = 1
            if item.token_type_ids is not None:
                types[row, :n] = item.token_type_ids
        tensors = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if "token_type_ids" in self.tokenizer.model_input_names:
            tensors["token_type_ids"] = torch.from_numpy(types)
        return tensors

    @torch.inference_mode()
    def embed(self, batch: list[EncodedInput]) -> np.ndarray:
        """L2-normalized pooled vectors, float32, one row per input."""
        tensors = self._pad(batch)
        hidden = self.model(**tensors).last_hidden_state.float()
        mask = tensors["attention_mask"].unsqueeze(-1).float()
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "max":
            pooled = hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
        else:
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.numpy()

    @torch.inference_mode()
    def score(self, batch: list[EncodedInput]) -> np.ndarray:
        """sigmoid(logit) for each query-document pair."""
        logits = self.model(**self._pad(batch)).logits.float()[:, 0]
        return torch.sigmoid(logits).numpy()
