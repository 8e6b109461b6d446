"""Input texts the encoder tests generate (seeded, so every run sends the same)."""

from __future__ import annotations

import random


def mixed_texts(count: int, seed: int, longest: int = 250) -> list[str]:
    """Texts of 1 to `longest` words, so a batch spans many attention groups."""
    rng = random.Random(seed)
    words = ["river", "stone", "light", "market", "garden", "music", "paper", "window", "winter"]
    sizes = [size for size in (1, 3, 20, 50, 90, 250) if size <= longest]
    return [" ".join(rng.choice(words) for _ in range(rng.choice(sizes))) for _ in range(count)]
