"""The interface the encoder engine drives (the torch and ONNX backends implement it), and the
precision option the torch backend reads (`DType`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DType = Literal["auto", "float32", "bfloat16"]
"""torch's precision; `auto` takes bfloat16 where the CPU runs it natively."""


@dataclass(frozen=True)
class EncodedInput:
    """One tokenized sequence ready for a forward pass (`token_type_ids` for text pairs)."""

    input_ids: list[int]
    token_type_ids: list[int] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


class EncoderBackend(Protocol):
    """A loaded embedding model or cross-encoder. Thread-confined: the engine runs one forward
    pass at a time on each backend instance."""

    tokenizer: PreTrainedTokenizerBase
    max_model_len: int
    """The longest sequence, in tokens, one forward pass takes."""
    vocab_size: int
    packs_sequences: bool
    """True where a forward pass runs real tokens only (no padding)."""

    def embed(self, batch: list[EncodedInput]) -> np.ndarray:
        """L2-normalized pooled vectors, float32, one row per input."""
        ...

    def score(self, batch: list[EncodedInput]) -> np.ndarray:
        """A relevance score in [0, 1] per query-document pair."""
        ...
