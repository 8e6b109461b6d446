"""A thin wrapper over llama-cpp-python's low-level bindings: one model, one multi-sequence
context with a unified KV cache, batched decode, tokenizer and GGUF metadata."""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from pathlib import Path

import llama_cpp.llama_cpp as llama
import numpy as np

from aios_serve.engine.generation.backend import BatchItem, KvCacheFull, Logits

log = logging.getLogger("aios_serve.backends.llama_cpp")

_backend_lock = threading.Lock()
_backend_ready = False


@llama.llama_log_callback
def _quiet_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """Forward llama.cpp's errors to our logger and drop its chatter."""
    if level == 4:  # GGML_LOG_LEVEL_ERROR
        log.error("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())


def init_backend() -> None:
    """Initialise llama.cpp once per process, with its logging routed to ours."""
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            llama.llama_log_set(_quiet_log, ctypes.c_void_p(0))
            llama.llama_backend_init()
            _backend_ready = True
            _warn_about_openmp()


def _warn_about_openmp() -> None:
    """An OpenMP build shares torch's wait policy; PASSIVE slows its decoding 2-3x."""
    info = llama.llama_print_system_info().decode("utf-8", "replace")
    if "OPENMP = 1" in info and os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        log.warning(
            "llama.cpp was built with OpenMP and runs under OMP_WAIT_POLICY=PASSIVE, which makes "
            "it decode 2-3x slower; reinstall llama-cpp-python with CMAKE_ARGS=-DGGML_OPENMP=OFF "
            "(as `make setup` does) or set OMP_WAIT_POLICY=ACTIVE"
        )


class LlamaCppError(RuntimeError):
    """llama.cpp refused to load or decode."""


class LlamaCppModel:
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
        init_backend()
        model_params = llama.llama_model_default_params()
        model_params.n_gpu_layers = 0
        self._model = llama.llama_model_load_from_file(str(path).encode(), model_params)
        if not self._model:
            raise LlamaCppError(f"llama.cpp could not load {path}")
        self._vocab = llama.llama_model_get_vocab(self._model)
        self.n_vocab = int(llama.llama_vocab_n_tokens(self._vocab))
        trained = int(llama.llama_model_n_ctx_train(self._model))
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
        self._piece_cache: dict[tuple[int, bool], bytes] = {}
        self._metadata = self._read_metadata()
        self._bos_id = int(llama.llama_vocab_bos(self._vocab))
        self._eos_id = int(llama.llama_vocab_eos(self._vocab))

    # --- metadata -------------------------------------------------------------------------

    def _read_metadata(self) -> dict[str, str]:
        out: dict[str, str] = {}
        buf = ctypes.create_string_buffer(1 << 20)
        for i in range(int(llama.llama_model_meta_count(self._model))):
            if llama.llama_model_meta_key_by_index(self._model, i, buf, len(buf)) < 0:
                continue
            key = buf.value.decode("utf-8", "replace")
            if key.startswith("tokenizer.ggml.") and key.endswith(("tokens", "merges", "type")):
                continue
            length = llama.llama_model_meta_val_str_by_index(self._model, i, buf, len(buf))
            if length >= 0:
                out[key] = buf.value.decode("utf-8", "replace")
        return out

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self._metadata)

    @property
    def chat_template(self) -> str | None:
        return self._metadata.get("tokenizer.chat_template")

    @property
    def bos_token(self) -> str:
        return self._special_text(self._bos_id)

    @property
    def eos_token(self) -> str:
        return self._special_text(self._eos_id)

    def _special_text(self, token_id: int) -> str:
        if token_id < 0:
            return ""
        return self.token_bytes(token_id, special=True).decode("utf-8", "replace")

    # --- tokenizer ------------------------------------------------------------------------

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 8
        while True:
            buf = (llama.llama_token * capacity)()
            n = llama.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_special, True)
            if n >= 0:
                return list(buf[:n])
            capacity = -n

    def token_bytes(self, token_id: int, special: bool = False) -> bytes:
        key = (token_id, special)
        cached = self._piece_cache.get(key)
        if cached is not None:
            return cached
        buf = ctypes.create_string_buffer(64)
        n = llama.llama_token_to_piece(self._vocab, token_id, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama.llama_token_to_piece(self._vocab, token_id, buf, len(buf), 0, special)
        piece = buf.raw[:n]
        self._piece_cache[key] = piece
        return piece

    def detokenize(self, token_ids: list[int], skip_special: bool = True) -> str:
        return b"".join(self.token_bytes(t, special=not skip_special) for t in token_ids).decode(
            "utf-8", "replace"
        )

    def is_end_of_generation(self, token_id: int) -> bool:
        return bool(llama.llama_vocab_is_eog(self._vocab, token_id))

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

    def copy_sequence(self, source: int, target: int) -> None:
        llama.llama_memory_seq_cp(self._memory, source, target, -1, -1)

    def remove_sequence(self, seq_id: int) -> None:
        llama.llama_memory_seq_rm(self._memory, seq_id, -1, -1)

    def close(self) -> None:
        if self._ctx:
            llama.llama_batch_free(self._batch)
            llama.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            llama.llama_model_free(self._model)
            self._model = None
