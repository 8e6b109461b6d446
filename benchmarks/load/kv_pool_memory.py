"""Where the OpenVINO worker's memory goes under chat load: its KV pool, written a block at a time.

The openvino engine's paged backend on SmolLM2 (the server's weights route, f32, one thread,
prefix caching on) driven directly, no HTTP, no server: rounds of 8 distinct short prompts, 16
greedy tokens each, with RSS and the blocks ever written after every 10 rounds. Run it with the
server's pool (`kv_cache_gb`) and with a pool of a few blocks: if RSS grows with the first and not
the second, the growth is the pool's pages being written for the first time, bounded by its size.

    PYTHONPATH=src python benchmarks/load/kv_pool_memory.py --cache-gb 1
    PYTHONPATH=src python benchmarks/load/kv_pool_memory.py --blocks 64
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np

from aios_serve.backends.openvino_paged import OpenVinoPagedModel, paged_ir
from aios_serve.backends.protocols.generation import BatchItem
from aios_serve.models.bundled import resolve_bundled

MIB = 1024 * 1024
WORDS = ["apple", "river", "stone", "cloud", "engine", "garden", "violin", "copper", "desert", "orbit"]
SEQUENCES = 8
TOKENS = 16


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def backend(cache_gb: int, blocks: int) -> OpenVinoPagedModel:
    """The backend as the server builds it, with the pool in GB or in blocks."""
    gguf = resolve_bundled("smollm2-135m-instruct")
    return OpenVinoPagedModel(
        gguf,
        ir=paged_ir(gguf)[0],
        context_length=2048,
        max_sequences=SEQUENCES,
        max_batch_tokens=512,
        n_threads=1,
        precision="f32",
        kv_cache_gb=cache_gb,
        num_blocks=blocks or None,
    )


def one_round(model: OpenVinoPagedModel, prompts: list[list[int]], first_id: int) -> None:
    """Prefill the prompts together, decode TOKENS greedy tokens each, free their blocks."""
    ids = list(range(first_id, first_id + len(prompts)))
    items = [BatchItem(list(p), 0, [i], want_logits=True) for i, p in zip(ids, prompts, strict=True)]
    for _ in range(TOKENS):
        model.decode(items)
        items = [
            BatchItem(
                [int(np.argmax(item.logits))],
                item.start_pos + len(item.tokens),
                item.seq_ids,
                want_logits=True,
            )
            for item in items
        ]
    for seq_id in ids:
        model.remove_sequence(seq_id)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache-gb", type=int, default=1)
    parser.add_argument("--blocks", type=int, default=0, help="the pool in blocks instead")
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    started = time.monotonic()
    model = backend(args.cache_gb, args.blocks)
    rng = random.Random(5)
    print(
        f"loaded in {time.monotonic() - started:.0f} s: RSS {rss_mib():.0f} MiB, {model.describe()}",
        flush=True,
    )
    request_id = 0
    for round_number in range(1, args.rounds + 1):
        texts = [
            f"{request_id + k}: " + " ".join(rng.choice(WORDS) for _ in range(24)) for k in range(SEQUENCES)
        ]
        one_round(model, [model.tokenize(t, True) for t in texts], request_id)
        request_id += SEQUENCES
        if round_number % 10 == 0:
            print(
                f"{time.monotonic() - started:5.0f} s  round {round_number:4d}  requests {request_id:5d}  "
                f"RSS {rss_mib():6.0f} MiB",
                flush=True,
            )


if __name__ == "__main__":
    main()
