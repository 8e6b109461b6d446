"""The generation part of the load mix: streamed chat and completions, greedy, on two copies of a
bundled chat model, each answer judged against its own single-request reference.

- `exact`: the chosen engine (default OpenVINO, in f32, where batched greedy output equals
  sequential but for rare near-ties), 8 sequences.
- `small-kv`: OpenVINO with a KV pool of 32 blocks (1024 cells, `num_kv_blocks`) shared by 4
  sequences and a queue of 16 requests. It also takes the long prompts (55-85 % of the pool each,
  so no two fit at once): they exhaust the pool, and the engine must queue or preempt them and
  the server answer 503, never 500.

Cross-talk verdict: an answer (or, for a stream the client closed early, the prefix it got) that
equals its own reference is right; one that equals another prompt's reference and not its own,
or follows another's further from the start than its own and for at least MIN_FOLLOWED_CHARS,
is cross-talk; any other difference is a mismatch, counted and reported apart (batched greedy
decoding may differ from sequential at near-ties). Only the start counts: after a first differing
token the rest of a greedy answer is conditioned on other text and may resemble anything, and a
letter or a space is shared by chance (an early measure by edit distance called ' electron'
cross-talk for a prompt whose reference began ' diamond', since ' lantern,' was nearer).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from encoder_mix import WORDS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generation"))
from servers import sse_lines

GENERATION_MIX: dict[str, int] = {"chat-stream": 3, "completion-stream": 3, "long-completion": 1}
"""The generation kinds and their weights in the load test's MIX."""
FAMILY = {"chat-stream": "chat", "completion-stream": "completion", "long-completion": "long"}
SHORT_MAX_TOKENS = 16
LONG_MAX_TOKENS = 8
SMALL_KV_CELLS = 1024
KV_BLOCK = 32
"""Tokens per KV block of OpenVINO's CPU paged attention."""
SMALL_KV_SEQUENCES = 4
SMALL_KV_QUEUE = 16
LONG_SHARES = (0.55, 0.65, 0.75, 0.85)
"""Long prompts' lengths as shares of the small pool: any two together overflow it."""


@dataclass(frozen=True)
class GenerationSetup:
    """Which bundled model, on which engine, and what each served copy is called."""

    bundled: str
    engine: str

    @property
    def exact(self) -> str:
        return f"{self.bundled}-{self.engine}"

    @property
    def small_kv(self) -> str:
        return f"{self.bundled}-small-kv"

    @property
    def models(self) -> tuple[str, str]:
        return (self.exact, self.small_kv)

    def model_entries(self) -> list[dict[str, Any]]:
        """The two generation models of the server config (one engine thread each: 2 cores)."""
        exact: dict[str, Any] = {"engine": self.engine, "n_threads": 1, "max_num_seqs": 8, "n_ctx": 2048}
        if self.engine == "openvino":
            exact["batch_invariant"] = True  # greedy answers are checked against one another
        small: dict[str, Any] = {
            "engine": "openvino",
            "batch_invariant": True,
            "n_threads": 1,
            "n_ctx": SMALL_KV_CELLS,
            "num_kv_blocks": SMALL_KV_CELLS // KV_BLOCK,
            "max_num_seqs": SMALL_KV_SEQUENCES,
            "max_queued_requests": SMALL_KV_QUEUE,
        }
        return [
            {"name": name, "kind": "generate", "bundled": self.bundled, "options": options}
            for name, options in ((self.exact, exact), (self.small_kv, small))
        ]


