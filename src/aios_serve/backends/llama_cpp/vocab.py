"""A GGUF model's tokenizer and metadata through llama.cpp: the weights are optional, so the
server process can tokenize for an engine that runs elsewhere (a worker, OpenVINO)."""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from pathlib import Path

import llama_cpp.llama_cpp as llama

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


class LlamaCppVocab:
    """A GGUF file's vocabulary, chat template and metadata (implements Vocabulary).

    With `vocab_only` llama.cpp reads the tokenizer and metadata but no tensors.
    """

    def __init__(self, path: Path, *, vocab_only: bool = True) -> None:
        init_backend()
        model_params = llama.llama_model_default_params()
        model_params.n_gpu_layers = 0
        model_params.vocab_only = vocab_only
        self._model = llama.llama_model_load_from_file(str(path).encode(), model_params)
        if not self._model:
            raise LlamaCppError(f"llama.cpp could not load {path}")
        self._vocab = llama.llama_model_get_vocab(self._model)
        self.n_vocab = int(llama.llama_vocab_n_tokens(self._vocab))
        self._piece_cache: dict[tuple[int, bool], bytes] = {}
        self._metadata = self._read_metadata()
        self.trained_context = int(llama.llama_model_n_ctx_train(self._model)) or self._context_in_metadata()
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

    def _context_in_metadata(self) -> int:
        """`<architecture>.context_length` (llama.cpp leaves n_ctx_train at 0 without weights)."""
        architecture = self._metadata.get("general.architecture", "")
        return int(self._metadata.get(f"{architecture}.context_length", "0") or 0)

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

    def close(self) -> None:
        if self._model:
            llama.llama_model_free(self._model)
            self._model = None
