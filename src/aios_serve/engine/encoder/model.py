"""The served encoder model: tokenization (off the loop for long inputs), then the batching queue.

Backends are imported where a model loads, so importing the engine costs neither torch nor
onnxruntime."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from aios_serve.backends.protocols.encoder import EncodedInput, EncoderBackend
from aios_serve.config import ModelSpec
from aios_serve.engine.encoder.options import EncoderOptions
from aios_serve.engine.encoder.scheduler import BatchScheduler
from aios_serve.engine.errors import InputTooLong, PairSide, TokenOutOfVocabulary
from aios_serve.models.bundled import resolve_bundled
from aios_serve.served_model import Forwarder

# Short inputs tokenize in well under a millisecond: on the loop that beats a thread hand-off,
# which on a busy machine waits for a time slice. Longer inputs tokenize off the loop.
INLINE_TOKENIZE_CHARS = 2048


@dataclass(frozen=True)
class TokenizedTexts:
    """Inputs ready for the queue, with their real token count."""

    inputs: list[EncodedInput]

    @property
    def token_count(self) -> int:
        return sum(len(item) for item in self.inputs)


def shortened_vectors(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """Matryoshka output: each row cut to its first `dimensions` values, then re-normalized."""
    cut = vectors[:, :dimensions]
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    return (cut / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


class EncoderModel:
    """An embedding model or a cross-encoder, served through one batching queue."""

    forwarder: Forwarder | None = None

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.options = EncoderOptions.model_validate(spec.options)
        self.cross_encoder = spec.kind == "cross-encoder"
        self._backend: EncoderBackend | None = None
        self._scheduler: BatchScheduler[EncodedInput] | None = None

    @property
    def backend(self) -> EncoderBackend:
        if self._backend is None:
            raise RuntimeError(f"model {self.spec.name} is not loaded")
        return self._backend

    @property
    def scheduler(self) -> BatchScheduler[EncodedInput]:
        if self._scheduler is None:
            raise RuntimeError(f"model {self.spec.name} is not loaded")
        return self._scheduler

    @property
    def max_model_len(self) -> int:
        return self.backend.max_model_len

    @property
    def backend_name(self) -> str:
        """`transformers` (torch) or `onnx`."""
        return "onnx" if self.options.backend == "onnx" else "transformers"

    def _folder(self) -> Path:
        if self.spec.bundled is not None:
            return resolve_bundled(self.spec.bundled)
        return Path(str(self.spec.path)).expanduser()

    def _load(self, threads_each: int) -> EncoderBackend:
        if self.options.backend == "onnx":
            from aios_serve.backends.onnx_encoder import OnnxEncoderBackend

            return OnnxEncoderBackend(
                self._folder(),
                cross_encoder=self.cross_encoder,
                max_model_len=self.spec.max_model_len,
                threads=threads_each,
            )
        from aios_serve.backends.torch_encoder import TorchEncoderBackend

        return TorchEncoderBackend(
            self._folder(),
            cross_encoder=self.cross_encoder,
            dtype=self.options.dtype,
            max_model_len=self.spec.max_model_len,
            threads=threads_each,
            packed=self.options.packed,
        )

    def worker_layout(self) -> tuple[int, int]:
        """(forward passes at once, math threads each).

        On torch, two passes of one thread each beat one pass of two threads on 2 cores: a pass
        waits at every operation for its slowest thread, so whatever else runs on a core (the
        event loop, a client) stalls both threads of a shared pass but only one lone pass.
        """
        threads = self.options.threads or os.cpu_count() or 1
        if self.options.forward_workers is not None:
            workers = min(self.options.forward_workers, threads)
        else:
            workers = 1 if self.options.backend == "onnx" else min(2, threads)
        return workers, max(1, threads // workers)

    def _thread_setter(self) -> Callable[[int], None] | None:
        """torch keeps its math-thread count per calling thread; onnxruntime fixes it at load."""
        if self.options.backend != "torch":
            return None
        from aios_serve.backends.torch_encoder import use_math_threads

        return use_math_threads

    async def start(self) -> None:
        forward = self._forward_scores if self.cross_encoder else self._forward_embeddings
        workers, threads_each = self.worker_layout()
        self._scheduler = BatchScheduler(
            forward=forward,
            length_of=len,
            max_batch_tokens=self.options.max_batch_tokens,
            max_batch_size=self.options.max_batch_size,
            max_queued_requests=self.options.max_queued_requests,
            micro_batch_tokens=self.options.micro_batch_tokens,
            name=self.spec.name,
            workers=workers,
            threads=workers * threads_each,
            set_threads=self._thread_setter(),
        )
        self._backend = await self._scheduler.run_blocking(partial(self._load, threads_each))
        self._scheduler.packed = self._backend.packs_sequences
        self._scheduler.start()

    async def stop(self) -> None:
        if self._scheduler is not None:
            await self._scheduler.stop()

    def _forward_embeddings(self, batch: list[EncodedInput]) -> np.ndarray:
        return self.backend.embed(batch)

    def _forward_scores(self, batch: list[EncodedInput]) -> np.ndarray:
        return self.backend.score(batch)

    # Tokenization ---------------------------------------------------------------

    def special_tokens(self, pair: bool = False) -> int:
        """How many special tokens the tokenizer adds to one text, or to a pair of texts."""
        return int(self.backend.tokenizer.num_special_tokens_to_add(pair=pair))

    def _check_lengths(self, rows: list[list[int]], pair: bool = False, side: PairSide | None = None) -> None:
        limit = self.max_model_len
        for index, row in enumerate(rows):
            if len(row) > limit:
                raise InputTooLong(len(row), limit, index, pair=pair, side=side)

    def _tokenize_texts(self, texts: list[str], keep: int | None, side: PairSide | None) -> TokenizedTexts:
        encoded = self.backend.tokenizer(
            texts,
            truncation=keep is not None,
            max_length=keep,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        ids: list[list[int]] = encoded["input_ids"]
        self._check_lengths(ids, side=side)
        return TokenizedTexts([EncodedInput(row) for row in ids])

    async def tokenize_texts(
        self, texts: list[str], keep: int | None, side: PairSide | None = None
    ) -> TokenizedTexts:
        """Each text as one input, cut to its first `keep` tokens (specials included) if given.
        Raises InputTooLong (with `side`, for relevance scoring) past the model's length."""
        if sum(len(text) for text in texts) <= INLINE_TOKENIZE_CHARS:
            return self._tokenize_texts(texts, keep, side)  # cheaper than a hop to a thread
        return await asyncio.to_thread(self._tokenize_texts, texts, keep, side)

    def token_id_inputs(self, rows: list[list[int]], keep: int | None) -> TokenizedTexts:
        """Inputs given as token ids: checked against the vocabulary, cut to `keep`, else as given."""
        vocab, limit = self.backend.vocab_size, self.max_model_len
        inputs: list[EncodedInput] = []
        for index, row in enumerate(rows):
            bad = next((token for token in row if not 0 <= token < vocab), None)
            if bad is not None:
                raise TokenOutOfVocabulary(bad, vocab, index)
            kept = list(row[:keep] if keep is not None else row)
            if len(kept) > limit:
                raise InputTooLong(len(kept), limit, index)
            inputs.append(EncodedInput(kept))
        return TokenizedTexts(inputs)

    def _tokenize_pairs(self, queries: list[str], documents: list[str], keep: int | None) -> TokenizedTexts:
        encoded = self.backend.tokenizer(
            queries,
            documents,
            truncation="longest_first" if keep is not None else False,
            max_length=keep,
            return_attention_mask=False,
            return_token_type_ids=True,
        )
        rows: list[list[int]] = encoded["input_ids"]
        types: list[list[int]] = encoded.get("token_type_ids") or [[0] * len(r) for r in rows]
        self._check_lengths(rows, pair=True, side="document")
        return TokenizedTexts([EncodedInput(r, t) for r, t in zip(rows, types, strict=True)])

    async def tokenize_pairs(
        self, queries: list[str], documents: list[str], keep: int | None
    ) -> TokenizedTexts:
        """Query-document pairs read together; truncation to `keep` cuts the longer side first."""
        return await asyncio.to_thread(self._tokenize_pairs, queries, documents, keep)

    def _clip_texts(self, texts: list[str], max_tokens: int) -> list[str]:
        encoded = self.backend.tokenizer(
            texts, add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False
        )
        clipped: list[str] = []
        for text, offsets in zip(texts, encoded["offset_mapping"], strict=True):
            clipped.append(text if len(offsets) <= max_tokens else text[: offsets[max_tokens - 1][1]])
        return clipped

    async def clip_texts(self, texts: list[str], max_tokens: int) -> list[str]:
        """Cut each text after its first `max_tokens` tokens, keeping the original characters."""
        return await asyncio.to_thread(self._clip_texts, texts, max_tokens)

    # Inference ------------------------------------------------------------------

    async def embed(self, texts: TokenizedTexts, dimensions: int | None = None) -> np.ndarray:
        """Normalized vectors, one row per input; `dimensions` cuts them (Matryoshka models)."""
        vectors = await self.scheduler.submit(texts.inputs)
        return vectors if dimensions is None else shortened_vectors(vectors, dimensions)

    async def score(self, pairs: TokenizedTexts) -> np.ndarray:
        """Cross-encoder scores for tokenized pairs."""
        return await self.scheduler.submit(pairs.inputs)
