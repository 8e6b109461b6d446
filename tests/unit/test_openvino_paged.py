"""The OpenVINO paged-attention backend on the bundled SmolLM2 GGUF: its block pool, the backend
driven directly, and LocalEngine over it (no server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

pytest.importorskip("openvino_genai")

from aios_serve.backends.llama_cpp import LlamaCppModel
from aios_serve.backends.openvino_paged import BlockPool, OpenVinoPagedModel, Write, paged_ir, precision
from aios_serve.backends.openvino_paged.mapped_file import release, resident_bytes
from aios_serve.backends.protocols.generation import BatchItem, KvCacheFull
from aios_serve.engine.generation import fidelity
from aios_serve.engine.generation.factory import EngineSpec, open_engine
from aios_serve.engine.generation.local import LocalEngine
from aios_serve.engine.generation.sampling import SamplingParams
from aios_serve.models.bundled import resolve_bundled

SMOL = "smollm2-135m-instruct"


def _chat(vocab: Any, text: str) -> list[int]:
    ids: list[int] = vocab.tokenize(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n", True)
    return ids


def _backend(**overrides: Any) -> OpenVinoPagedModel:
    path = resolve_bundled(SMOL)
    ir, route = paged_ir(path, "gguf", zero_points=False)  # the IR plain f32 compiles
    assert route == "own-blocks, no zero points"  # Q4_1 and Q8_0 tensors
    settings: dict[str, Any] = {
        "ir": ir,
        "context_length": 2048,
        "max_sequences": 8,
        "max_batch_tokens": 512,
        "n_threads": 2,
        "precision": "f32",  # and no int8 activations: `batch_invariant`'s settings
        "kv_cache_precision": precision.kv_cache(batch_invariant=True),
        "num_blocks": 64,
    }
    settings.update(overrides)
    return OpenVinoPagedModel(path, **settings)


@pytest.fixture(scope="module")
def model() -> Iterator[OpenVinoPagedModel]:
    backend = _backend()
    yield backend
    backend.close()


# --- the block pool -----------------------------------------------------------------------


def test_pool_shares_full_blocks_and_copies_the_partial_one() -> None:
    pool = BlockPool(num_blocks=8, block_size=4)
    assert pool.reserve([Write(0, 0, tuple(range(6)))]) == []  # 2 blocks, the second partial
    pool.copy_sequence(0, 1)
    shared = pool.table(0)
    assert pool.table(1) == shared and [pool.refs(b) for b in shared] == [2, 2]
    copies = pool.reserve([Write(0, 6, (6,)), Write(1, 6, (7,))])
    assert copies == [(shared[1], pool.table(0)[1])]  # the first writer copies, the last writes in place
    assert pool.table(1) == shared and pool.table(0)[0] == shared[0]
    assert pool.refs(shared[0]) == 2 and pool.refs(shared[1]) == 1
    pool.remove_sequence(0)
    pool.remove_sequence(1)
    assert pool.free_blocks == 8


def test_pool_full_changes_nothing() -> None:
    pool = BlockPool(num_blocks=3, block_size=4)
    pool.reserve([Write(0, 0, tuple(range(8)))])
    table = pool.table(0)
    with pytest.raises(KvCacheFull):
        pool.reserve([Write(1, 0, (1, 2)), Write(0, 8, (9,))])
    assert pool.table(0) == table and pool.length(0) == 8 and pool.table(1) == [] and pool.free_blocks == 1
    with pytest.raises(ValueError):
        pool.reserve([Write(0, 5, (5,))])  # not at the sequence's end


def test_pool_reuses_a_cached_prefix_until_its_blocks_are_taken() -> None:
    pool = BlockPool(num_blocks=4, block_size=4)
    prompt = list(range(10, 20))  # two full blocks and a partial one
    pool.reserve([Write(0, 0, tuple(prompt))])
    assert pool.reuse_prefix(1, prompt) == 0  # the pass has not run: nothing is published
    pool.commit()
    first = pool.table(0)
    assert pool.cached_blocks == 2
    pool.remove_sequence(0)
    assert pool.free_blocks == 4 and pool.cached_blocks == 2  # free, and still cached
    assert pool.reuse_prefix(1, [*prompt[:8], 99]) == 8
    assert pool.table(1) == first[:2] and pool.length(1) == 8 and pool.free_blocks == 2
    assert pool.reuse_prefix(2, prompt[:8]) == 4  # one token is left to run
    assert pool.reuse_prefix(3, [10, 11, 12, 0, *prompt[4:]]) == 0  # a key names the whole prefix
    assert pool.refs(first[0]) == 2
    pool.reserve([Write(1, 8, (99,))])  # continues in a block of its own
    assert pool.table(1)[:2] == first[:2] and pool.refs(first[1]) == 1
    for seq in (1, 2):
        pool.remove_sequence(seq)
    pool.reserve([Write(4, 0, tuple(range(100, 116)))])  # every block: the cached ones are evicted
    pool.commit()
    assert pool.reuse_prefix(5, prompt) == 0 and pool.cached_blocks == 4


def test_pool_without_prefix_caching_reuses_nothing() -> None:
    pool = BlockPool(num_blocks=4, block_size=4, prefix_caching=False)
    pool.reserve([Write(0, 0, tuple(range(9)))])
    pool.commit()
    pool.remove_sequence(0)
    assert pool.reuse_prefix(1, list(range(9))) == 0 and pool.cached_blocks == 0


# --- the backend --------------------------------------------------------------------------


def _greedy(
    model: OpenVinoPagedModel, prompts: list[list[int]], tokens: int, join_at: list[int]
) -> list[list[int]]:
    """Greedy decoding of every prompt on its own sequence; prompt i joins at step join_at[i],
    so prompt chunks share a call with other sequences' decode tokens."""
    out: list[list[int]] = [[] for _ in prompts]
    steps = 0
    while any(len(o) < tokens for o in out):
        items: list[BatchItem] = []
        owners: list[int] = []
        for i, prompt in enumerate(prompts):
            if join_at[i] > steps or len(out[i]) >= tokens:
                continue
            if not out[i]:
                items.append(BatchItem(list(prompt), 0, [i + 2]))
            else:
                items.append(BatchItem([out[i][-1]], len(prompt) + len(out[i]) - 1, [i + 2]))
            owners.append(i)
        model.decode(items)
        for item, i in zip(items, owners, strict=True):
            assert item.logits is not None
            out[i].append(int(item.logits.argmax()))
        steps += 1
    for i in range(len(prompts)):
        model.remove_sequence(i + 2)
    return out


