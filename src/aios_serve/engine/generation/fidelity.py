"""How closely an engine follows a reference backend (llama.cpp) on the same weights, measured
teacher-forced so that one early near-tie does not cost every token after it.

The reference decodes each prompt greedily on its own, one token at a time, and keeps the
log-softmax of every step's logits. The engine is then asked, at every position of that
reference sequence, for its greedy next token and that token's log-probability (prompt plus the
reference's tokens so far, one token out). Compared per position:
- top-1 agreement: the engine's token is the reference's argmax;
- |Δ logprob|: the engine's log-probability of its token against the reference's for it;
- tie margin: where they disagree, how far the engine's token sits below the reference's
  top-1 in the reference's own log-probabilities (a near-tie has a small margin).
The first-divergence prefix count (tokens before the free-running outputs first differ) is kept
as a report only: it hinges on the first near-tie.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from aios_serve.backends.protocols.generation import BatchItem, GenerationBackend
from aios_serve.engine.generation.factory import llama_cpp_reference
from aios_serve.engine.generation.interface import EngineClient
from aios_serve.engine.generation.sampling import SamplingParams

LogprobRows = npt.NDArray[np.float64]

PROMPTS = (
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain recursion in one sentence.",
    "List three fruits.",
    "Write a Python function that adds two numbers.",
    "What is 12 times 7?",
    "Describe a sunset.",
    "Translate 'good morning' into Spanish.",
    "Give me a tip for learning to code.",
    "What does HTTP stand for?",
    "Name a famous painter.",
    "Why is the sky blue?",
    "Write a SQL query that counts rows in a table.",
    "Summarize the plot of Romeo and Juliet.",
    "What is a prime number?",
    "Suggest a name for a cat.",
    "How do I reverse a list in Python?",
    "What is the boiling point of water?",
    "Tell me a fun fact about octopuses.",
    "Write a short greeting for a birthday card.",
)
"""The 20 user messages fidelity is measured over."""
TOKENS = 32
"""Reference tokens per prompt: every position is one teacher-forced comparison."""


@dataclass(frozen=True)
class ReferenceRun:
    """A prompt's greedy tokens on the reference and the log-softmax that chose each."""

    prompt: list[int]
    tokens: list[int]
    logprobs: LogprobRows


@dataclass(frozen=True)
class Fidelity:
    """Teacher-forced agreement of an engine with the reference, over every position."""

    positions: int
    agreed: int
    mean_logprob_diff: float
    max_logprob_diff: float
    max_tie_margin: float
    prefix_agreed: int

    @property
    def agreement(self) -> float:
        return self.agreed / self.positions if self.positions else 1.0

    def describe(self) -> str:
        return (
            f"top-1 {self.agreed}/{self.positions} ({self.agreement:.1%}), "
            f"|Δ logprob| mean {self.mean_logprob_diff:.4f} max {self.max_logprob_diff:.4f}, "
            f"largest tie margin {self.max_tie_margin:.4f}; "
            f"free-running prefix {self.prefix_agreed}/{self.positions}"
        )


def _log_softmax(logits: npt.NDArray[np.float32]) -> LogprobRows:
    row = logits.astype(np.float64)
    shifted = row - row.max()
    return shifted - np.log(np.exp(shifted).sum())


def reference_run(backend: GenerationBackend, prompt: list[int], max_tokens: int) -> ReferenceRun:
    """Greedy decoding of one prompt on sequence 0 of `backend`, which is left empty after."""
    tokens: list[int] = []
    rows: list[LogprobRows] = []
    item = BatchItem(tokens=list(prompt), start_pos=0, seq_ids=[0])
    try:
        for _ in range(max_tokens):
            backend.decode([item])
            assert item.logits is not None
            row = _log_softmax(item.logits)
            token = int(row.argmax())
            rows.append(row)
            tokens.append(token)
            item = BatchItem(tokens=[token], start_pos=len(prompt) + len(tokens) - 1, seq_ids=[0])
    finally:
        backend.remove_sequence(0)
    return ReferenceRun(list(prompt), tokens, np.stack(rows))


def reference_runs(gguf: Path, prompts: list[list[int]], max_tokens: int) -> list[ReferenceRun]:
    """Every prompt's greedy run on llama.cpp over the same file (blocking: seconds)."""
    backend = llama_cpp_reference(gguf)
    try:
        return [reference_run(backend, prompt, max_tokens) for prompt in prompts]
    finally:
        backend.close()


async def _greedy(engine: EngineClient, prompt: list[int], max_tokens: int) -> tuple[list[int], list[float]]:
    """The engine's greedy tokens for a prompt and the logprob of each (EOS ignored)."""
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, logprobs=0)
    tokens: list[int] = []
    logprobs: list[float] = []
    async for update in engine.generate(prompt, params, 1):
        if update.error is not None:
            raise update.error
        for choice in update.choices:
            tokens += choice.token_ids
            logprobs += [entry.logprob for entry in choice.logprobs]
    return tokens, logprobs


def _prefix(a: Sequence[int], b: Sequence[int]) -> int:
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


async def measure(engine: EngineClient, references: list[ReferenceRun], concurrency: int = 16) -> Fidelity:
    """The engine's fidelity to the reference runs (one request per position, `concurrency` at
    a time, plus one free-running greedy request per prompt for the prefix report)."""
    gate = asyncio.Semaphore(concurrency)

    async def next_token(prompt: list[int]) -> tuple[list[int], list[float]]:
        async with gate:
            return await _greedy(engine, prompt, 1)

    forced = [[next_token(run.prompt + run.tokens[:i]) for i in range(len(run.tokens))] for run in references]
    answers = await asyncio.gather(*(asyncio.gather(*calls) for calls in forced))
    free = [(await _greedy(engine, run.prompt, len(run.tokens)))[0] for run in references]
    positions = agreed = prefix = 0
    diffs: list[float] = []
    margin = 0.0
    for run, answer, tokens in zip(references, answers, free, strict=True):
        prefix += _prefix(tokens, run.tokens)
        for row, (token_ids, logprobs) in zip(run.logprobs, answer, strict=True):
            positions += 1
            token, best = token_ids[0], int(row.argmax())
            if token == best:
                agreed += 1
            else:
                margin = max(margin, float(row[best] - row[token]))
            diffs += [abs(logprob - float(row[token])) for logprob in logprobs]
    return Fidelity(
        positions=positions,
        agreed=agreed,
        mean_logprob_diff=float(np.mean(diffs)) if diffs else float("nan"),
        max_logprob_diff=max(diffs, default=float("nan")),
        max_tie_margin=margin,
        prefix_agreed=prefix,
    )
