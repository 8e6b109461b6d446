"""A GGUF model's vocabulary (no weights) for grammar tests: llama.cpp's tokenizer, loaded with
`vocab_only`, and the ConstraintVocab built from it."""

from __future__ import annotations

import ctypes
from functools import lru_cache

import llama_cpp.llama_cpp as llama

from aios_serve.engine.generation.constraints import ConstraintVocab
from aios_serve.models.bundled import resolve_bundled


class GgufVocab:
    """Tokenize / detokenize with a model's real vocabulary."""

    def __init__(self, bundled_name: str) -> None:
        llama.llama_backend_init()
        params = llama.llama_model_default_params()
        params.vocab_only = True
        path = str(resolve_bundled(bundled_name)).encode()
        self._model = llama.llama_model_load_from_file(path, params)
        assert self._model, f"cannot load {bundled_name}"
        self.vocab = llama.llama_model_get_vocab(self._model)
        self.n_vocab = int(llama.llama_vocab_n_tokens(self.vocab))
        self.eog_ids = [t for t in range(self.n_vocab) if llama.llama_vocab_is_eog(self.vocab, t)]
        self._pieces: dict[tuple[int, bool], bytes] = {}

    def tokenize(self, text: str) -> list[int]:
        data = text.encode()
        buf = (llama.llama_token * (len(data) + 8))()
        n = llama.llama_tokenize(self.vocab, data, len(data), buf, len(data) + 8, False, True)
        assert n >= 0
        return list(buf[:n])

    def piece(self, token_id: int, special: bool = False) -> bytes:
        key = (token_id, special)
        if key not in self._pieces:
            buf = ctypes.create_string_buffer(256)
            n = llama.llama_token_to_piece(self.vocab, token_id, buf, 256, 0, special)
            self._pieces[key] = buf.raw[: max(n, 0)]
        return self._pieces[key]

    def detokenize(self, ids: list[int]) -> str:
        return b"".join(self.piece(t) for t in ids).decode("utf-8", "replace")

    def constraint_vocab(self) -> ConstraintVocab:
        return ConstraintVocab(
            self.n_vocab,
            lambda t: self.piece(t),
            lambda t: self.piece(t, special=True),
            self.eog_ids,
            lambda data: self.tokenize(data.decode("utf-8", "replace")),
        )


@lru_cache(maxsize=2)
def gguf_vocab(bundled_name: str) -> tuple[GgufVocab, ConstraintVocab]:
    vocab = GgufVocab(bundled_name)
    return vocab, vocab.constraint_vocab()