def test_batched_greedy_equals_alone(model: OpenVinoPagedModel) -> None:
    assert model.precision == "f32" and model.quantized_group == 0 and model.gathers_logits
    prompts = [
        _chat(model, t) for t in ("What is the capital of France?", "Write a haiku.", "Name a colour.")
    ]
    together = _greedy(model, prompts, 12, join_at=[0, 3, 5])
    alone = [_greedy(model, [p], 12, join_at=[0])[0] for p in prompts]
    print(f"\nbatched {together}\nalone   {alone}")
    assert together == alone
    assert model.pool.free_blocks == model.pool.num_blocks


def test_all_logits_rows_match_last(model: OpenVinoPagedModel) -> None:
    prompt = _chat(model, "List three fruits.")
    every = BatchItem(list(prompt), 0, [0], want_all_logits=True)
    last = BatchItem(list(prompt), 0, [1])
    try:
        model.decode([every, last])
    finally:
        model.remove_sequence(0)
        model.remove_sequence(1)
    assert every.row_logits is not None and len(every.row_logits) == len(prompt)
    assert every.logits is not None and last.logits is not None
    np.testing.assert_allclose(every.row_logits[-1], last.logits, atol=1e-4)
    np.testing.assert_allclose(every.logits, last.logits, atol=1e-4)


def test_copy_on_write_keeps_choices_apart(model: OpenVinoPagedModel) -> None:
    prompt = _chat(model, "Tell me a joke about cats and dogs, please.")
    assert len(prompt) % model.pool.block_size != 0
    try:
        model.decode([BatchItem(list(prompt), 0, [0], want_logits=False)])
        model.copy_sequence(0, 1)
        x, y = 100, 200
        a, b = BatchItem([x], len(prompt), [0]), BatchItem([y], len(prompt), [1])
        model.decode([a, b])
        shared = set(model.pool.table(0)) & set(model.pool.table(1))
        assert len(shared) == len(prompt) // model.pool.block_size  # the full blocks only
        # the same prompt on two sequences of their own, then the same two tokens: same passes
        model.decode([BatchItem(list(prompt), 0, [2], want_logits=False)])
        model.decode([BatchItem(list(prompt), 0, [3], want_logits=False)])
        fresh_a, fresh_b = BatchItem([x], len(prompt), [2]), BatchItem([y], len(prompt), [3])
        model.decode([fresh_a, fresh_b])
        assert a.logits is not None and fresh_a.logits is not None
        assert b.logits is not None and fresh_b.logits is not None
        np.testing.assert_allclose(a.logits, fresh_a.logits, atol=1e-4)
        np.testing.assert_allclose(b.logits, fresh_b.logits, atol=1e-4)
        assert float(np.abs(a.logits - b.logits).max()) > 0.5
    finally:
        for seq in range(4):
            model.remove_sequence(seq)
    assert model.pool.free_blocks == model.pool.num_blocks


