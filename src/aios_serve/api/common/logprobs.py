"""vLLM's `prompt_logprobs` shape, which chat and completions share."""

from __future__ import annotations

from typing import Any

from aios_serve.engine.generation import GenerationModel, TokenLogprobs


def vllm_prompt_logprobs(
    model: GenerationModel, entries: list[TokenLogprobs | None] | None
) -> list[dict[str, Any] | None] | None:
    """vLLM's `prompt_logprobs`: per prompt token, {token id: logprob, rank, decoded_token}."""
    if entries is None:
        return None
    out: list[dict[str, Any] | None] = []
    for entry in entries:
        if entry is None:
            out.append(None)
            continue
        ranked = {t: (lp, rank) for rank, (t, lp) in enumerate(entry.top, start=1)}
        ranked[entry.token_id] = (entry.logprob, entry.rank)
        out.append(
            {
                str(t): {"logprob": lp, "rank": rank, "decoded_token": model.token_text(t)}
                for t, (lp, rank) in ranked.items()
            }
        )
    return out
