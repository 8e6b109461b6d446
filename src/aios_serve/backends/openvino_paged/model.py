"""OpenVINO's paged-attention model behind the GenerationBackend interface: our block pool
decides where every sequence's keys and values live, and one inference call runs a whole batch
(decode tokens and prompt chunks of any lengths together)."""

from __future__ import annotations

import logging
import os
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import numpy as np

from aios_serve.backends.llama_cpp.vocab import LlamaCppVocab
from aios_serve.backends.openvino_paged.blocks import BlockPool, Write
from aios_serve.backends.openvino_paged.cache import KvCache, block_size, blocks_for_budget, cache_layout
from aios_serve.backends.openvino_paged.ggml_ir import holds_ggml_matmuls
from aios_serve.backends.openvino_paged.ggml_kernels import library
from aios_serve.backends.openvino_paged.graph import LOGITS_INDICES, compile_paged
from aios_serve.backends.openvino_paged.mapped_file import releasing
from aios_serve.backends.openvino_paged.precision import described, zero_points
from aios_serve.backends.openvino_paged.weights import paged_ir
from aios_serve.backends.protocols.generation import BatchItem, Logits

log = logging.getLogger("aios_serve.backends.openvino_paged")

FEW_ROWS = 4
"""Steps of fewer tokens than this run on the few-rows model (ggml's kernels), when there is one:
ggml's kernels take one row at a time below 4 (ggml_matmul.cpp), where they lead OpenVINO's."""


