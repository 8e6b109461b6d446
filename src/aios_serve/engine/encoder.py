"""The per-model encoder engine: tokenization off the loop, then the batching queue."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from aios_serve.backends.encoder_base import EncodedInput, EncoderBackend
from aios_serve.backends.torch_encoder import DType, TorchEncoderBackend, use_math_threads
from aios_serve.config import ModelSpec
from aios_serve.engine.batching import BatchScheduler
from aios_serve.errors import invalid
from aios_serve.models.bundled import resolve_bundled

# Short inputs tokenize in well under a millisecond: on the loop that beats a thread hand-off,
# which on a busy machine waits for a time slice. Longer inputs tokenize off the loop.
INLINE_TOKENIZE_CHARS = 2048


class EncoderOptions(BaseModel):
    """Per-model options for encoders, read from the config's `options`."""

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

    @model_validator(mode="after")
    def _onnx_runs_float32(self) -> EncoderOptions:
        if self.backend == "onnx" and self.dtype == "bfloat16":
            raise ValueError("backend onnx runs float32; dtype bfloat16 needs backend torch")
        return self


@dataclass(frozen=True)
class TokenizedTexts:
    """Inputs ready for the queue, with their real token count."""

    inputs: list[EncodedInput]

    @property
    def token_count(self) -> int:
        return sum(len(item) for item in self.inputs)


class EncoderModel:
    """An embedding model or a cross-encoder, served through one batching queue."""

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
            from aios_serve.backends.onnx_encoder import OnnxEncoderBackend  # only where configured

            return OnnxEncoderBackend(
                self._folder(),
                cross_encoder=self.cross_encoder,
                max_model_len=self.spec.max_model_len,
                threads=threads_each,
            )
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
            set_threads=use_math_threads if self.options.backend == "torch" else None,
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

    def truncation_length(self, truncate_prompt_tokens: int | None) -> int | None:
        """The k of `truncate_prompt_tokens` (-1 means the model's maximum), checked."""
        if truncate_prompt_tokens is None:
            return None
        limit = self.max_model_len
        if truncate_prompt_tokens == -1:
            return limit
        if truncate_prompt_tokens > limit:
            raise invalid(
                f"truncate_prompt_tokens value ({truncate_prompt_tokens}) is greater than "
                f"max_model_len ({limit}). Please select a smaller truncation size.",
                "truncate_prompt_tokens",
            )
        special = self.backend.tokenizer.num_special_tokens_to_add(pair=False)
        if truncate_prompt_tokens < max(special, 1):
            raise invalid(
                f"truncate_prompt_tokens ({truncate_prompt_tokens}) must keep at least the "
                f"{special} special tokens this model adds.",
                "truncate_prompt_tokens",
            )
        return truncate_prompt_tokens

    def _too_long(self, length: int, what: str, param: str) -> None:
        if length > self.max_model_len:
            raise invalid(
                f"This model's maximum context length is {self.max_model_len} tokens. However, "
                f"you requested {length} tokens in {what}. Please reduce the length of the input.",
                param,
            )

    def _tokenize_texts(self, texts: list[str], keep: int | None, param: str) -> TokenizedTexts:
        encoded = self.backend.tokenizer(
            texts,
            truncation=keep is not None,
            max_length=keep,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        ids: list[list[int]] = encoded["input_ids"]
        for index, row in enumerate(ids):
            self._too_long(len(row), f"{param}[{index}]", param)
        return TokenizedTexts([EncodedInput(row) for row in ids])

    async def tokenize_texts(
        self, texts: list[str], truncate: int | None, param: str = "input"
    ) -> TokenizedTexts:
        keep = self.truncation_length(truncate)
        if sum(len(text) for text in texts) <= INLINE_TOKENIZE_CHARS:
            return self._tokenize_texts(texts, keep, param)  # cheaper than a hop to a thread
        return await asyncio.to_thread(self._tokenize_texts, texts, keep, param)

    def token_id_inputs(self, rows: list[list[int]], truncate: int | None) -> TokenizedTexts:
        """Inputs given as token ids: checked against the vocabulary, kept as given."""
        keep = self.truncation_length(truncate)
        vocab = self.backend.vocab_size
        inputs: list[EncodedInput] = []
        for index, row in enumerate(rows):
            bad = next((token for token in row if not 0 <= token < vocab), None)
            if bad is not None:
                raise invalid(
                    f"input[{index}]: token id {bad} is outside the vocabulary (0..{vocab - 1}).", "input"
                )
            if keep is not None:
                row = row[:keep]
            self._too_long(len(row), f"input[{index}]", "input")
            inputs.append(EncodedInput(list(row)))
        return TokenizedTexts(inputs)

    def _tokenize_pairs(
        self, queries: list[str], documents: list[str], keep: int | None, param: str
    ) -> TokenizedTexts:
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
        for index, row in enumerate(rows):
            self._too_long(len(row), f"the pair with {param}[{index}]", param)
        return TokenizedTexts([EncodedInput(r, t) for r, t in zip(rows, types, strict=True)])

    async def tokenize_pairs(
        self, queries: list[str], documents: list[str], truncate: int | None, param: str = "documents"
    ) -> TokenizedTexts:
        """Query-document pairs read together; truncation cuts the longer side first."""
        keep = self.truncation_length(truncate)
        least = self.backend.tokenizer.num_special_tokens_to_add(pair=True) + 2
        if keep is not None and keep < least:
            raise invalid(
                f"truncate_prompt_tokens ({keep}) must leave room for both texts of a pair "
                f"(at least {least} tokens on this model).",
                "truncate_prompt_tokens",
            )
        return await asyncio.to_thread(self._tokenize_pairs, queries, documents, keep, param)

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

    async def embed(self, texts: TokenizedTexts) -> np.ndarray:
        """Normalized vectors, one row per input."""
        return await self.scheduler.submit(texts.inputs)

    async def score_pairs(self, pairs: TokenizedTexts) -> np.ndarray:
        """Cross-encoder scores for tokenized pairs."""
        return await self.scheduler.submit(pairs.inputs)
