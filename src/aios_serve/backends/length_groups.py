"""Length-sorted groups that cost the fewest padded tokens: the encoder scheduler splits a batch
into micro-batches with it, and packed BERT its attention calls."""

from __future__ import annotations

from collections.abc import Sequence

# A forward call's fixed cost, in tokens' worth of work (MiniLM on 2 cores: ~8-12 ms of ~0.1 ms tokens).
CALL_OVERHEAD_TOKENS = 128


def plan_length_groups(
    lengths: Sequence[int], max_padded_tokens: int, overhead_tokens: int = CALL_OVERHEAD_TOKENS
) -> list[list[int]]:
    """Split positions into length-sorted groups that minimise padded tokens plus per-call cost.

    Sorted by length, the best split is contiguous; a dynamic program over split points finds it,
    with each group kept under `max_padded_tokens` (a single long row may exceed it alone).
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    sorted_lengths = [lengths[i] for i in order]
    count = len(order)
    best_cost = [0] + [0] * count
    best_start = [0] * (count + 1)
    for end in range(1, count + 1):
        longest = sorted_lengths[end - 1]
        cheapest, cheapest_start = -1, end - 1
        start = end - 1
        while start >= 0 and (start == end - 1 or (end - start) * longest <= max_padded_tokens):
            cost = best_cost[start] + overhead_tokens + (end - start) * longest
            if cheapest < 0 or cost < cheapest:
                cheapest, cheapest_start = cost, start
            start -= 1
        best_cost[end], best_start[end] = cheapest, cheapest_start
    groups: list[list[int]] = []
    end = count
    while end > 0:
        start = best_start[end]
        groups.append(order[start:end])
        end = start
    groups.reverse()
    return groups
