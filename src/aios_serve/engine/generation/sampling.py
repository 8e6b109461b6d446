"""Per-sequence sampling in numpy: logit bias, penalties, temperature, top-k/top-p/min-p, seeds,
and log-probabilities of the raw logits."""

from __future__ import annotations

from collections.abc import Sequence
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
    repetition_penalty: float = 1.0
    """vLLM's: the logit of every token in the prompt or the output so far is divided by it where
    positive, multiplied by it where not; 1.0 is off (the API checks it is > 0 and finite)."""
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


NUCLEUS_CANDIDATES = 1024
"""Most probable tokens sorted first for top-p and min-p; the whole vocabulary only when the
nucleus reaches past them (a stable sort of 151,936 probabilities takes ~12 ms, this ~0.3 ms)."""


def _kept(sorted_probs: npt.NDArray[np.float64], top_p: float, min_p: float) -> int:
    """How many of the probabilities (sorted, most probable first) top-p and min-p keep."""
    keep_n = sorted_probs.shape[0]
    if top_p < 1.0:
        keep_n = min(keep_n, int(np.searchsorted(np.cumsum(sorted_probs), top_p, side="left")) + 1)
    if min_p > 0.0:
        keep_n = min(keep_n, max(1, int(np.sum(sorted_probs >= min_p * sorted_probs[0]))))
    return keep_n


def nucleus(probs: npt.NDArray[np.float64], top_p: float, min_p: float) -> npt.NDArray[np.intp]:
    """Indices of the tokens top-p and min-p keep, most probable first, ties in index order: what a
    stable sort of the whole row gives, from a sort of the NUCLEUS_CANDIDATES best wherever the
    kept tokens all score above the rest (then the two orders agree on them)."""
    if probs.shape[0] > NUCLEUS_CANDIDATES:
        best = np.sort(np.argpartition(-probs, NUCLEUS_CANDIDATES - 1)[:NUCLEUS_CANDIDATES])
        order = best[np.argsort(-probs[best], kind="stable")]
        keep_n = _kept(probs[order], top_p, min_p)
        if keep_n < NUCLEUS_CANDIDATES and probs[order[keep_n - 1]] > probs[order[-1]]:
            return order[:keep_n]
    order = np.argsort(-probs, kind="stable")
    return order[: _kept(probs[order], top_p, min_p)]


def repetition_ids(prompt_ids: Sequence[int], params: SamplingParams) -> npt.NDArray[np.int64]:
    """The prompt's distinct token ids, which the repetition penalty applies to (none when it is
    off); computed once per request and shared by its choices' samplers."""
    if params.repetition_penalty == 1.0:
        return np.empty(0, dtype=np.int64)
    return np.unique(np.asarray(prompt_ids, dtype=np.int64))


class SequenceSampler:
    """Samples one sequence's tokens; owns its random generator and its output-token counts."""

    def __init__(
        self,
        params: SamplingParams,
        choice_index: int,
        eog_ids: list[int],
        prompt_ids: npt.NDArray[np.int64] | None = None,
    ) -> None:
        """`prompt_ids`: the prompt's distinct ids (`repetition_ids`), for the repetition penalty."""
        self.params = params
        if params.seed is not None:
            self._rng = np.random.default_rng([params.seed & 0xFFFFFFFFFFFFFFFF, choice_index])
        else:
            self._rng = np.random.default_rng()
        self._counts: dict[int, int] = {}
        self._eog_ids = np.asarray(eog_ids, dtype=np.int64)
        self._bias_ids = np.asarray(list(params.logit_bias), dtype=np.int64)
        self._bias_vals = np.asarray(list(params.logit_bias.values()), dtype=np.float32)
        self._repeat = params.repetition_penalty != 1.0
        self._seen_ids = prompt_ids if prompt_ids is not None else np.empty(0, dtype=np.int64)
        """The distinct ids of the prompt and, once `_new_ids` are folded in, of the output."""
        self._seen: set[int] = set(self._seen_ids.tolist()) if self._repeat else set()
        self._new_ids: list[int] = []
        """Output ids in neither the prompt nor `_seen_ids` yet (appended on the next step)."""
        self._row_width = -1

    def record(self, token_id: int) -> None:
        """Count a generated token for the frequency and presence penalties (and note it for the
        repetition penalty)."""
        self._counts[token_id] = self._counts.get(token_id, 0) + 1
        if self._repeat and token_id not in self._seen:
            self._seen.add(token_id)
            self._new_ids.append(token_id)

    def _repeated_ids(self, n_logits: int) -> npt.NDArray[np.int64]:
        """The distinct ids of the prompt and the output so far (those within the logits row)."""
        if n_logits != self._row_width:  # once: sampled ids always lie within the row
            self._seen_ids = self._seen_ids[self._seen_ids < n_logits]
            self._row_width = n_logits
        if self._new_ids:
            new = np.asarray(self._new_ids, dtype=np.int64)
            self._seen_ids = np.concatenate([self._seen_ids, new])
            self._new_ids.clear()
        return self._seen_ids

    def _processed(self, logits: Logits, n_generated: int) -> Logits:
        params = self.params
        out = logits.astype(np.float32, copy=True)
        if self._bias_ids.size:
            valid = self._bias_ids < out.shape[0]
            out[self._bias_ids[valid]] += self._bias_vals[valid]
        # vLLM v1's order (its Sampler's docstring, vllm/v1/sample/sampler.py): the logit bias
        # first, then the penalties, repetition before frequency and presence. So the repetition
        # penalty scales the biased logits and the other two subtract from the scaled ones.
        # (vLLM masks min_tokens' stop tokens before all three; -inf stays -inf through them, so
        # masking them last, as here, gives the same logits.)
        if self._repeat:
            ids = self._repeated_ids(out.shape[0])
            if ids.size:
                seen = out[ids]
                penalty = np.float32(params.repetition_penalty)
                out[ids] = np.where(seen > 0, seen / penalty, seen * penalty)
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
            order = nucleus(probs, params.top_p, params.min_p)
            probs, candidates = probs[order], candidates[order]
            probs = probs / probs.sum()
        cumulative = np.cumsum(probs)
        draw = self._rng.random() * cumulative[-1]
        index = min(int(np.searchsorted(cumulative, draw, side="right")), probs.shape[0] - 1)
        return int(candidates[index])
