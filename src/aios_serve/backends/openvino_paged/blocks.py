"""The KV cache's block pool: a block table per sequence id, reference counts, and a prefix cache.

A sequence of L cached tokens holds ceil(L / block_size) blocks. `copy_sequence` shares every
block of the source (n choices after one prefill), each shared block counted once per holder;
a sequence that writes into a block someone else also holds first gets a copy of its own
(copy on write: only the last, partial block is ever written, so only it is copied).
`reserve` plans a whole batch before changing anything, so a batch that does not fit raises
KvCacheFull and leaves the pool as it was.

Prefix cache (vLLM's scheme): once a block is full, it is keyed by its tokens chained through
the key of the block before it, so a key names the whole prefix up to the block's end.
`commit` (after the pass that wrote them) publishes those keys; `reuse_prefix` gives a new
sequence the cached blocks of its prompt's longest cached prefix. A freed block keeps its key
while it waits in the free list, least recently freed first; it loses the key when taken for
other tokens, so the free list is also the eviction order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aios_serve.backends.protocols.generation import KvCacheFull

BlockKey = tuple[int, tuple[int, ...]]
"""A full block's key: its parent's hash (0 for the first block) and its own tokens."""


@dataclass(frozen=True)
class Write:
    """One sequence's share of a batch: `tokens` written from position `start`."""

    seq_id: int
    start: int
    tokens: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.tokens)


@dataclass
class _Held:
    """What one sequence holds: its blocks, the hashes of its full ones, its partial tokens."""

    table: list[int] = field(default_factory=list)
    chain: list[int] = field(default_factory=list)  # hash of the key of each full block
    tail: list[int] = field(default_factory=list)  # tokens of the last, partial block

    def length(self, block_size: int) -> int:
        return len(self.chain) * block_size + len(self.tail)

    def copy(self) -> _Held:
        return _Held(list(self.table), list(self.chain), list(self.tail))


class BlockPool:
    """Fixed-size KV blocks shared between sequences by reference count, with a prefix cache."""

    def __init__(self, num_blocks: int, block_size: int, prefix_caching: bool = True) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError("the pool needs at least one block of at least one token")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self._free: dict[int, None] = dict.fromkeys(range(num_blocks))  # insertion order = LRU
        self._refs = [0] * num_blocks
        self._held: dict[int, _Held] = {}
        self._cached: dict[int, int] = {}  # key hash -> block
        self._key_of: dict[int, BlockKey] = {}  # block -> its key, while it is cached
        self._pending: list[tuple[int, BlockKey]] = []  # filled by `reserve`, published by `commit`

    # --- reading --------------------------------------------------------------------------

    @property
    def free_blocks(self) -> int:
        """Blocks no sequence holds (cached ones among them)."""
        return len(self._free)

    @property
    def used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def cached_blocks(self) -> int:
        return len(self._key_of)

    def table(self, seq_id: int) -> list[int]:
        """The sequence's block ids, in position order (empty for an unknown id)."""
        held = self._held.get(seq_id)
        return list(held.table) if held else []

    def length(self, seq_id: int) -> int:
        """Tokens cached for the sequence."""
        held = self._held.get(seq_id)
        return held.length(self.block_size) if held else 0

    def refs(self, block: int) -> int:
        return self._refs[block]

    def _blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    # --- prefix cache ---------------------------------------------------------------------

    def reuse_prefix(self, seq_id: int, tokens: list[int]) -> int:
        """Give the empty sequence the cached blocks of the longest cached prefix of `tokens`,
        leaving at least one token to run (its logits start the output); returns tokens reused."""
        if self.length(seq_id):
            raise ValueError(f"sequence {seq_id} already holds tokens")
        held = _Held()
        size = self.block_size
        parent = 0
        for first in range(0, (len(tokens) - 1) // size * size if self.prefix_caching else 0, size):
            key = (parent, tuple(tokens[first : first + size]))
            block = self._cached.get(hash(key))
            if block is None or self._key_of.get(block) != key:
                break
            self._free.pop(block, None)
            self._refs[block] += 1
            held.table.append(block)
            held.chain.append(hash(key))
            parent = hash(key)
        if held.table:
            self._held[seq_id] = held
        return len(held.table) * size

    def commit(self) -> None:
        """Publish the keys of the blocks the last reserved batch filled (call after its pass)."""
        for block, key in self._pending:
            if hash(key) not in self._cached and self._refs[block] > 0:
                self._cached[hash(key)] = block
                self._key_of[block] = key
        self._pending.clear()

    def _forget(self, block: int) -> None:
        key = self._key_of.pop(block, None)
        if key is not None and self._cached.get(hash(key)) == block:
            del self._cached[hash(key)]

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
        self._pending.clear()
        copies: list[tuple[int, int]] = []
        for write in writes:
            held = self._held.setdefault(write.seq_id, _Held())
            if self._needs_copy(write):
                shared = held.table[-1]
                held.table[-1] = self._take()
                self._refs[shared] -= 1
                copies.append((shared, held.table[-1]))
            held.table.extend(self._take() for _ in range(self._new_blocks(write)))
            self._extend_chain(held, write.tokens)
        return copies

    def _extend_chain(self, held: _Held, tokens: tuple[int, ...]) -> None:
        """Append tokens to the sequence's record; each block they fill gets a pending key."""
        for token in tokens:
            held.tail.append(token)
            if len(held.tail) == self.block_size:
                key = (held.chain[-1] if held.chain else 0, tuple(held.tail))
                held.chain.append(hash(key))
                held.tail = []
                if self.prefix_caching:
                    self._pending.append((held.table[len(held.chain) - 1], key))

    def _new_blocks(self, write: Write) -> int:
        held = self._held.get(write.seq_id)
        return self._blocks_for(write.start + write.count) - (len(held.table) if held else 0)

    def _needs_copy(self, write: Write) -> bool:
        """Whether the write lands in a partial last block that another sequence also holds."""
        held = self._held.get(write.seq_id)
        if not held or not held.table or write.start % self.block_size == 0:
            return False
        return self._refs[held.table[-1]] > 1

    def _take(self) -> int:
        block = next(iter(self._free))  # the least recently freed
        del self._free[block]
        self._forget(block)
        self._refs[block] = 1
        return block

    def copy_sequence(self, source: int, target: int) -> None:
        """Make `target` hold what `source` holds, sharing its blocks."""
        if source == target:
            return
        self.remove_sequence(target)
        held = self._held.get(source)
        if held is None:
            return
        for block in held.table:
            self._refs[block] += 1
        self._held[target] = held.copy()

    def remove_sequence(self, seq_id: int) -> None:
        """Drop the sequence's hold on its blocks; those no one holds go back to the free list
        (a cached one keeps its key until it is taken again)."""
        held = self._held.pop(seq_id, None)
        for block in reversed(held.table) if held else ():  # a prompt's tail is evicted first
            self._refs[block] -= 1
            if self._refs[block] == 0:
                self._free[block] = None