def test_a_reused_prefix_gives_the_logits_of_a_full_prefill(model: OpenVinoPagedModel) -> None:
    shared = _chat(model, "Summarise the plot of a long novel about the sea. " * 10)
    assert len(shared) > 3 * model.pool.block_size
    question = model.tokenize("And who is the captain?", False)
    try:
        model.decode([BatchItem(list(shared), 0, [0], want_logits=False)])
        model.remove_sequence(0)
        reused = model.reuse_prefix(1, [*shared, *question])
        assert reused == len(shared) // model.pool.block_size * model.pool.block_size
        cached = BatchItem([*shared, *question][reused:], reused, [1])
        fresh = BatchItem([*shared, *question], 0, [2])
        model.decode([cached])
        model.decode([fresh])
        assert cached.logits is not None and fresh.logits is not None
        np.testing.assert_allclose(cached.logits, fresh.logits, atol=1e-3)
        assert int(cached.logits.argmax()) == int(fresh.logits.argmax())
    finally:
        for seq in range(3):
            model.remove_sequence(seq)
    assert model.pool.free_blocks == model.pool.num_blocks


# --- LocalEngine over it ------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(model: OpenVinoPagedModel) -> AsyncIterator[LocalEngine]:
    local = LocalEngine(model, name=SMOL, engine_name="openvino", kv_cells=model.kv_cells, max_queued=64)
    await local.start()
    yield local
    await local.stop()


async def _run(engine: LocalEngine, prompt: list[int], params: SamplingParams, n: int = 1) -> dict[int, Any]:
    out: dict[int, Any] = {i: {"ids": [], "logprobs": [], "finish": None} for i in range(n)}
    prompt_logprobs = None
    async for update in engine.generate(prompt, params, n):
        assert update.error is None, update.error
        if update.prompt_logprobs is not None:
            prompt_logprobs = update.prompt_logprobs
        for choice in update.choices:
            out[choice.index]["ids"] += choice.token_ids
            out[choice.index]["logprobs"] += choice.logprobs
            out[choice.index]["finish"] = choice.finish_reason or out[choice.index]["finish"]
    out[-1] = prompt_logprobs
    return out


@pytest.mark.asyncio(loop_scope="session")
async def test_n_choices_with_a_seed_reproduce(engine: LocalEngine) -> None:
    prompt = _chat(engine.backend, "Tell me a joke.")
    params = SamplingParams(max_tokens=12, temperature=1.0, seed=7, ignore_eos=True)
    first, second = await asyncio.gather(_run(engine, prompt, params, 2), _run(engine, prompt, params, 2))
    assert [first[i]["ids"] for i in (0, 1)] == [second[i]["ids"] for i in (0, 1)]
    assert first[0]["ids"] != first[1]["ids"] and all(len(first[i]["ids"]) == 12 for i in (0, 1))


@pytest.mark.asyncio(loop_scope="session")
async def test_logit_bias_forces_a_token(engine: LocalEngine) -> None:
    prompt = _chat(engine.backend, "Say hello.")
    params = SamplingParams(max_tokens=4, temperature=0.0, logit_bias={1234: 100.0}, ignore_eos=True)
    assert (await _run(engine, prompt, params))[0]["ids"] == [1234] * 4


@pytest.mark.asyncio(loop_scope="session")
async def test_logprobs_and_prompt_logprobs(engine: LocalEngine) -> None:
    prompt = _chat(engine.backend, "What is 12 times 7?")
    params = SamplingParams(max_tokens=6, temperature=0.0, logprobs=5, prompt_logprobs=3)
    out = await _run(engine, prompt, params)
    assert len(out[0]["logprobs"]) == len(out[0]["ids"]) == 6
    for entry, token in zip(out[0]["logprobs"], out[0]["ids"], strict=True):
        values = [lp for _, lp in entry.top]
        assert len(values) == 5 and values == sorted(values, reverse=True)
        assert float(np.exp(values).sum()) <= 1.0 + 1e-6
        assert entry.top[0][0] == token and entry.rank == 1  # greedy takes the best
    scored = out[-1]
    assert scored is not None and len(scored) == len(prompt) and scored[0] is None
    assert all(
        e is not None and e.token_id == t and len(e.top) == 3
        for e, t in zip(scored[1:], prompt[1:], strict=True)
    )


