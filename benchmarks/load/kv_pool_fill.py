"""Before the load: write every block of the OpenVINO worker's KV pool once.

OpenVINO GenAI reserves its KV pool (`kv_cache_gb`, 1 GB at least) up front, untouched, and hands
out free blocks first in, first out: a freed block goes to the back of the list, and with prefix
caching a kept block is reused only once no free one is left. Under load every block is written
once before any is reused, so the worker's RSS climbs by up to the pool's size, at the pace of new
tokens (`kv_pool_memory.py` measures it). The load test first fills the pool with long prompts of
distinct tokens until the worker's RSS stops rising, so that what it judges is growth beyond that.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import httpx
from encoder_mix import WORDS

FILL_TOKENS = 1900
"""Tokens per prompt (the exact model's context is 2048)."""
FILL_BATCH = 8
FILL_SETTLED_MIB = 8.0
"""A round of prompts that raises the worker's RSS less than this: the pool is resident."""
FILL_MAX_ROUNDS = 16


async def fill_kv_pool(url: str, model: str, worker_rss_mib: Callable[[], float]) -> dict[str, Any]:
    """Rounds of FILL_BATCH prompts of FILL_TOKENS distinct tokens (1 token out) until a round
    raises the worker's RSS by less than FILL_SETTLED_MIB; what it took."""
    rng = random.Random(3)
    text = " ".join(f"{rng.choice(WORDS)} {rng.randint(0, 9999)}" for _ in range(1500))
    started = time.monotonic()
    rss = [worker_rss_mib()]
    sent = 0
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def tokens(prompt: str) -> list[int]:
            response = await client.post("/tokenize", json={"model": model, "prompt": prompt})
            response.raise_for_status()
            ids: list[int] = response.json()["tokens"]
            return ids

        body = await tokens(text)
        if len(body) < FILL_TOKENS:
            raise RuntimeError(f"the fill text is {len(body)} tokens, fewer than {FILL_TOKENS}")
        for _ in range(FILL_MAX_ROUNDS):
            prompts = []
            for _ in range(FILL_BATCH):
                head = await tokens(f"Fill {sent}:")  # a first block of its own: no prefix reuse
                prompts.append(head + body[: FILL_TOKENS - len(head)])
                sent += 1
            answers = await asyncio.gather(
                *(
                    client.post(
                        "/v1/completions",
                        json={"model": model, "prompt": ids, "max_tokens": 1, "temperature": 0},
                    )
                    for ids in prompts
                )
            )
            for answer in answers:
                answer.raise_for_status()
            rss.append(worker_rss_mib())
            if rss[-1] - rss[-2] < FILL_SETTLED_MIB:
                break
    return {
        "model": model,
        "prompts": sent,
        "tokens_each": FILL_TOKENS,
        "seconds": round(time.monotonic() - started, 1),
        "worker_rss_mib": [round(mib) for mib in rss],
        "settled": len(rss) > 1 and rss[-1] - rss[-2] < FILL_SETTLED_MIB,
    }
