# mypy: disable-error-code="arg-type,call-overload,union-attr,list-item"
"""Continuous batching through the real server: concurrent streams, disconnects."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from tests.e2e.configs import SMOL
from tests.e2e.server import Server

TOPICS = ["the sea", "a mountain", "the city at night", "autumn", "a cat", "the moon", "rain", "a library"]


def _messages(topic: str) -> list[dict[str, str]]:
    # Prompts above 64 tokens: llama.cpp picks the same matrix kernels for them alone or batched.
    ask = f"Write a short poem about {topic}. Use simple words, four lines, and give it a title. " * 3
    return [{"role": "user", "content": ask}]


async def _stream_text(client: openai.AsyncOpenAI, topic: str) -> str:
    stream = await client.chat.completions.create(
        model=SMOL,
        messages=_messages(topic),
        max_tokens=40,
        temperature=0,
        stream=True,  # type: ignore[arg-type]
    )
    parts = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    return "".join(parts)


def test_eight_concurrent_streams_match_sequential(smol_server: Server) -> None:
    sync = smol_server.client(timeout=120)
    sequential = [
        sync.chat.completions.create(model=SMOL, messages=_messages(t), max_tokens=40, temperature=0)  # type: ignore[arg-type]
        .choices[0]
        .message.content
        for t in TOPICS
    ]

    async def run_all() -> list[str]:
        async with smol_server.async_client(timeout=120) as client:
            return await asyncio.gather(*[_stream_text(client, t) for t in TOPICS])

    concurrent = asyncio.run(run_all())
    assert all(concurrent), "every stream finishes with text"
    differing = [t for t, a, b in zip(TOPICS, concurrent, sequential, strict=True) if a != b]
    print(f"near-tie flips under batching: {len(differing)}/{len(TOPICS)} {differing}")
    assert len(differing) <= 1, f"too many batched outputs differ from sequential: {differing}"


def test_sequences_finishing_apart_keep_their_outputs(smol_server: Server) -> None:
    """Short and long requests interleave, so the short ones leave holes in the sequence ids when
    they finish; the engine fills them by moving a long one's cache, and a late request joins.
    Every output still equals the same request run alone."""
    lengths = [6, 48, 6, 48, 6, 48, 32]
    topics = TOPICS[: len(lengths)]
    sync = smol_server.client(timeout=120)

    def alone(topic: str, max_tokens: int) -> str:
        out = sync.chat.completions.create(
            model=SMOL, messages=_messages(topic), max_tokens=max_tokens, temperature=0
        )
        return str(out.choices[0].message.content)

    sequential = [alone(t, n) for t, n in zip(topics, lengths, strict=True)]

    async def run_all() -> list[str]:
        async with smol_server.async_client(timeout=120) as client:

            async def one(topic: str, max_tokens: int, delay: float) -> str:
                await asyncio.sleep(delay)
                out = await client.chat.completions.create(
                    model=SMOL, messages=_messages(topic), max_tokens=max_tokens, temperature=0
                )
                return str(out.choices[0].message.content)

            delays = [0.0] * (len(lengths) - 1) + [1.0]
            return await asyncio.gather(*[one(*args) for args in zip(topics, lengths, delays, strict=True)])

    concurrent = asyncio.run(run_all())
    differing = [t for t, a, b in zip(topics, concurrent, sequential, strict=True) if a != b]
    print(f"near-tie flips with holes filled: {len(differing)}/{len(topics)} {differing}")
    assert len(differing) <= 1, f"too many batched outputs differ from sequential: {differing}"


def test_client_disconnect_stops_the_sequence(smol_server: Server) -> None:
    log_path, base_url = smol_server.log_path, smol_server.url
    before = log_path.read_text().count("cancelled after")
    body = {"model": SMOL, "prompt": "Count:", "max_tokens": 4000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{base_url}/v1/completions", json=body, timeout=60) as response:
        for i, _ in enumerate(response.iter_lines()):
            if i > 6:
                break
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if log_path.read_text().count("cancelled after") > before:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the server kept generating after the client left")
    # the engine is free again: a short request is served promptly
    quick = httpx.post(
        f"{base_url}/v1/completions", json={"model": SMOL, "prompt": "Hi", "max_tokens": 2}, timeout=30
    )
    assert quick.status_code == 200


def _prompt_passes(base_url: str) -> float:
    metrics = httpx.get(f"{base_url}/metrics", timeout=10).text
    wanted = ("aios_serve_engine_forward_passes_total{", f'model_name="{SMOL}"', 'phase="prompt"')
    for line in metrics.splitlines():
        if line.startswith(wanted[0]) and all(part in line for part in wanted[1:]):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no prompt-pass counter for the model in /metrics")


def test_prompts_arriving_together_share_prefill_passes(smol_server: Server) -> None:
    """Eight prompts sent at once share passes (the first to arrive may start alone) instead of
    taking one pass each, on either engine (llama.cpp runs prompts of one length together,
    openvino prompts of any lengths with the decode tokens)."""
    base_url = smol_server.url
    questions = [f"Name one colour of thing number {i}." for i in range(8)]
    before = _prompt_passes(base_url)

    async def run_all() -> list[str]:
        async with smol_server.async_client(timeout=120) as client:

            async def one(question: str) -> str:
                out = await client.chat.completions.create(
                    model=SMOL, messages=[{"role": "user", "content": question}], max_tokens=1, temperature=0
                )
                return str(out.choices[0].message.content)

            return await asyncio.gather(*[one(q) for q in questions])

    answers = asyncio.run(run_all())
    passes = _prompt_passes(base_url) - before
    print(f"prompt passes for {len(questions)} prompts sent together: {passes:.0f}")
    assert len(answers) == len(questions) and all(answers)
    assert 1 <= passes <= 3, f"{passes} prompt passes for {len(questions)} prompts sent together"
