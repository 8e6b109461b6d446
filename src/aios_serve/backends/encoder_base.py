"""What the encoder backends share: tokenizer, pooling, limits, padding and warm-up. They implement
the engine's interface, `aios_serve.backends.protocols.encoder.EncoderBackend`."""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Literal

import numpy as np
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

from aios_serve.backends.protocols.encoder import EncodedInput

log = logging.getLogger("aios_serve.backends.encoder")

Pooling = Literal["mean", "cls", "max"]

# Round padded lengths up to a multiple of this, so that kernels (and the memory they cache per
# shape) see few shapes.
PAD_MULTIPLE = 16


class EncoderLoadError(RuntimeError):
    """The folder does not hold a model this backend can serve."""


def read_json(path: Path) -> dict[str, object]:
    """A JSON object from a file; empty when the file is missing or not an object."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def sentence_transformers_pooling(folder: Path) -> Pooling:
    """The pooling a sentence-transformers folder declares; mean when it declares none."""
    modules = json.loads((folder / "modules.json").read_text()) if (folder / "modules.json").exists() else []
    for module in modules:
        if str(module.get("type", "")).endswith("Pooling"):
            config = read_json(folder / str(module.get("path", "")) / "config.json")
            if config.get("pooling_mode_cls_token"):
                return "cls"
            if config.get("pooling_mode_max_tokens"):
                return "max"
    return "mean"


def l2_normalized(pooled: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


def pool(hidden: np.ndarray, mask: np.ndarray, pooling: Pooling) -> np.ndarray:
    """L2-normalized pooled rows of float32 hidden states [batch, seq, dim] under a 0/1 mask."""
    weights = mask[:, :, None].astype(np.float32)
    if pooling == "cls":
        pooled = hidden[:, 0]
    elif pooling == "max":
        pooled = np.where(weights > 0, hidden, -np.inf).max(axis=1)
    else:
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    return l2_normalized(pooled)


def pool_packed(hidden: np.ndarray, starts: np.ndarray, pooling: Pooling) -> np.ndarray:
    """L2-normalized pooled rows of packed float32 hidden states [tokens, dim]; sequence i is
    rows starts[i]:starts[i+1]."""
    firsts = starts[:-1]
    if pooling == "cls":
        pooled = hidden[firsts]
    elif pooling == "max":
        pooled = np.maximum.reduceat(hidden, firsts, axis=0)
    else:
        pooled = np.add.reduceat(hidden, firsts, axis=0) / np.diff(starts)[:, None].astype(np.float32)
    return l2_normalized(pooled)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """A sigmoid that does not overflow for large negative logits."""
    return np.exp(-np.logaddexp(0.0, -logits.astype(np.float64))).astype(np.float32)


class HfEncoderBackend(ABC):
    """Loads an HF folder's tokenizer and config; subclasses run the forward pass.

    Thread-confined by the caller: one forward at a time.
    """

    packs_sequences = False  # True where a forward pass runs real tokens only (no padding)

    def __init__(self, folder: Path, cross_encoder: bool, max_model_len: int | None = None) -> None:
        if not (folder / "config.json").exists():
            raise EncoderLoadError(f"{folder} has no config.json; expected a Hugging Face model folder")
        self.folder = folder
        self.cross_encoder = cross_encoder
        try:
            self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(str(folder))
            self.config: PretrainedConfig = AutoConfig.from_pretrained(str(folder))
        except (OSError, ValueError, KeyError) as error:
            raise EncoderLoadError(f"{folder}: cannot read the tokenizer or config: {error}") from error
        if cross_encoder:
            labels = int(getattr(self.config, "num_labels", 1))
            if labels != 1:
                raise EncoderLoadError(
                    f"{folder} is a sequence-classification model with {labels} labels; a "
                    "cross-encoder reranker must have exactly one label (num_labels=1)"
                )
        self.pooling = sentence_transformers_pooling(folder)
        self.max_model_len = max_model_len or self._declared_max_len()
        self.vocab_size = int(getattr(self.config, "vocab_size", len(self.tokenizer)))
        self.pad_token_id = int(self.tokenizer.pad_token_id or 0)
        self.uses_token_types = "token_type_ids" in self.tokenizer.model_input_names

    @abstractmethod
    def _hidden_states(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Float32 last hidden states [batch, seq, dim] for padded inputs."""

    @abstractmethod
    def _logits(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Float32 first-label logits [batch] for padded pairs."""

    def describe(self) -> str:
        """What was loaded, for the log line."""
        kind = "cross-encoder" if self.cross_encoder else f"embedding/{self.pooling}"
        return f"{self.folder} ({kind}, max_model_len={self.max_model_len})"

    def _declared_max_len(self) -> int:
        st_config = read_json(self.folder / "sentence_bert_config.json")
        candidates = [
            st_config.get("max_seq_length"),
            getattr(self.config, "max_position_embeddings", None),
            getattr(self.tokenizer, "model_max_length", None),
        ]
        for value in candidates:
            if isinstance(value, int) and 0 < value < 1_000_000:
                return value
        return 512

    def warm_up(self) -> None:
        """One short and one padded batch, so the first request does not pay for kernel set-up."""
        pad = max(self.pad_token_id, 1)
        for rows, length in ((1, 8), (4, 64)):
            length = min(length, self.max_model_len)
            batch = [EncodedInput([pad] * length, [0] * length) for _ in range(rows)]
            if self.cross_encoder:
                self.score(batch)
            else:
                self.embed(batch)
        log.info("loaded %s", self.describe())

    def pad(self, batch: list[EncodedInput]) -> dict[str, np.ndarray]:
        """int64 input_ids, attention_mask and (if the model reads them) token_type_ids."""
        longest = max(len(item) for item in batch)
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
        arrays = {"input_ids": ids, "attention_mask": mask}
        if self.uses_token_types:
            arrays["token_type_ids"] = types
        return arrays

    def embed(self, batch: list[EncodedInput]) -> np.ndarray:
        """L2-normalized pooled vectors, float32, one row per input."""
        arrays = self.pad(batch)
        return pool(self._hidden_states(arrays), arrays["attention_mask"], self.pooling)

    def score(self, batch: list[EncodedInput]) -> np.ndarray:
        """sigmoid(logit) for each query-document pair."""
        return sigmoid(self._logits(self.pad(batch)))
