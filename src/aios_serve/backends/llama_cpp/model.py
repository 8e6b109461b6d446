"""llama.cpp's decoding context over a GGUF model: one multi-sequence context (a KV cache per
sequence, or one unified cache), batched decode, and the tokenizer it inherits."""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import llama_cpp.llama_cpp as llama
import numpy as np

from aios_serve.backends.llama_cpp.vocab import LlamaCppError, LlamaCppVocab
from aios_serve.backends.protocols.generation import BatchItem, KvCacheFull, Logits

log = logging.getLogger("aios_serve.backends.llama_cpp")


class LlamaCppModel(LlamaCppVocab):
    """A GGUF model and its decoding context (implements GenerationBackend)."""

    def __init__(
        self,
        path: Path,
        *,
        context_length: int | None,
        kv_cells: int | None,
        max_sequences: int,
        max_batch_tokens: int,
        n_threads: int,
        n_threads_batch: int,
        flash_attn: bool | None = None,
        kv_unified: bool = False,
    ) -> None:
        super().__init__(path, vocab_only=False)
        trained = self.trained_context
        self.context_length = min(context_length or trained, trained)
        # Per-sequence caches (kv_unified off) keep batched logits equal to single-stream ones;
        # a unified cache shares its cells between sequences but mixes them in attention.
        if kv_unified:
            cells = max(kv_cells or self.context_length, self.context_length)
        else:
            cells = self.context_length * max_sequences
        self.max_sequences = max_sequences
        self.max_batch_tokens = max_batch_tokens

        params = llama.llama_context_default_params()
        params.n_ctx = cells
        params.n_batch = max_batch_tokens
        params.n_ubatch = min(max_batch_tokens, 512)
        params.n_seq_max = max_sequences
        params.n_threads = n_threads
        params.n_threads_batch = n_threads_batch
        params.kv_unified = kv_unified
        params.no_perf = True
        if flash_attn is not None:
            params.flash_attn_type = 1 if flash_attn else 0
        self._ctx = llama.llama_init_from_model(self._model, params)
        if not self._ctx:
            llama.llama_model_free(self._model)
            raise LlamaCppError(f"llama.cpp could not create a context for {path}")
        self._memory = llama.llama_get_memory(self._ctx)
        self.kv_cells = int(llama.llama_n_ctx(self._ctx))
        self.kv_unified = kv_unified
        # llama.cpp splits a batch over per-sequence caches into runs of consecutive ids
        self.needs_consecutive_sequences = not kv_unified
        self.mixes_prompt_and_decode = False  # kernels differ by rows per sequence: passes apart
        if not kv_unified:
            self.context_length = min(self.context_length, int(llama.llama_n_ctx_seq(self._ctx)))
        self._batch = llama.llama_batch_init(max_batch_tokens, 0, max_sequences)
        self._batch_tokens = np.ctypeslib.as_array(self._batch.token, shape=(max_batch_tokens,))
        self._batch_pos = np.ctypeslib.as_array(self._batch.pos, shape=(max_batch_tokens,))
        self._batch_nseq = np.ctypeslib.as_array(self._batch.n_seq_id, shape=(max_batch_tokens,))
        self._batch_logits = np.ctypeslib.as_array(
            ctypes.cast(self._batch.logits, ctypes.POINTER(ctypes.c_int8)),
            shape=(max_batch_tokens,),
        )

    # --- decoding -------------------------------------------------------------------------

    def decode(self, items: list[BatchItem]) -> None:
        total = sum(len(item.tokens) for item in items)
        if total == 0:
            return
        if total > self.max_batch_tokens:
            raise ValueError(f"batch of {total} tokens exceeds {self.max_batch_tokens}")
        batch = self._batch
        rows: list[tuple[BatchItem, int]] = []
        i = 0
        for item in items:
            n = len(item.tokens)
            self._batch_tokens[i : i + n] = item.tokens
            self._batch_pos[i : i + n] = np.arange(item.start_pos, item.start_pos + n)
            self._batch_nseq[i : i + n] = len(item.seq_ids)
            self._batch_logits[i : i + n] = 1 if item.want_all_logits else 0
            for row in range(i, i + n):
                seq_row = batch.seq_id[row]
                for j, seq_id in enumerate(item.seq_ids):
                    seq_row[j] = seq_id
            if item.want_logits or item.want_all_logits:
                self._batch_logits[i + n - 1] = 1
                rows.append((item, i))
            i += n
        batch.n_tokens = total
        status = llama.llama_decode(self._ctx, batch)
        if status == 1:
            raise KvCacheFull("no free KV cache cells for this batch")
        if status != 0:
            raise LlamaCppError(f"llama_decode failed with status {status}")
        for item, first in rows:
            last = first + len(item.tokens) - 1
            if item.want_logits:
                item.logits = self._row_logits(last).copy()
            if item.want_all_logits:
                item.row_logits = [self._row_logits(row) for row in range(first, last + 1)]

    def _row_logits(self, row: int) -> Logits:
        """A view of llama.cpp's logits for one batch row (valid until the next decode)."""
        ptr = llama.llama_get_logits_ith(self._ctx, row)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def reuse_prefix(self, seq_id: int, tokens: list[int]) -> int | None:
        return None  # no prefix cache

    def cells_in_use(self) -> int | None:
        return None  # no block pool

    def copy_sequence(self, source: int, target: int) -> None:
        llama.llama_memory_seq_cp(self._memory, source, target, -1, -1)

    def remove_sequence(self, seq_id: int) -> None:
        llama.llama_memory_seq_rm(self._memory, seq_id, -1, -1)

    def close(self) -> None:
        if self._ctx:
            llama.llama_batch_free(self._batch)
            llama.llama_free(self._ctx)
            self._ctx = None
        super().close()
