"""The interface the generation engine drives (llama.cpp and transformers implement it), and the
tokenizer side every generation model has, which stays in the server process (`Vocabulary`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

Logits = npt.NDArray[np.float32]


@dataclass
class BatchItem:
    """A run of tokens for one sequence (or several that share them, on a unified cache).

    `start_pos` is the position of the first token; with `want_logits` the backend returns the
    logits after the last token (`logits`), and with `want_all_logits` those after every token
    (`row_logits`, valid only until the next decode).
    """

    tokens: list[int]
    start_pos: int
    seq_ids: list[int]
    want_logits: bool = True
    want_all_logits: bool = False
    logits: Logits | None = field(default=None, repr=False)
    row_logits: list[Logits] | None = field(default=None, repr=False)


class KvCacheFull(RuntimeError):
    """The backend had no free cache cells for this batch; nothing was written."""


class Vocabulary(Protocol):
    """The tokenizer side of a model, which stays in the server process."""

    @property
    def n_vocab(self) -> int: ...

    def tokenize(self, text: str, add_special: bool) -> list[int]: ...

    def token_bytes(self, token_id: int, special: bool = False) -> bytes:
        """The bytes a token adds to the text; control tokens are empty unless `special`."""

    def detokenize(self, token_ids: list[int], skip_special: bool = True) -> str: ...

    def is_end_of_generation(self, token_id: int) -> bool: ...


def end_of_generation_ids(vocab: Vocabulary) -> list[int]:
    """The token ids that end generation (EOS, EOT and the like), in id order."""
    return [token_id for token_id in range(vocab.n_vocab) if vocab.is_end_of_generation(token_id)]


class ChatTemplateSource(Protocol):
    """What rendering a model's chat template reads from its tokenizer."""

    @property
    def chat_template(self) -> str | None: ...

    @property
    def bos_token(self) -> str: ...

    @property
    def eos_token(self) -> str: ...


class GenerationBackend(Vocabulary, ChatTemplateSource, Protocol):
    """A loaded causal LM that decodes multi-sequence batches and owns its KV cache."""

    @property
    def context_length(self) -> int:
        """The longest sequence (prompt plus output) one sequence may hold."""

    @property
    def max_sequences(self) -> int:
        """How many sequence ids (0..n-1) the cache holds at once."""

    @property
    def max_batch_tokens(self) -> int: ...

    @property
    def needs_consecutive_sequences(self) -> bool:
        """Whether a batch runs as one pass only when its sequence ids are consecutive."""

    @property
    def mixes_prompt_and_decode(self) -> bool:
        """Whether one pass may carry decode tokens and prompt chunks of any lengths together,
        each sequence's logits the same as in a pass of its own."""

    def reuse_prefix(self, seq_id: int, tokens: list[int]) -> int | None:
        """Give the empty sequence the cached keys and values of the longest cached prefix of
        `tokens`, leaving at least one token to run; returns the tokens reused (None where the
        backend keeps no prefix cache)."""

    def cells_in_use(self) -> int | None:
        """KV cells that live sequences hold, where the backend keeps a block pool (shared blocks
        count once); None: the engine counts its sequences' tokens."""

    def decode(self, items: list[BatchItem]) -> None:
        """Run one forward pass over all items; fill `item.logits` where asked.

        Raises KvCacheFull when the cache has no room (the cache is left as it was).
        """

    def copy_sequence(self, source: int, target: int) -> None:
        """Give `target` the cache of `source` (n choices after their shared prefill)."""

    def remove_sequence(self, seq_id: int) -> None:
        """Free every cache cell the sequence holds."""

    def close(self) -> None: ...