class OpenVinoPagedModel(LlamaCppVocab):
    """A GGUF model on OpenVINO's paged attention (implements GenerationBackend).

    `path` is the GGUF file whose vocabulary and chat template we serve (llama.cpp reads them,
    no weights); `ir` is the model to compile (weights.paged_ir; default: `path`'s own blocks).
    `num_blocks` overrides the `kv_cache_gb` budget; an IR with ggml's MatMuls is compiled with
    `ggml_library` (default: ggml_kernels.library()). Without `dynamic_quantization` at f32 a
    row's logits do not depend on the rest of the batch (precision.py). With `few_rows_ir` (an IR
    with ggml's MatMuls), steps of fewer than `FEW_ROWS` tokens run on that model instead, over
    the same KV cache: ggml's kernels for one to three rows, OpenVINO's for the rest.
    """

    def __init__(
        self,
        path: Path,
        *,
        ir: Path | None = None,
        context_length: int | None,
        max_sequences: int,
        max_batch_tokens: int,
        n_threads: int | None = None,
        precision: str = "f32",
        dynamic_quantization: bool = False,
        kv_cache_precision: str = "u8",
        kv_cache_gb: float = 1.0,
        num_blocks: int | None = None,
        prefix_caching: bool = True,
        ggml_library: Path | None = None,
        few_rows_ir: Path | None = None,
    ) -> None:
        super().__init__(path, vocab_only=True)
        trained = self.trained_context
        self.context_length = min(context_length or trained, trained)
        self.max_sequences = max_sequences
        self.max_batch_tokens = max_batch_tokens
        self.needs_consecutive_sequences = False  # block tables: any ids run in one pass
        self.mixes_prompt_and_decode = True  # prompt chunks of any lengths join decode tokens
        self.xml = ir or paged_ir(path, "gguf", zero_points(precision, dynamic_quantization))[0]
        threads = n_threads or os.cpu_count() or 1
        if ggml_library is None and (few_rows_ir or holds_ggml_matmuls(self.xml)):
            ggml_library = library()
            if ggml_library is None:
                raise RuntimeError(
                    f"{few_rows_ir or self.xml} multiplies with ggml's kernels, not available here"
                )
        compile_for_cpu = partial(
            compile_paged,
            threads=threads,
            precision=precision,
            dynamic_quantization=dynamic_quantization,
            kv_cache=kv_cache_precision,
            ggml_library=ggml_library,
        )
        paged = compile_for_cpu(self.xml)
        self.ggml_threads = threads if ggml_library else 0
        """The plugin threads that ggml's kernels run on (ggml_kernels.py); 0: OpenVINO multiplies."""
        self.precision = paged.precision
        """INFERENCE_PRECISION_HINT as the compiled model reports it."""
        self.quantized_group = paged.dynamic_quantization
        """Activations quantized to int8 per this many values; 0: not quantized."""
        self.gathers_logits = paged.gathers_logits
        self._request = paged.compiled.create_infer_request()
        blocks = num_blocks or blocks_for_budget(paged.compiled, kv_cache_gb)
        self.cache = KvCache(paged.compiled, blocks)
        if self.cache.element_type != paged.kv_cache:
            raise RuntimeError(f"KV cache asked in {paged.kv_cache}, compiled in {self.cache.element_type}")
        self._few_rows_request = None
        if few_rows_ir is not None:
            few_rows = compile_for_cpu(few_rows_ir)
            if (
                cache_layout(few_rows.compiled) != cache_layout(paged.compiled)
                or few_rows.gathers_logits != self.gathers_logits
            ):
                raise RuntimeError(f"{few_rows_ir} does not take {self.xml}'s KV cache and inputs")
            self._few_rows_request = few_rows.compiled.create_infer_request()
        requests = [r for r in (self._request, self._few_rows_request) if r is not None]
        for name, tensor in self.cache.tensors.items():  # bound once: each call passes the rest
            for request in requests:
                request.set_tensor(name, tensor)
        self.pool = BlockPool(blocks, block_size(paged.compiled), prefix_caching)
        self.kv_cells = blocks * self.pool.block_size
        with ExitStack() as weights_read_once:
            for xml in dict.fromkeys((self.xml, few_rows_ir or self.xml)):  # each file once
                weights_read_once.enter_context(releasing(xml.with_suffix(".bin")))
            self._warm_up()  # a prompt on the model for many rows, a decode step on the one for few
        log.info(
            "OpenVINO paged model %s: %s (int8 activations per %d; 0: off), %d layers, KV %s in %d "
            "blocks of %d (%.2f GB)",
            path.name,
            self.precision,
            self.quantized_group,
            self.cache.layers,
            self.cache.element_type,
            blocks,
            self.pool.block_size,
            self.cache.nbytes / (1 << 30),
        )

    def _warm_up(self) -> None:
        """A short prompt and one decode step, on a sequence freed after: the CPU plugin copies
        each MatMul's weights on its first run, for a prompt's rows and for one row, which the
        first request then need not wait for. Under one block of tokens, so that nothing
        enters the prefix cache."""
        tokens = [0] * max(1, min(self.pool.block_size // 2, self.max_batch_tokens))
        seq_id = self.max_sequences  # not one the engine hands out while loading
        prompt = BatchItem(tokens, 0, [seq_id])
        self.decode([prompt])
        self.decode([BatchItem(tokens[:1], len(tokens), [seq_id])])
        self.remove_sequence(seq_id)

    def describe(self, asked: str = "") -> str:
        """The compiled precision (and the option that `asked` for it) and the cache, for logs,
        the start-up banner and benchmarks."""
        caching = "on" if self.pool.prefix_caching else "off"
        shown = described(asked, self.precision, self.quantized_group)
        if self.ggml_threads:
            below = f" below {FEW_ROWS} rows" if self._few_rows_request else ""
            shown += f", matmuls ggml's{below} ({self.ggml_threads} threads)"
        return (
            f"{shown}, KV {self.cache.element_type} "
            f"{self.pool.num_blocks}x{self.pool.block_size} cells, prefix caching {caching}"
        )

    # --- decoding -------------------------------------------------------------------------

    def decode(self, items: list[BatchItem]) -> None:
        """One inference call for every item; an item with several sequence ids feeds its
        tokens once per sequence (logits from the first)."""
        items = [item for item in items if item.tokens]
        if not items:
            return
        total = sum(len(item.tokens) * len(item.seq_ids) for item in items)
        if total > self.max_batch_tokens:
            raise ValueError(f"batch of {total} tokens exceeds {self.max_batch_tokens}")
        writes = [
            Write(seq_id, item.start_pos, tuple(item.tokens)) for item in items for seq_id in item.seq_ids
        ]
        self.cache.copy_blocks(self.pool.reserve(writes))  # KvCacheFull here changes nothing
        inputs, rows = self._inputs(items, writes)
        request = self._few_rows_request if total < FEW_ROWS and self._few_rows_request else self._request
        request.infer(inputs)
        self.pool.commit()  # the filled blocks now hold their keys and values
        logits = np.array(request.get_tensor("logits").data, dtype=np.float32)
        logits = logits.reshape(-1, self.n_vocab)
        if not self.gathers_logits:
            logits = logits[np.concatenate([r for r in rows.values()])] if rows else logits[:0]
        self._hand_out(items, rows, logits)

    def _inputs(
        self, items: list[BatchItem], writes: list[Write]
    ) -> tuple[dict[str, np.ndarray], dict[int, np.ndarray]]:
        """The model's inputs for these writes, and per item the batch rows it wants logits of."""
        ids: list[int] = []
        positions: list[np.ndarray] = []
        begins = [0]
        block_begins = [0]
        blocks: list[int] = []
        rows: dict[int, np.ndarray] = {}
        writes_left = iter(writes)
        for k, item in enumerate(items):
            n = len(item.tokens)
            for j, _ in enumerate(item.seq_ids):
                write = next(writes_left)
                first = begins[-1]
                if j == 0 and item.want_all_logits:
                    rows[k] = np.arange(first, first + n)
                elif j == 0 and item.want_logits:
                    rows[k] = np.array([first + n - 1])
                ids += item.tokens
                positions.append(np.arange(item.start_pos, item.start_pos + n))
                begins.append(first + n)
                table = self.pool.table(write.seq_id)
                blocks += table
                block_begins.append(block_begins[-1] + len(table))
        inputs: dict[str, np.ndarray] = {
            "input_ids": np.array(ids, np.int64),
            "position_ids": np.concatenate(positions).astype(np.int64),
            "past_lens": np.array([w.start for w in writes], np.int32),
            "subsequence_begins": np.array(begins, np.int32),
            "block_indices_begins": np.array(block_begins, np.int32),
            "block_indices": np.array(blocks, np.int32),
            "max_context_len": np.array(max(w.start + w.count for w in writes), np.int32),
        }
        if self.gathers_logits:
            wanted = np.concatenate(list(rows.values())) if rows else np.zeros(1, np.int64)
            inputs[LOGITS_INDICES] = wanted.astype(np.int64)
        return inputs, rows

    def _hand_out(self, items: list[BatchItem], rows: dict[int, np.ndarray], logits: np.ndarray) -> None:
        """Give each item its rows of `logits` (which hold only the wanted rows, in order)."""
        at = 0
        for k, item in enumerate(items):
            if k not in rows:
                continue
            mine: Logits = logits[at : at + len(rows[k])]
            at += len(rows[k])
            if item.want_logits:
                item.logits = mine[-1].copy()
            if item.want_all_logits:
                item.row_logits = list(mine)

    def reuse_prefix(self, seq_id: int, tokens: list[int]) -> int | None:
        return self.pool.reuse_prefix(seq_id, tokens) if self.pool.prefix_caching else None

    def cells_in_use(self) -> int | None:
        return self.pool.used_blocks * self.pool.block_size

    def copy_sequence(self, source: int, target: int) -> None:
        self.pool.copy_sequence(source, target)

    def remove_sequence(self, seq_id: int) -> None:
        self.pool.remove_sequence(seq_id)

    def close(self) -> None:
        self._request = self._few_rows_request = None
        super().close()
