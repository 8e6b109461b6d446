"""The prefix cache of the openvino engine behind a real server, in its worker process: a second
chat sharing a long system prompt with a first reuses its KV blocks, answers the same, and
vLLM's counters (`vllm:prefix_cache_queries`, `vllm:prefix_cache_hits`, tokens) say so."""

from __future__ import annotations

from tests.e2e.configs import SMOL
from tests.e2e.server import Server, scrape, value

SYSTEM = "You are a patient tutor. Answer in one short sentence, plainly and kindly. " * 8
QUESTIONS = ("What is the boiling point of water?", "What colour is the sky?")


def test_a_shared_system_prompt_is_reused(smol_openvino: Server) -> None:
    server = smol_openvino
    client = server.client()

    def counters() -> tuple[float, float]:
        samples = scrape(server.base_url)
        return (
            value(samples, "vllm:prefix_cache_queries_total", model_name=SMOL),
            value(samples, "vllm:prefix_cache_hits_total", model_name=SMOL),
        )

    def ask(question: str) -> tuple[str, int]:
        reply = client.chat.completions.create(
            model=SMOL,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
            max_tokens=8,
            temperature=0.0,
        )
        assert reply.usage is not None
        return reply.choices[0].message.content or "", reply.usage.prompt_tokens

    start = counters()
    first, first_tokens = ask(QUESTIONS[0])
    after_first = counters()
    second, second_tokens = ask(QUESTIONS[1])
    repeat, _ = ask(QUESTIONS[0])
    end = counters()
    assert after_first[0] - start[0] == first_tokens
    assert after_first[1] - start[1] < 32  # nothing cached yet (at most a block of the template)
    assert end[0] - after_first[0] == second_tokens + first_tokens
    block = 32  # the CPU plugin's paged-attention block
    repeated = (first_tokens - 1) // block * block  # all of the first prompt but its last block
    assert end[1] - after_first[1] >= repeated + 2 * block  # and the system prompt's blocks
    assert repeat == first
    assert second != first
