"""The encoder's batching queue, driven in-process with the real bundled model (no timing)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from aios_serve.backends.length_groups import plan_length_groups
from aios_serve.config import ModelSpec
from aios_serve.engine.encoder import EncoderModel, TokenizedTexts

# The model fixture lives on the session loop (pyproject), so the tests run there too.


def _texts(count: int, words: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    vocabulary = ["river", "stone", "light", "market", "garden", "music", "paper", "window", "winter"]
    return [" ".join(rng.choice(vocabulary) for _ in range(words)) for _ in range(count)]


async def _started(**options: Any) -> EncoderModel:
    model = EncoderModel(
        ModelSpec(name="minilm", kind="embedding", bundled="all-minilm-l6-v2", options=options)
    )
    await model.start()
    return model


@pytest.fixture
async def fp32_model() -> AsyncIterator[EncoderModel]:
    model = await _started(dtype="float32", threads=2)
    yield model
    await model.stop()


async def _embed_each(model: EncoderModel, texts: list[str]) -> list[np.ndarray]:
    tokenized = [await model.tokenize_texts([text], None) for text in texts]
    return list(await asyncio.gather(*(model.embed(one) for one in tokenized)))


async def test_concurrent_single_text_requests_share_forward_passes(fp32_model: EncoderModel) -> None:
    texts = _texts(32, 12, seed=1)
    results = await _embed_each(fp32_model, texts)
    stats = fp32_model.scheduler.stats
    assert stats.sequences == 32
    assert stats.forward_passes < 8, stats  # 32 single-text requests, a handful of model calls
    assert stats.largest_forward >= 8, stats
    alone = await fp32_model.embed(await fp32_model.tokenize_texts(texts, None))
    np.testing.assert_allclose(np.vstack(results), alone, atol=1e-5)


@pytest.mark.parametrize("packed", [True, False])
async def test_batched_rows_match_rows_run_alone(packed: bool) -> None:
    model = await _started(dtype="float32", packed=packed)
    try:
        texts = _texts(6, 3, seed=2) + _texts(6, 120, seed=3)  # short and long mixed in one request
        together = await model.embed(await model.tokenize_texts(texts, None))
        for row, text in zip(together, texts, strict=True):
            single = await model.embed(await model.tokenize_texts([text], None))
            np.testing.assert_allclose(row, single[0], atol=1e-5)
        stats = model.scheduler.stats
        assert model.scheduler.packed is packed
        if packed:  # one pass, no padding in the linear layers
            assert stats.padded_tokens == stats.real_tokens, stats
        else:
            assert stats.forward_passes >= 2  # short and long were not padded together
    finally:
        await model.stop()


async def test_small_request_finishes_before_huge_earlier_one() -> None:
    model = await _started(max_batch_tokens=512)
    try:
        huge = await model.tokenize_texts(_texts(40, 200, seed=4), None)
        small = await model.tokenize_texts(["a short question"], None)
        huge_task = asyncio.create_task(model.embed(huge))
        while model.scheduler.stats.batches == 0:  # the huge request is being worked on
            await asyncio.sleep(0.005)
        small_vectors = await model.embed(small)
        assert not huge_task.done(), "the small request waited for the whole huge one"
        assert small_vectors.shape == (1, 384)
        huge_vectors = await huge_task
        assert huge_vectors.shape == (40, 384)
        assert model.scheduler.stats.batches >= 10  # the huge request was chunked
    finally:
        await model.stop()


async def test_cancelled_request_does_not_block_the_queue(fp32_model: EncoderModel) -> None:
    doomed = asyncio.create_task(fp32_model.embed(await fp32_model.tokenize_texts(_texts(64, 100, 5), None)))
    await asyncio.sleep(0)
    doomed.cancel()
    vectors = await fp32_model.embed(await fp32_model.tokenize_texts(["still served"], None))
    assert vectors.shape == (1, 384)
    assert fp32_model.scheduler.stats.sequences < 64 + 1  # the cancelled rows were mostly skipped


def test_micro_batches_cover_every_row_once_and_keep_lengths_apart() -> None:
    lengths = [12] * 20 + [400] * 3 + [13] * 5
    groups = plan_length_groups(lengths, max_padded_tokens=1024)
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))
    for group in groups:
        rows = [lengths[i] for i in group]
        assert len(rows) == 1 or len(rows) * max(rows) <= 1024
        assert max(rows) < 100 or min(rows) >= 100, f"short rows padded to a long one: {rows}"


def test_micro_batches_of_equal_lengths_are_not_split_needlessly() -> None:
    groups = plan_length_groups([50] * 32, max_padded_tokens=4096)
    assert len(groups) == 1


async def test_tokenized_texts_count_real_tokens(fp32_model: EncoderModel) -> None:
    tokenized: TokenizedTexts = await fp32_model.tokenize_texts(["one two three"], None)
    assert tokenized.token_count == 5  # [CLS] one two three [SEP]


async def test_one_large_request_is_split_across_both_workers(fp32_model: EncoderModel) -> None:
    assert fp32_model.worker_layout() == (2, 1)  # 2 threads: two passes of one thread each
    texts = _texts(24, 40, seed=6)
    split = await fp32_model.embed(await fp32_model.tokenize_texts(texts, None))
    stats = fp32_model.scheduler.stats
    assert stats.batches == 2 and stats.most_batches_at_once == 2, stats
    single = await _started(dtype="float32", threads=2, forward_workers=1)
    try:
        assert single.worker_layout() == (1, 2)
        whole = await single.embed(await single.tokenize_texts(texts, None))
        assert single.scheduler.stats.most_batches_at_once == 1
    finally:
        await single.stop()
    np.testing.assert_allclose(split, whole, atol=1e-5)
