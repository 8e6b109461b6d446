"""The openvino engine with ggml's kernels (`matmul_kernels: ggml`) behind a real server, in its
worker process: the banner says so, the sampling API works on it, and its greedy answers are
those of the same model on OpenVINO's kernels (8-bit activation blocks against f32 may part a
near-tie: one prompt of three is allowed to)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.configs import smol
from tests.e2e.server import Server

GGML, OPENVINO = "smol-ggml", "smol-openvino-kernels"
QUESTIONS = ("What is the capital of France?", "Name three colours.", "Count from one to five.")


@pytest.fixture(scope="module")
def kernels_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    common = {"engine": "openvino", "n_threads": 2, "max_num_seqs": 4}
    config = {
        "models": [
            smol(GGML, matmul_kernels="ggml", **common),
            smol(OPENVINO, matmul_kernels="openvino", **common),
        ]
    }
    with Server(Path(tmp_path_factory.mktemp("ggml-kernels")), **config) as server:
        yield server


def test_the_banner_names_the_kernels(kernels_server: Server) -> None:
    lines = [line for line in kernels_server.log_text().splitlines() if "backend openvino" in line]
    assert any(GGML in line and "matmuls ggml's (2 threads)" in line for line in lines), lines
    assert any(OPENVINO in line and "ggml" not in line for line in lines), lines


def test_greedy_answers_match_openvinos_kernels(kernels_server: Server) -> None:
    client = kernels_server.client()

    def answer(model: str, question: str) -> str:
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}], max_tokens=16, temperature=0.0
        )
        return reply.choices[0].message.content or ""

    same = [answer(GGML, question) == answer(OPENVINO, question) for question in QUESTIONS]
    assert sum(same) >= 2, same


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
