# mypy: disable-error-code="arg-type,call-overload,union-attr,list-item"
"""POST /v1/completions against a real server on SmolLM2-135M (openai client and httpx). Each test
that takes `smol_server` runs on every engine (`smol_engine` names it)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.e2e import reference_logits
from tests.e2e.configs import SMOL, SMOL_ALIAS
from tests.e2e.server import Server

PROMPT = "The three primary colors are"


@pytest.fixture(scope="module")
def greedy(smol_client: openai.OpenAI) -> openai.types.Completion:
    return smol_client.completions.create(model=SMOL, prompt=PROMPT, max_tokens=24, temperature=0)


def test_greedy_is_deterministic(smol_client: openai.OpenAI, greedy: openai.types.Completion) -> None:
    again = smol_client.completions.create(model=SMOL_ALIAS, prompt=PROMPT, max_tokens=24, temperature=0)
    assert greedy.choices[0].text == again.choices[0].text
    assert greedy.choices[0].text.strip()
    assert greedy.id.startswith("cmpl-") and greedy.object == "text_completion"
    assert greedy.usage is not None
    assert greedy.usage.completion_tokens == 24
    assert greedy.usage.total_tokens == greedy.usage.prompt_tokens + 24


def test_seed_reproduces_a_sampled_output(smol_client: openai.OpenAI) -> None:
    def sample(seed: int) -> list[str]:
        out = smol_client.completions.create(
            model=SMOL, prompt=PROMPT, max_tokens=20, temperature=1.0, top_p=0.95, seed=seed, n=2
        )
        return [choice.text for choice in out.choices]

    first = sample(1234)
    assert sample(1234) == first
    assert first[0] != first[1], "the n choices of one seeded request must differ"
    assert sample(99) != first


def test_stream_equals_non_streamed_greedy(
    smol_client: openai.OpenAI, greedy: openai.types.Completion
) -> None:
    stream = smol_client.completions.create(
        model=SMOL, prompt=PROMPT, max_tokens=24, temperature=0, stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == greedy.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_stop_string_cuts_the_output(smol_client: openai.OpenAI, greedy: openai.types.Completion) -> None:
    text = greedy.choices[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 4]
    out = smol_client.completions.create(
        model=SMOL, prompt=PROMPT, max_tokens=24, temperature=0, stop=[stop, "zzzz"]
    )
    choice = out.choices[0]
    assert choice.text == text[: text.index(stop)]
    assert choice.finish_reason == "stop"
    assert choice.model_extra is not None and choice.model_extra["stop_reason"] == stop
    streamed = smol_client.completions.create(
        model=SMOL, prompt=PROMPT, max_tokens=24, temperature=0, stop=stop, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == choice.text


def test_max_tokens_one_finishes_with_length(smol_client: openai.OpenAI) -> None:
    out = smol_client.completions.create(model=SMOL, prompt=PROMPT, max_tokens=1, temperature=0)
    assert out.choices[0].finish_reason == "length"
    assert out.usage is not None and out.usage.completion_tokens == 1


def test_stream_events_survive_line_separators(smol_server: Server) -> None:
    """U+2028, U+2029 and U+0085 in the text are escaped, so a client that splits the stream with
    `str.splitlines` (httpx's `iter_lines`) still reads whole events."""
    prompt = "one\u2028two\u2029three\x85four"
    body = {"model": SMOL, "prompt": prompt, "max_tokens": 4, "temperature": 0, "echo": True, "stream": True}
    text = ""
    with httpx.stream("POST", f"{smol_server.url}/v1/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[len("data: ") :])  # a cut event would not parse
                text += "".join(choice["text"] for choice in chunk["choices"])
    assert text.startswith(prompt) and len(text) > len(prompt)


def test_echo_and_n(smol_client: openai.OpenAI, greedy: openai.types.Completion) -> None:
    out = smol_client.completions.create(
        model=SMOL, prompt=PROMPT, max_tokens=24, temperature=0, echo=True, n=3
    )
    assert [c.index for c in out.choices] == [0, 1, 2]
    for choice in out.choices:
        assert choice.text == PROMPT + greedy.choices[0].text
    assert out.usage is not None and out.usage.completion_tokens == 3 * 24


def test_several_prompts_give_a_choice_set_each(smol_client: openai.OpenAI) -> None:
    out = smol_client.completions.create(
        model=SMOL, prompt=[PROMPT, "Once upon a time"], max_tokens=4, temperature=0, n=2
    )
    assert [c.index for c in out.choices] == [0, 1, 2, 3]
    assert out.choices[0].text == out.choices[1].text
    assert out.choices[2].text == out.choices[3].text


def test_token_id_prompt_matches_text_prompt(
    smol_server: Server, smol_client: openai.OpenAI, greedy: openai.types.Completion
) -> None:
    ids = httpx.post(f"{smol_server.url}/tokenize", json={"model": SMOL, "prompt": PROMPT}).json()["tokens"]
    out = smol_client.completions.create(model=SMOL, prompt=ids, max_tokens=24, temperature=0)
    assert out.choices[0].text == greedy.choices[0].text


def _token_ids(url: str, texts: list[str]) -> list[int]:
    """The id of each one-token text (the legacy logprobs give tokens as text)."""
    body = {"model": SMOL, "add_special_tokens": False}
    return [httpx.post(f"{url}/tokenize", json={**body, "prompt": t}).json()["tokens"][0] for t in texts]


def test_logprobs_are_the_log_softmax_of_the_logits(smol_server: Server, smol_engine: str) -> None:
    out = smol_server.client(timeout=120).completions.create(
        model=SMOL, prompt=PROMPT, max_tokens=8, temperature=0, logprobs=3
    )
    lp = out.choices[0].logprobs
    assert (
        lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs and lp.text_offset is not None
    )
    assert len(lp.tokens) == 8 and len(lp.top_logprobs) == 8
    tokenize = httpx.post(f"{smol_server.url}/tokenize", json={"model": SMOL, "prompt": PROMPT}).json()
    prompt_ids = tokenize["tokens"]
    output_ids = _token_ids(smol_server.url, lp.tokens)
    reference = reference_logits.output_rows(smol_engine, prompt_ids, output_ids)
    for i, token_id in enumerate(output_ids):
        assert lp.token_logprobs[i] == pytest.approx(reference[i][token_id], abs=2e-3)
        top = lp.top_logprobs[i]
        assert top is not None and len(top) == 3
        assert max(top.values()) == pytest.approx(lp.token_logprobs[i], abs=1e-9), (
            "greedy picks the top token"
        )
        assert sorted(top.values(), reverse=True) == pytest.approx(
            sorted(reference[i], reverse=True)[:3], abs=2e-3
        )
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(8)]


def test_echo_with_logprobs_scores_the_prompt(smol_server: Server, smol_engine: str) -> None:
    client = smol_server.client(timeout=120)
    prompt_ids = httpx.post(f"{smol_server.url}/tokenize", json={"model": SMOL, "prompt": PROMPT}).json()[
        "tokens"
    ]
    out = client.completions.create(
        model=SMOL, prompt=PROMPT, max_tokens=4, temperature=0, echo=True, logprobs=2
    )
    lp = out.choices[0].logprobs
    assert lp is not None and lp.token_logprobs is not None and lp.top_logprobs is not None
    assert len(lp.tokens) == len(prompt_ids) + 4
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    reference = reference_logits.prompt_rows(smol_engine, prompt_ids)
    for position in range(1, len(prompt_ids)):
        expected = reference[position - 1]
        assert lp.token_logprobs[position] == pytest.approx(expected[prompt_ids[position]], abs=2e-3)
        top = lp.top_logprobs[position]
        assert top is not None and 2 <= len(top) <= 3  # the k best, plus the prompt token itself
        assert max(top.values()) == pytest.approx(float(expected.max()), abs=2e-3)
    assert all(v is not None for v in lp.token_logprobs[len(prompt_ids) :])

    streamed: list[float | None] = []
    for chunk in client.completions.create(
        model=SMOL, prompt=PROMPT, max_tokens=4, temperature=0, echo=True, logprobs=2, stream=True
    ):
        if chunk.choices and chunk.choices[0].logprobs is not None:
            streamed.extend(chunk.choices[0].logprobs.token_logprobs or [])
    assert streamed == pytest.approx(lp.token_logprobs, abs=1e-6)


def test_vllm_prompt_logprobs_shape(smol_server: Server) -> None:
    body = {"model": SMOL, "prompt": PROMPT, "max_tokens": 1, "temperature": 0, "prompt_logprobs": 1}
    choice = httpx.post(f"{smol_server.url}/v1/completions", json=body, timeout=60).json()["choices"][0]
    prompt_ids = httpx.post(f"{smol_server.url}/tokenize", json={"model": SMOL, "prompt": PROMPT}).json()[
        "tokens"
    ]
    entries = choice["prompt_logprobs"]
    assert len(entries) == len(prompt_ids) and entries[0] is None
    for position, entry in enumerate(entries[1:], start=1):
        actual = entry[str(prompt_ids[position])]
        assert actual["rank"] >= 1 and actual["logprob"] <= 0
        best = [v for v in entry.values() if v["rank"] == 1]
        assert len(best) == 1 and best[0]["logprob"] >= actual["logprob"]


def test_chat_prompt_logprobs(smol_server: Server) -> None:
    body = {
        "model": SMOL,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 1,
        "prompt_logprobs": 0,
    }
    answer = httpx.post(f"{smol_server.url}/v1/chat/completions", json=body, timeout=60).json()
    entries = answer["prompt_logprobs"]
    assert entries[0] is None and len(entries) > 3
    assert all(len(entry) == 1 and next(iter(entry.values()))["logprob"] <= 0 for entry in entries[1:])


def test_logit_bias_forces_a_token(smol_server: Server) -> None:
    forced = httpx.post(
        f"{smol_server.url}/tokenize",
        json={"model": SMOL, "prompt": " banana", "add_special_tokens": False},
    ).json()["tokens"]
    assert len(forced) == 1
    client = smol_server.client(timeout=120)
    out = client.completions.create(
        model=SMOL, prompt=PROMPT, max_tokens=3, temperature=0.7, seed=3, logit_bias={str(forced[0]): 100}
    )
    assert out.choices[0].text == " banana" * 3
    banned = client.completions.create(
        model=SMOL, prompt="I like to eat a", max_tokens=3, temperature=0, logit_bias={str(forced[0]): -100}
    )
    assert "banana" not in banned.choices[0].text


def test_prompt_over_the_context_is_a_400(smol_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        smol_client.completions.create(model=SMOL, prompt="hello " * 9000, max_tokens=4)
    message = caught.value.message
    assert "maximum context length is 8192 tokens" in message and "input tokens" in message
    with pytest.raises(openai.BadRequestError) as too_many:
        smol_client.completions.create(model=SMOL, prompt=PROMPT, max_tokens=8190)
    assert "8192" in too_many.value.message and too_many.value.body["param"] == "max_tokens"  # type: ignore[index]


def test_truncate_prompt_tokens_keeps_the_last_tokens(smol_client: openai.OpenAI) -> None:
    out = smol_client.completions.create(
        model=SMOL, prompt="hello " * 9000, max_tokens=2, extra_body={"truncate_prompt_tokens": 100}
    )
    assert out.usage is not None and out.usage.prompt_tokens == 100


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"n": 0}, "n"),
        ({"frequency_penalty": 3}, "frequency_penalty"),
        ({"logprobs": 21}, "logprobs"),
        ({"prompt_logprobs": 21}, "prompt_logprobs"),
        ({"prompt_logprobs": -1}, "prompt_logprobs"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"logit_bias": {"5": 101}}, "logit_bias"),
        ({"logit_bias": {"99999999": 1}}, "logit_bias"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": [99999999]}, "prompt"),
    ],
)
def test_bad_requests_are_400_with_param(smol_server: Server, body: dict[str, object], param: str) -> None:
    payload = {"model": SMOL, "prompt": PROMPT, "max_tokens": 2, **body}
    response = httpx.post(f"{smol_server.url}/v1/completions", json=payload, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "BadRequestError"


def test_unknown_model_is_404_and_wrong_task_is_400(smol_server: Server) -> None:
    missing = httpx.post(f"{smol_server.url}/v1/completions", json={"model": "nope", "prompt": "x"})
    assert missing.status_code == 404 and SMOL in missing.json()["error"]["message"]
    wrong = httpx.post(f"{smol_server.url}/v1/completions", json={"model": "minilm", "prompt": "x"})
    assert wrong.status_code == 400


def test_stream_usage_options(smol_client: openai.OpenAI) -> None:
    chunks = list(
        smol_client.completions.create(
            model=SMOL,
            prompt=PROMPT,
            max_tokens=5,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True, "continuous_usage_stats": True},
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    running = [c.usage.completion_tokens for c in chunks[:-1] if c.usage is not None]
    assert running and running == sorted(running) and running[-1] == 5


def test_logprobs_k_gives_k_alternatives_plus_the_sampled_token(smol_client: openai.OpenAI) -> None:
    """OpenAI's legacy API and vLLM: `logprobs: k` lists the k best tokens and, where the sampled
    token is not among them, that token too (k + 1 entries)."""
    out = smol_client.completions.create(
        model=SMOL, prompt=PROMPT, max_tokens=24, temperature=1.8, seed=11, logprobs=1
    )
    lp = out.choices[0].logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs
    sizes = []
    for token, chosen, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert top is not None and token in top and top[token] == pytest.approx(chosen, abs=1e-9)
        best = max(top.values())
        sizes.append(len(top))
        assert len(top) == (1 if chosen == pytest.approx(best, abs=1e-9) else 2), top
    assert 2 in sizes, "at temperature 1.8 some sampled token is not the best"  # seed 11, 24 tokens


def test_penalties_subtract_from_the_logits_as_openai_says(smol_server: Server, smol_engine: str) -> None:
    """Greedy with frequency and presence penalties takes, at every step, the best of the
    engine's own logits minus `frequency * count + presence` for each token generated so far
    (OpenAI's rule; OpenVINO GenAI's moved negative logits up instead)."""
    frequency, presence = 0.9, 0.6
    body = {"model": SMOL, "prompt": PROMPT, "max_tokens": 24, "temperature": 0, "logprobs": 0}
    plain = httpx.post(f"{smol_server.url}/v1/completions", json=body, timeout=60).json()["choices"][0]
    penalized_body = {**body, "frequency_penalty": frequency, "presence_penalty": presence}
    choice = httpx.post(f"{smol_server.url}/v1/completions", json=penalized_body, timeout=60).json()
    choice = choice["choices"][0]
    assert choice["text"] != plain["text"], "the penalties changed nothing"
    prompt_ids = httpx.post(f"{smol_server.url}/tokenize", json={"model": SMOL, "prompt": PROMPT}).json()[
        "tokens"
    ]
    output_ids = _token_ids(smol_server.url, choice["logprobs"]["tokens"])
    rows = reference_logits.output_rows(smol_engine, prompt_ids, output_ids)
    counts: dict[int, int] = {}
    for row, token_id in zip(rows, output_ids, strict=True):
        adjusted = row.copy()
        for seen, count in counts.items():
            adjusted[seen] -= frequency * count + presence
        assert adjusted[token_id] >= adjusted.max() - 1e-3, (token_id, int(adjusted.argmax()))
        counts[token_id] = counts.get(token_id, 0) + 1
