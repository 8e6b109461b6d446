"""Per-sequence sampling in numpy: penalties, logit bias, temperature, top-k/top-p/min-p, seeds,
and log-probabilities of the raw logits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from aios_serve.backends.protocols.generation import Logits

if TYPE_CHECKING:
    from aios_serve.engine.generation.constraints.spec import OutputConstraint


@dataclass(frozen=True)
class SamplingParams:
    """What one request asks of the sampler and the stop logic (shared by its n choices)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    min_tokens: int = 0
    logprobs: int | None = None
    """Top-k alternatives to report per token; None reports no log-probabilities."""
    prompt_logprobs: int | None = None
    """Top-k alternatives for every prompt token after the first; None computes none."""
    constraint: OutputConstraint | None = None
    """Constrained decoding: each choice samples only tokens this constraint allows."""


@dataclass(frozen=True)
class TokenLogprobs:
    """The chosen token's log-probability and the top alternatives, from the raw logits."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]]
    rank: int = 1
    """1 + how many tokens scored higher (vLLM's `rank`)."""


def log_softmax(logits: Logits) -> npt.NDArray[np.float64]:
    shifted = logits.astype(np.float64) - float(np.max(logits))
    return shifted - np.log(np.sum(np.exp(shifted)))


def token_logprobs(logits: Logits, token_id: int, top_k: int) -> TokenLogprobs:
    """Log-softmax of the raw logits: the chosen token's value and the k best, best first."""
    logprobs = log_softmax(logits)
    top: list[tuple[int, float]] = []
    if top_k > 0:
        k = min(top_k, logprobs.shape[0])
        best = np.argpartition(-logprobs, k - 1)[:k]
        best = best[np.argsort(-logprobs[best], kind="stable")]
        top = [(int(t), float(logprobs[t])) for t in best]
    chosen = float(logprobs[token_id])
    return TokenLogprobs(token_id, chosen, top, rank=int(np.count_nonzero(logprobs > chosen)) + 1)


class SequenceSampler:
    """Samples one sequence's tokens; owns its random generator and its output-token counts."""

    def __init__(self, params: SamplingParams, choice_index: int, eog_ids: list[int]) -> None:
        self.params = params
        if params.seed is not None:
            self._rng = np.random.default_rng([params.seed & 0xFFFFFFFFFFFFFFFF, choice_index])
        else:
            self._rng = np.random.default_rng()
        self._counts: dict[int, int] = {}
        self._eog_ids = np.asarray(eog_ids, dtype=np.int64)
        self._bias_ids = np.asarray(list(params.logit_bias), dtype=np.int64)
        self._bias_vals = np.asarray(list(params.logit_bias.values()), dtype=np.float32)

    def record(self, token_id: int) -> None:
        """Count a generated token for the frequency and presence penalties."""
        self._counts[token_id] = self._counts.get(token_id, 0) + 1

    def _processed(self, logits: Logits, n_generated: int) -> Logits:
        params = self.params
        out = logits.astype(np.float32, copy=True)
        if self._bias_ids.size:
            valid = self._bias_ids < out.shape[0]
            out[self._bias_ids[valid]] += self._bias_vals[valid]
        if self._counts and (params.frequency_penalty or params.presence_penalty):
            ids = np.fromiter(self._counts.keys(), dtype=np.int64, count=len(self._counts))
            counts = np.fromiter(self._counts.values(), dtype=np.float32, count=len(self._counts))
            out[ids] -= params.frequency_penalty * counts + params.presence_penalty
        if n_generated < params.min_tokens:
            if self._eog_ids.size:
                out[self._eog_ids] = -np.inf
            if params.stop_token_ids:
                out[list(params.stop_token_ids)] = -np.inf
        return out

    def sample(self, logits: Logits, n_generated: int) -> int:
        """Choose the next token from the raw logits of this step."""
        params = self.params
        processed = self._processed(logits, n_generated)
        if params.temperature <= 1e-5:
            return int(np.argmax(processed))
        scaled = processed.astype(np.float64) / params.temperature
        candidates = np.arange(scaled.shape[0])
        if 0 < params.top_k < scaled.shape[0]:
            keep = np.argpartition(-scaled, params.top_k - 1)[: params.top_k]
            candidates, scaled = keep, scaled[keep]
        probs = np.exp(scaled - np.max(scaled))
        probs /= probs.sum()
        if params.top_p < 1.0 or params.min_p > 0.0:
            order = np.argsort(-probs, kind="stable")
            probs, candidates = probs[order], candidates[order]
            keep_n = probs.shape[0]
            if params.top_p < 1.0:
                cumulative = np.cumsum(probs)
                keep_n = int(np.searchsorted(cumulative, params.top_p, side="left")) + 1
            if params.min_p > 0.0:
                keep_n = min(keep_n, max(1, int(np.sum(probs >= params.min_p * probs[0]))))
            probs, candidates = probs[:keep_n], candidates[:keep_n]
            probs = probs / probs.sum()
        cumulative = np.cumsum(probs)
        draw = self._rng.random() * cumulative[-1]
        index = min(int(np.searchsorted(cumulative, draw, side="right")), probs.shape[0] - 1)
        return int(candidates[index])
