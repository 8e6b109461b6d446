# mypy: disable-error-code="arg-type,call-overload,union-attr,list-item"
"""The transformers backend: a local HF causal-LM folder served with the same request features.

The model is a tiny random Llama with SmolLM2's tokenizer (read from the bundled GGUF), so the
test is fast; the reference logits come from transformers in this process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from aios_serve.models.bundled import resolve_bundled
from tests.e2e.configs import local_generate
from tests.e2e.server import Server
from tests.tiny_models import save_model_folder

NAME = "tiny-hf-llama"
PROMPT = "Once upon a time"


def build_tiny_llama(folder: Path) -> Path:
    gguf = resolve_bundled("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # sharpen the distribution so that greedy choices are not near-ties
        model.lm_head.weight.mul_(40.0)
    return save_model_folder(model, tokenizer, folder)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("hf") / NAME)


@pytest.fixture(scope="module")
def client(hf_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    models = [local_generate(NAME, hf_folder, n_threads=2)]
    with Server(tmp_path_factory.mktemp("hf-server"), models) as server:
        yield server.client(timeout=120)


def test_greedy_stream_and_logprobs(client: openai.OpenAI, hf_folder: Path) -> None:
    first = client.completions.create(
        model=NAME, prompt=PROMPT, max_tokens=12, temperature=0, logprobs=2, extra_body={"ignore_eos": True}
    )
    again = client.completions.create(
        model=NAME, prompt=PROMPT, max_tokens=12, temperature=0, extra_body={"ignore_eos": True}
    )
    text = first.choices[0].text
    assert text == again.choices[0].text and first.usage is not None and first.usage.completion_tokens == 12
    streamed = client.completions.create(
        model=NAME, prompt=PROMPT, max_tokens=12, temperature=0, stream=True, extra_body={"ignore_eos": True}
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == text

    tokenizer = AutoTokenizer.from_pretrained(str(hf_folder))
    model = AutoModelForCausalLM.from_pretrained(str(hf_folder)).eval()
    ids = tokenizer(PROMPT)["input_ids"]
    lp = first.choices[0].logprobs
    assert lp is not None and lp.token_logprobs is not None
    with torch.no_grad():
        for i in range(12):
            logits = model(torch.tensor([ids])).logits[0, -1].double()
            reference = torch.log_softmax(logits, dim=-1).numpy()
            chosen = int(np.argmax(reference))
            assert lp.token_logprobs[i] == pytest.approx(reference[chosen], abs=1e-3)
            ids.append(chosen)


def test_seed_stop_n_and_context(client: openai.OpenAI) -> None:
    def sample() -> list[str]:
        out = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=8, temperature=1.0, seed=5, n=2)
        return [c.text for c in out.choices]

    assert sample() == sample()
    greedy = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=10, temperature=0
    )
    text = greedy.choices[0].message.content or ""
    assert greedy.choices[0].message.tool_calls == []
    if len(text) > 6:
        stop = text[3:6]
        cut = client.chat.completions.create(
            model=NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=10, temperature=0, stop=stop
        )
        assert cut.choices[0].message.content == text[: text.index(stop)]
        assert cut.choices[0].finish_reason == "stop"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=NAME, prompt="hello " * 600, max_tokens=4)
