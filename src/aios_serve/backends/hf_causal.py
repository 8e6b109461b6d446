"""The transformers backend: a local Hugging Face causal-LM folder behind the same interface as
llama.cpp. Each sequence keeps its own KV cache; a step runs the sequences one after another
(simpler batching than llama.cpp's, as the issue allows)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from aios_serve.backends.protocols.generation import BatchItem

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet, reversed: printable stand-in character to byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes, strict=True)}


_BYTE_DECODER = _byte_decoder()

_DTYPES = {
    "auto": torch.float32,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


class HfCausalModel:
    """A transformers causal LM (implements GenerationBackend)."""

    def __init__(
        self,
        path: Path,
        *,
        context_length: int | None,
        max_sequences: int,
        max_batch_tokens: int,
        n_threads: int,
        dtype: str = "auto",
    ) -> None:
        torch.set_num_threads(n_threads)
        self._tokenizer: Any = AutoTokenizer.from_pretrained(str(path))
        self._model: Any = AutoModelForCausalLM.from_pretrained(str(path), dtype=_DTYPES[dtype]).eval()
        config = self._model.config
        trained = int(getattr(config, "max_position_embeddings", 0) or 2048)
        self.context_length = min(context_length or trained, trained)
        self.max_sequences = max_sequences
        self.max_batch_tokens = max_batch_tokens
        self.needs_consecutive_sequences = False  # a cache object per sequence, run one by one
        self.mixes_prompt_and_decode = False
        self.n_vocab = int(self._model.get_output_embeddings().weight.shape[0])
        self._caches: dict[int, DynamicCache] = {}
        self._special_ids = set(self._tokenizer.all_special_ids)
        self._eog_ids = self._end_ids()
        self._pieces: dict[tuple[int, bool], bytes] = {}

    def _end_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (
            self._tokenizer.eos_token_id,
            getattr(self._model.generation_config, "eos_token_id", None),
        ):
            if isinstance(source, int):
                ids.add(source)
            elif isinstance(source, list):
                ids.update(int(i) for i in source)
        return ids

    @property
    def chat_template(self) -> str | None:
        template = getattr(self._tokenizer, "chat_template", None)
        return template if isinstance(template, str) else None

    @property
    def bos_token(self) -> str:
        return str(self._tokenizer.bos_token or "")

    @property
    def eos_token(self) -> str:
        return str(self._tokenizer.eos_token or "")

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def token_bytes(self, token_id: int, special: bool = False) -> bytes:
        key = (token_id, special)
        cached = self._pieces.get(key)
        if cached is None:
            cached = self._piece(token_id, special)
            self._pieces[key] = cached
        return cached

    def _piece(self, token_id: int, special: bool) -> bytes:
        token = self._tokenizer.convert_ids_to_tokens(token_id)
        if token is None:
            return b""
        if token_id in self._special_ids:
            return token.encode("utf-8") if special else b""
        match = _BYTE_TOKEN.fullmatch(token)
        if match:
            return bytes([int(match.group(1), 16)])
        if all(char in _BYTE_DECODER for char in token):
            return bytes(_BYTE_DECODER[char] for char in token)
        return token.replace("\u2581", " ").encode("utf-8")

    def detokenize(self, token_ids: list[int], skip_special: bool = True) -> str:
        return str(self._tokenizer.decode(token_ids, skip_special_tokens=skip_special))

    def is_end_of_generation(self, token_id: int) -> bool:
        return token_id in self._eog_ids

    @torch.inference_mode()
    def decode(self, items: list[BatchItem]) -> None:
        for item in items:
            seq_id = item.seq_ids[0]
            cache = self._caches.get(seq_id)
            if cache is None or item.start_pos == 0:
                cache = DynamicCache()
                self._caches[seq_id] = cache
            if cache.get_seq_length() != item.start_pos:
                raise RuntimeError(
                    f"sequence {seq_id} cache holds {cache.get_seq_length()} tokens, not {item.start_pos}"
                )
            input_ids = torch.tensor([item.tokens], dtype=torch.long)
            positions = torch.arange(item.start_pos, item.start_pos + len(item.tokens)).unsqueeze(0)
            out = self._model(
                input_ids=input_ids,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=0 if item.want_all_logits else 1,
            )
            if item.want_logits:
                item.logits = out.logits[0, -1].float().numpy().astype(np.float32)
            if item.want_all_logits:
                item.row_logits = list(out.logits[0].float().numpy().astype(np.float32))

    def reuse_prefix(self, seq_id: int, tokens: list[int]) -> int | None:
        return None  # no prefix cache

    def cells_in_use(self) -> int | None:
        return None  # no block pool

    def copy_sequence(self, source: int, target: int) -> None:
        self._caches[target] = copy.deepcopy(self._caches[source])

    def remove_sequence(self, seq_id: int) -> None:
        self._caches.pop(seq_id, None)

    def close(self) -> None:
        self._caches.clear()
