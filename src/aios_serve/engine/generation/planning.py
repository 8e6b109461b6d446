"""Which forward passes one engine step runs: the decode tokens of every running sequence and
chunks of the prompts being written, within the backend's token budget."""

from __future__ import annotations

from aios_serve.backends.protocols.generation import BatchItem
from aios_serve.engine.generation.sequence import PrefillTask, RequestState, Sequence

PROMPT_LOGPROBS_CHUNK = 64
"""Prompt tokens per pass when every position's logits are kept (bounds that buffer)."""

PassOwner = tuple[RequestState, PrefillTask | Sequence]
Pass = tuple[list[BatchItem], list[PassOwner]]
"""One forward pass: its batch items, and the request and prompt or sequence of each."""


def plan_passes(
    active: list[RequestState], prefills: list[PrefillTask], limit: int, mixed: bool
) -> list[Pass]:
    """This step's passes over at most `limit` tokens each: one pass for everything where the
    backend `mixed` decode tokens and prompt chunks of any lengths, else passes kept apart."""
    decodes = _decode_items(active, limit)
    if mixed:
        return [_mixed_pass(decodes, active, prefills, limit)] if decodes[0] or prefills else []
    return _separate_passes(decodes, active, prefills, limit)


def _decode_items(active: list[RequestState], limit: int) -> Pass:
    items: list[BatchItem] = []
    owners: list[PassOwner] = []
    for state in active:
        for seq in state.seqs:
            if seq.pending is not None and seq.slot is not None and len(items) < limit:
                items.append(BatchItem([seq.pending], seq.n_cached, [seq.slot]))
                owners.append((state, seq))
    return items, owners


def _chunk(task: PrefillTask, owner: RequestState, take: int) -> BatchItem:
    lead = task.seqs[0].slot
    assert lead is not None
    tokens = task.tokens[task.done : task.done + take]
    scored = owner.needs_prompt_logprobs
    return BatchItem(tokens, task.done, [lead], want_logits=take == task.remaining, want_all_logits=scored)


def _mixed_pass(decodes: Pass, active: list[RequestState], prefills: list[PrefillTask], limit: int) -> Pass:
    """Decode tokens first, then prompt chunks in arrival order while the budget lasts (the last
    one cut to fit: chunked prefill)."""
    items, owners = list(decodes[0]), list(decodes[1])
    budget = limit - len(items)
    for task in prefills:
        if budget <= 0:
            break
        owner = _owner_of(task, active)
        cap = PROMPT_LOGPROBS_CHUNK if owner.needs_prompt_logprobs else budget
        take = min(budget, cap, task.remaining)
        items.append(_chunk(task, owner, take))
        owners.append((owner, task))
        budget -= take
    return items, owners


def _separate_passes(
    decodes: Pass, active: list[RequestState], prefills: list[PrefillTask], limit: int
) -> list[Pass]:
    """A sequence's logits stay the same batched as alone. llama.cpp picks its kernels by the rows
    a pass gives each sequence (flash attention tiles at 64 query rows), so decode tokens and
    prompt chunks never share a pass, a prompt is cut the same way whatever else runs, and
    prompt chunks share a pass only with chunks of the same length (llama.cpp's split of a
    multi-sequence batch then gives each its whole chunk). Prompts that arrive together
    mostly differ by a few tokens, so sixteen of them take a few passes instead of sixteen.
    A prompt whose every position is scored keeps a pass of its own.
    """
    calls: list[Pass] = []
    if decodes[0]:
        calls.append(_in_sequence_order(*decodes))
    budget = limit
    by_length: dict[int, Pass] = {}
    for task in prefills:
        owner = _owner_of(task, active)
        score_prompt = owner.needs_prompt_logprobs
        take = min(min(limit, PROMPT_LOGPROBS_CHUNK) if score_prompt else limit, task.remaining)
        if budget < take and budget < limit:
            break
        item = _chunk(task, owner, take)
        if score_prompt:
            calls.append(([item], [(owner, task)]))
        else:
            group = by_length.setdefault(take, ([], []))
            group[0].append(item)
            group[1].append((owner, task))
        budget -= take
    calls.extend(_in_sequence_order(*group) for group in by_length.values())
    return calls


def _owner_of(task: PrefillTask, active: list[RequestState]) -> RequestState:
    for state in active:
        if task.seqs[0] in state.seqs:
            return state
    raise RuntimeError("prefill task without a request")


def _in_sequence_order(items: list[BatchItem], owners: list[PassOwner]) -> Pass:
    """Sort a pass by sequence id: per-sequence caches run one pass only over increasing ids."""
    order = sorted(range(len(items)), key=lambda k: items[k].seq_ids[0])
    return [items[k] for k in order], [owners[k] for k in order]
