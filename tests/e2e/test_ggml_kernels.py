"""The openvino engine with ggml's kernels (`matmul_kernels: ggml`, and `both`: ggml's for steps
of fewer than 4 tokens, OpenVINO's for the rest, over one KV cache) behind a real server, in its
worker process: the banner says so, the sampling API works on it, and its greedy answers follow
those of the same model on OpenVINO's kernels in plain f32 (`batch_invariant`), the one setting
that is exact on every CPU class. ggml multiplies by 8-bit activation blocks, so the two may part
where the reference is near a tie, and only there."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from openai.types.chat import ChatCompletionTokenLogprob

from tests.e2e.configs import smol
from tests.e2e.server import Server

GGML, BOTH, PLAIN_F32 = "smol-ggml", "smol-both", "smol-openvino-f32"
QUESTIONS = ("What is the capital of France?", "Name three colours.", "Count from one to five.")
NATS = 0.5
"""How far a chosen token's logprob may stray from the reference's, and how close to the
reference's top a token must be where the answers part. On a 2-core Zen 4, over 10 questions of
16 greedy tokens each, the most seen was 0.21 and 0.13 nats on SmolLM2 (0.08 and 0.13 on
Qwen2.5-Coder-0.5B); OpenVINO's own int8 activations strayed as far (0.21 and 0.10)."""


@pytest.fixture(scope="module")
def kernels_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    common = {"engine": "openvino", "n_threads": 2, "max_num_seqs": 4}
    config = {
        "models": [
            smol(GGML, matmul_kernels="ggml", **common),
            smol(BOTH, matmul_kernels="both", **common),
            smol(PLAIN_F32, matmul_kernels="openvino", batch_invariant=True, **common),
        ]
    }
    with Server(Path(tmp_path_factory.mktemp("ggml-kernels")), **config) as server:
        yield server


def test_the_banner_names_the_kernels(kernels_server: Server) -> None:
    lines = [line for line in kernels_server.log_text().splitlines() if "backend openvino" in line]
    assert any(GGML in line and "matmuls ggml's (2 threads)" in line for line in lines), lines
    assert any(BOTH in line and "matmuls ggml's below 4 rows (2 threads)" in line for line in lines), lines
    assert any(PLAIN_F32 in line and "ggml" not in line for line in lines), lines


def _steps(
    server: Server, model: str, question: str, max_tokens: int = 16
) -> list[ChatCompletionTokenLogprob]:
    reply = server.client().chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=max_tokens,
        temperature=0.0,
        logprobs=True,
        top_logprobs=5,
    )
    assert reply.choices[0].logprobs is not None and reply.choices[0].logprobs.content
    return reply.choices[0].logprobs.content


def _assert_follows(
    question: str, ours: list[ChatCompletionTokenLogprob], reference: list[ChatCompletionTokenLogprob]
) -> None:
    """Our greedy tokens are the reference's, each chosen logprob within NATS of its, until they
    part at a token the reference ranked within NATS of its own choice."""
    for mine, theirs in zip(ours, reference, strict=False):
        if mine.token != theirs.token:
            alternatives = {alt.token: alt.logprob for alt in theirs.top_logprobs}
            parted = (question, mine.token, alternatives)
            assert mine.token in alternatives, parted
            assert theirs.logprob - alternatives[mine.token] <= NATS, parted
            return
        assert abs(mine.logprob - theirs.logprob) <= NATS, (question, mine, theirs)


@pytest.mark.parametrize("model", [GGML, BOTH])
def test_greedy_answers_follow_plain_f32s(kernels_server: Server, model: str) -> None:
    for question in QUESTIONS:  # the first token comes from the prompt's pass, the rest one row each
        _assert_follows(
            question, _steps(kernels_server, model, question), _steps(kernels_server, PLAIN_F32, question)
        )


def test_both_kernels_share_the_kv_cache_as_the_batch_shrinks(kernels_server: Server) -> None:
    """Four answers of 4 to 16 tokens at once: their steps start on OpenVINO's kernels (4 rows)
    and end on ggml's as answers finish, each reading keys and values the other model wrote."""
    asked = [(question, 4 * (k + 1)) for k, question in enumerate((*QUESTIONS, "Say hello."))]
    with ThreadPoolExecutor(len(asked)) as pool:
        answers = list(pool.map(lambda qm: _steps(kernels_server, BOTH, *qm), asked))
    for (question, max_tokens), ours in zip(asked, answers, strict=True):
        _assert_follows(question, ours, _steps(kernels_server, PLAIN_F32, question, max_tokens))


def test_sampling_parameters_work_on_ggml_kernels(kernels_server: Server) -> None:
    client = kernels_server.client()
    request = {
        "model": GGML,
        "messages": [{"role": "user", "content": "Say something."}],
        "max_tokens": 8,
        "temperature": 0.8,
        "seed": 7,
        "n": 2,
        "frequency_penalty": 0.5,
    }
    reply = client.chat.completions.create(**request, logprobs=True, top_logprobs=5)
    assert len(reply.choices) == 2
    for choice in reply.choices:
        assert choice.logprobs is not None and choice.logprobs.content
        for token in choice.logprobs.content:
            alternatives = [alt.logprob for alt in token.top_logprobs]
            assert len(alternatives) == 5 and alternatives == sorted(alternatives, reverse=True)
    again = client.chat.completions.create(**request)  # the same seed draws the same tokens
    assert [c.message.content for c in again.choices] == [c.message.content for c in reply.choices]