@dataclass(frozen=True)
class Prompt:
    """One prompt: its key, family (chat, completion, long) and what the request carries."""

    key: str
    family: str
    content: str | list[int]  # the user message, the prompt text, or the prompt's token ids

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.family == "chat" else "/v1/completions"

    def body(self, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "temperature": 0,
            "max_tokens": LONG_MAX_TOKENS if self.family == "long" else SHORT_MAX_TOKENS,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.family == "chat":
            body["messages"] = [{"role": "user", "content": self.content}]
        else:
            body["prompt"] = self.content
        return body


def short_prompts(count: int, seed: int = 11) -> list[Prompt]:
    """`count` chat prompts, each on its own pair of words, and `count` completion prompts that
    repeat their own three words (so that each reference is its prompt's alone from the start)."""
    rng = random.Random(seed)
    triples = list(itertools.permutations(WORDS, 3))
    rng.shuffle(triples)
    prompts = []
    for i, (a, b, _) in enumerate(triples[:count]):
        prompts.append(Prompt(f"chat-{i}", "chat", f"Write one short sentence about a {a} and a {b}."))
    for i, (a, b, c) in enumerate(triples[count : 2 * count]):
        prompts.append(Prompt(f"completion-{i}", "completion", f"{i}. {a}, {b}, {c}; {a}, {b}, {c}; {a},"))
    return prompts


def long_prompts(url: str, model: str) -> list[Prompt]:
    """Prompts of LONG_SHARES of the small pool, as token ids (exact lengths), each its own text."""
    prompts = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for i, share in enumerate(LONG_SHARES):
            rng = random.Random(100 + i)
            lines = [f"Line {n}: " + " ".join(rng.choice(WORDS) for _ in range(8)) for n in range(160)]
            response = client.post("/tokenize", json={"model": model, "prompt": "\n".join(lines)})
            response.raise_for_status()
            tokens = response.json()["tokens"][: int(share * SMALL_KV_CELLS)]
            prompts.append(Prompt(f"long-{i}", "long", tokens))
    return prompts


@dataclass
class StreamAnswer:
    """What one streamed request gave."""

    status: int
    text: str = ""
    chunks: int = 0
    finish_reason: str | None = None
    error: str = ""  # the body of a non-200 answer
    stream_error: dict[str, Any] | None = None  # an error event in a 200 stream
    closed_early: bool = False
    prompt_tokens: int | None = None


async def stream(
    client: httpx.AsyncClient, prompt: Prompt, model: str, close_after: int | None = None
) -> StreamAnswer:
    """One streamed request, read to its end or closed after `close_after` chunks with text."""
    async with client.stream("POST", prompt.path, json=prompt.body(model)) as response:
        if response.status_code != 200:
            await response.aread()
            return StreamAnswer(response.status_code, error=response.text[:200])
        answer = StreamAnswer(200)
        async for line in sse_lines(response):
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                answer.stream_error = event["error"]
                continue
            if event.get("usage"):
                answer.prompt_tokens = event["usage"]["prompt_tokens"]
            for choice in event.get("choices", []):
                piece = choice["delta"].get("content") if prompt.family == "chat" else choice.get("text")
                if piece:
                    answer.text += piece
                    answer.chunks += 1
                answer.finish_reason = choice.get("finish_reason") or answer.finish_reason
            if close_after is not None and answer.chunks >= close_after and answer.finish_reason is None:
                answer.closed_early = True
                break  # leaving the block closes the response, and so the connection
    return answer


@dataclass
class GenerationReferences:
    """Each model's prompts by family and their single-request answers."""

    setup: GenerationSetup
    prompts: dict[str, dict[str, list[Prompt]]]  # model -> family -> prompts
    answers: dict[tuple[str, str], str]  # (model, key) -> reference text
    prompt_tokens: dict[tuple[str, str], int] = field(default_factory=dict)

    def model_for(self, kind: str, rng: random.Random) -> str:
        return self.setup.small_kv if kind == "long-completion" else rng.choice(self.setup.models)

    def others(self, model: str, key: str) -> dict[str, str]:
        """The reference answers of the model's other prompts, by key."""
        return {k: text for (m, k), text in self.answers.items() if m == model and k != key}

    def describe(self) -> dict[str, Any]:
        """Per model: prompts, distinct reference answers (prompts that share one cannot be told
        apart), the long prompts' token counts."""
        out: dict[str, Any] = {}
        for model in self.setup.models:
            by_text: dict[str, list[str]] = {}
            for (m, key), text in self.answers.items():
                if m == model:
                    by_text.setdefault(text, []).append(key)
            longs = [n for (m, k), n in self.prompt_tokens.items() if m == model and k.startswith("long")]
            out[model] = {
                "prompts": sum(len(keys) for keys in by_text.values()),
                "distinct_references": len(by_text),
                "sharing_a_reference": [keys for keys in by_text.values() if len(keys) > 1],
            }
            if longs:
                out[model]["long_prompt_tokens"] = longs
        out["example"] = next(iter(self.answers.values()), "")[:80]
        return out


async def build_generation_references(url: str, setup: GenerationSetup, count: int) -> GenerationReferences:
    """Every (model, prompt) answered alone, one at a time, before the load."""
    short = short_prompts(count)
    prompts: dict[str, dict[str, list[Prompt]]] = {}
    for model in setup.models:
        prompts[model] = {f: [p for p in short if p.family == f] for f in ("chat", "completion")}
    prompts[setup.small_kv]["long"] = long_prompts(url, setup.small_kv)
    refs = GenerationReferences(setup, prompts, {})
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        for model, families in prompts.items():
            for family_prompts in families.values():
                for prompt in family_prompts:
                    answer = await stream(client, prompt, model)
                    if answer.status != 200 or answer.stream_error is not None:
                        raise RuntimeError(f"reference {model}/{prompt.key}: {answer}")
                    refs.answers[(model, prompt.key)] = answer.text
                    if answer.prompt_tokens is not None:
                        refs.prompt_tokens[(model, prompt.key)] = answer.prompt_tokens
    return refs


def common_prefix(a: str, b: str) -> int:
    """How many leading characters two strings share."""
    return len(os.path.commonprefix([a, b]))  # noqa: RUF071 (characters are what is meant)


MIN_FOLLOWED_CHARS = 8
"""How far an answer must follow another prompt's reference to be called that prompt's."""


def verdict(answer: str, own: str, others: Mapping[str, str], partial: bool) -> tuple[str, str | None]:
    """`ok`, `cross-talk` or `mismatch` (see the module's docstring), and the key of the other
    reference it equals or is nearer to. A partial answer is judged on the references' prefixes."""
    if partial:
        own, others = own[: len(answer)], {key: text[: len(answer)] for key, text in others.items()}
    if answer == own:
        return "ok", None
    for key, text in others.items():
        if answer == text:
            return "cross-talk", key
    mine = common_prefix(answer, own)
    key, followed = max(((k, common_prefix(answer, t)) for k, t in others.items()), key=lambda kv: kv[1])
    if followed > mine and followed >= MIN_FOLLOWED_CHARS:
        return "cross-talk", key
    return "mismatch", None


@dataclass
class GenerationOutcome:
    """One generation request under load, as the tally needs it."""

    kind: str
    model: str
    status: int
    verdict: str | None = None  # None: nothing to judge (not 200, or an error event)
    stream_error_code: int | None = None
    closed_early: bool = False
    detail: str = ""


async def generation_request(
    client: httpx.AsyncClient,
    kind: str,
    rng: random.Random,
    refs: GenerationReferences,
    close_after: int | None,
) -> GenerationOutcome:
    """Send one streamed request of `kind` and judge its answer."""
    model = refs.model_for(kind, rng)
    prompt = rng.choice(refs.prompts[model][FAMILY[kind]])
    answer = await stream(client, prompt, model, close_after)
    outcome = GenerationOutcome(kind, model, answer.status, closed_early=answer.closed_early)
    if answer.status != 200:
        outcome.detail = answer.error
        return outcome
    if answer.stream_error is not None:
        outcome.stream_error_code = int(answer.stream_error.get("code") or 0)
        outcome.detail = str(answer.stream_error.get("message"))[:200]
        return outcome
    own = refs.answers[(model, prompt.key)]
    outcome.verdict, nearer = verdict(answer.text, own, refs.others(model, prompt.key), answer.closed_early)
    if outcome.verdict != "ok":
        outcome.detail = (
            f"{model}/{prompt.key}{' (closed early)' if answer.closed_early else ''}: "
            f"got {answer.text!r}, reference {own!r}, finish {answer.finish_reason}"
        )
    if nearer is not None:
        outcome.detail += f"; nearer {nearer}: {refs.answers[(model, nearer)]!r}"
    return outcome