@pytest.mark.asyncio(loop_scope="session")
async def test_a_later_request_reuses_an_earlier_prompt(engine: LocalEngine) -> None:
    system = "You are a careful assistant who answers in one short sentence. " * 6
    prompt = _chat(engine.backend, system + "What is the boiling point of water?")
    params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    before = engine.stats()
    first = await _run(engine, prompt, params)
    second = await _run(engine, prompt, params)
    after = engine.stats()
    assert after.prefix_cache_queries is not None and after.prefix_cache_hits is not None
    block = engine.backend.pool.block_size  # type: ignore[attr-defined]
    assert after.prefix_cache_queries - (before.prefix_cache_queries or 0) == 2 * len(prompt)
    hits = after.prefix_cache_hits - (before.prefix_cache_hits or 0)
    assert hits == (len(prompt) - 1) // block * block  # the whole prompt but its last token's block
    assert second[0]["ids"] == first[0]["ids"]


@pytest.mark.asyncio(loop_scope="session")
async def test_small_pool_raises_and_the_engine_queues(model: OpenVinoPagedModel) -> None:
    small = _backend(num_blocks=4)  # 128 cells: one prompt and its 40 tokens, not three
    prompts = [
        _chat(small, t) for t in ("Describe a sunset.", "Name a famous painter.", "What is a prime number?")
    ]
    with pytest.raises(KvCacheFull):
        small.decode([BatchItem(list(p) * 3, 0, [i]) for i, p in enumerate(prompts)])
    assert small.pool.free_blocks == 4
    local = LocalEngine(small, name=SMOL, engine_name="openvino", kv_cells=small.kv_cells, max_queued=8)
    await local.start()
    try:
        params = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
        together = await asyncio.gather(*(_run(local, p, params) for p in prompts))
    finally:
        await local.stop()
    alone = _greedy(model, prompts[:1], 40, join_at=[0])[0]
    assert all(r[0]["finish"] == "length" and len(r[0]["ids"]) == 40 for r in together)
    assert together[0][0]["ids"] == alone


@pytest.mark.asyncio(loop_scope="session")
async def test_greedy_agreement_with_llama_cpp(engine: LocalEngine) -> None:
    path: Path = resolve_bundled(SMOL)
    reference = await asyncio.to_thread(
        LlamaCppModel,
        path,
        context_length=2048,
        kv_cells=None,
        max_sequences=1,
        max_batch_tokens=512,
        n_threads=2,
        n_threads_batch=2,
    )
    try:
        runs = [fidelity.reference_run(reference, _chat(reference, t), 16) for t in fidelity.PROMPTS[:6]]
    finally:
        reference.close()
    result = await fidelity.measure(engine, runs)
    print(f"\n{SMOL} openvino (own blocks, f32) against llama.cpp, teacher-forced: {result.describe()}")
    assert result.agreement >= 0.75


@pytest.mark.asyncio(loop_scope="session")
async def test_the_factory_builds_it() -> None:
    path = resolve_bundled(SMOL)
    # `openvino-paged`, this engine's name while it was experimental, still names it
    options = {"engine": "openvino-paged", "inference_precision": "f32", "n_threads": 2, "max_num_seqs": 4}
    options["batch_invariant"] = True
    engine = await open_engine(EngineSpec(name=SMOL, path=str(path), max_model_len=1024, options=options))
    try:
        assert isinstance(engine, LocalEngine) and engine.engine_name == "openvino"
        assert engine.engine_details.startswith("precision f32 (asked f32; CPU ")  # no int8 activations
        assert isinstance(engine.backend, OpenVinoPagedModel) and engine.backend.precision == "f32"
        assert engine.context_length == 1024
        out = await _run(engine, _chat(engine.backend, "Hi!"), SamplingParams(max_tokens=3, ignore_eos=True))
        assert len(out[0]["ids"]) == 3
    finally:
        await engine.stop()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="pages are given back on Linux only")
def test_the_weights_file_is_given_back_once_loaded(model: OpenVinoPagedModel) -> None:
    """The plugin copied every weight in the warm-up: the process then holds little of the IR's
    weights file (what a step reads from it: norms, a few embedding rows), and reads after a
    release see it unchanged."""
    weights_file = model.xml.with_suffix(".bin")
    size = weights_file.stat().st_size
    prompt = _chat(model, "Name three rivers.")
    first = BatchItem(list(prompt), 0, [0])
    model.decode([first])
    model.remove_sequence(0)
    held = resident_bytes(weights_file)
    print(f"\nIR weights file {size >> 20} MiB, held {held >> 20} MiB")
    assert held < size / 4  # without the release: all of it
    assert release(weights_file) >= size
    assert resident_bytes(weights_file) < size / 100
    again = BatchItem(list(prompt), 0, [0])
    model.decode([again])
    model.remove_sequence(0)
    assert first.logits is not None and again.logits is not None
    np.testing.assert_array_equal(first.logits, again.logits)
