"""The KV cache's block pool: a block table per sequence id, a free list and reference counts.

A sequence of L cached tokens holds ceil(L / block_size) blocks. `copy_sequence` shares every
block of the source (n choices after one prefill), each shared block counted once per holder;
a sequence that writes into a block someone else also holds first gets a copy of its own
(copy on write: only the last, partial block is ever written, so only it is copied). Freed
blocks go to the back of the free list. `reserve` plans a whole batch before changing anything,
so a batch that does not fit raises KvCacheFull and leaves the pool as it was.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from aios_serve.backends.protocols.generation import KvCacheFull


@dataclass(frozen=True)
class Write:
    """One sequence's share of a batch: `count` tokens from position `start`."""

    seq_id: int
    start: int
    count: int


class BlockPool:
    """Fixed-size KV blocks shared between sequences by reference count."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError("the pool needs at least one block of at least one token")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._free: collections.deque[int] = collections.deque(range(num_blocks))
        self._refs = [0] * num_blocks
        self._tables: dict[int, list[int]] = {}
        self._lengths: dict[int, int] = {}

    # --- reading --------------------------------------------------------------------------

    @property
    def free_blocks(self) -> int:
        return len(self._free)

    @property
    def used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    def table(self, seq_id: int) -> list[int]:
        """The sequence's block ids, in position order (empty for an unknown id)."""
        return list(self._tables.get(seq_id, ()))

    def length(self, seq_id: int) -> int:
        """Tokens cached for the sequence."""
        return self._lengths.get(seq_id, 0)

    def refs(self, block: int) -> int:
        return self._refs[block]

    def _blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    # --- changing -------------------------------------------------------------------------

    def reserve(self, writes: list[Write]) -> list[tuple[int, int]]:
        """Give every write the blocks it needs; returns the (source, target) block copies to
        make before the pass (copy on write). Raises KvCacheFull, changing nothing, when the
        free blocks do not suffice, and ValueError for a write not at its sequence's end."""
        seen: set[int] = set()
        needed = 0
        for write in writes:
            if write.seq_id in seen:
                raise ValueError(f"sequence {write.seq_id} appears twice in one batch")
            seen.add(write.seq_id)
            if write.start != self.length(write.seq_id):
                raise ValueError(
                    f"sequence {write.seq_id} holds {self.length(write.seq_id)} tokens; "
                    f"a write at position {write.start} does not follow them"
                )
            needed += self._new_blocks(write) + self._needs_copy(write)
        if needed > len(self._free):
            raise KvCacheFull(f"{needed} KV blocks needed, {len(self._free)} free")
        copies: list[tuple[int, int]] = []
        for write in writes:
            table = self._tables.setdefault(write.seq_id, [])
            if self._needs_copy(write):
                shared = table[-1]
                table[-1] = self._take()
                self._refs[shared] -= 1
                copies.append((shared, table[-1]))
            table.extend(self._take() for _ in range(self._new_blocks(write)))
            self._lengths[write.seq_id] = write.start + write.count
        return copies

    def _new_blocks(self, write: Write) -> int:
        return self._blocks_for(write.start + write.count) - len(self._tables.get(write.seq_id, ()))

    def _needs_copy(self, write: Write) -> bool:
        """Whether the write lands in a partial last block that another sequence also holds."""
        table = self._tables.get(write.seq_id)
        if not table or write.start % self.block_size == 0:
            return False
        return self._refs[table[-1]] > 1

    def _take(self) -> int:
        block = self._free.popleft()
        self._refs[block] = 1
        return block

    def copy_sequence(self, source: int, target: int) -> None:
        """Make `target` hold what `source` holds, sharing its blocks."""
        if source == target:
            return
        self.remove_sequence(target)
        table = self.table(source)
        for block in table:
            self._refs[block] += 1
        self._tables[target] = table
        self._lengths[target] = self.length(source)

    def remove_sequence(self, seq_id: int) -> None:
        """Drop the sequence's hold on its blocks; those no one holds go back to the free list."""
        for block in self._tables.pop(seq_id, ()):
            self._refs[block] -= 1
            if self._refs[block] == 0:
                self._free.append(block)
        self._lengths.pop(seq_id, None)
