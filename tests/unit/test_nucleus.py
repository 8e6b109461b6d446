"""Top-p and min-p keep exactly the tokens a stable sort of the whole row keeps, in its order,
whether the kept tokens lie among the best NUCLEUS_CANDIDATES or the row falls back to a full sort."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from aios_serve.engine.generation.sampling import NUCLEUS_CANDIDATES, SamplingParams, SequenceSampler, nucleus


def full_sort_nucleus(probs: npt.NDArray[np.float64], top_p: float, min_p: float) -> list[int]:
    """The rule as written before: sort everything, then cut."""
    order = np.argsort(-probs, kind="stable")
    ranked = probs[order]
    keep_n = ranked.shape[0]
    if top_p < 1.0:
        keep_n = int(np.searchsorted(np.cumsum(ranked), top_p, side="left")) + 1
    if min_p > 0.0:
        keep_n = min(keep_n, max(1, int(np.sum(ranked >= min_p * ranked[0]))))
    return [int(i) for i in order[:keep_n]]


def rows(seed: int) -> list[npt.NDArray[np.float64]]:
    """Peaked, flat and tied rows of a vocabulary of Qwen's size."""
    rng = np.random.default_rng(seed)
    vocab = 151_936
    out = []
    for scale in (8.0, 3.0, 0.3, 0.0):  # from a few dominant tokens to a uniform row
        logits = rng.standard_normal(vocab) * scale
        logits[rng.integers(0, vocab, 40)] = logits.max()  # a tie among the best
        out.append(logits)
    tied = np.zeros(vocab)
    tied[rng.integers(0, vocab, NUCLEUS_CANDIDATES + 50)] = 5.0  # more best tokens than candidates
    out.append(tied)
    return [np.exp(row - row.max()) / np.exp(row - row.max()).sum() for row in out]


@pytest.mark.parametrize("top_p, min_p", [(0.9, 0.0), (0.5, 0.0), (1.0, 0.05), (0.95, 0.01), (0.999, 0.0)])
def test_nucleus_equals_a_full_sort(top_p: float, min_p: float) -> None:
    for seed in range(3):
        for probs in rows(seed):
            assert nucleus(probs, top_p, min_p).tolist() == full_sort_nucleus(probs, top_p, min_p)


def test_seeded_draws_are_unchanged() -> None:
    """The draw over the kept tokens is the one it was, so seeded requests repeat across versions."""
    logits = (np.random.default_rng(5).standard_normal(151_936) * 4).astype(np.float32)
    params = SamplingParams(max_tokens=1, temperature=0.8, top_p=0.9, seed=11)
    sampler = SequenceSampler(params, 0, [])
    drawn = [sampler.sample(logits, 0) for _ in range(5)]
    rng = np.random.default_rng([11, 0])
    scaled = logits.astype(np.float64) / 0.8
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    kept = np.array(full_sort_nucleus(probs, 0.9, 0.0))
    kept_probs = probs[kept] / probs[kept].sum()
    cumulative = np.cumsum(kept_probs)
    draws = [rng.random() * cumulative[-1] for _ in range(5)]
    last = len(kept) - 1
    expected = [int(kept[min(int(np.searchsorted(cumulative, d, side="right")), last)]) for d in draws]
    assert drawn == expected
