"""Where the OpenVINO worker's memory goes under chat load: its KV pool, written a block at a time.

OpenVINO GenAI's ContinuousBatchingPipeline on SmolLM2 (the server's weights route, f32, one
thread, prefix caching on), no HTTP, no server: rounds of 8 distinct short prompts, 16 tokens each,
with RSS after every 10 rounds. Run it with the server's pool (`cache_size`, GB) and with a pool
of a few blocks (`num_kv_blocks`): if RSS grows with the first and not the second, the growth is
the pool's pages being written for the first time, bounded by its size.

    PYTHONPATH=src python benchmarks/load/kv_pool_memory.py --cache-gb 1
    PYTHONPATH=src python benchmarks/load/kv_pool_memory.py --blocks 64
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np

from aios_serve.backends.llama_cpp import LlamaCppVocab
from aios_serve.engine.generation.openvino import precision
from aios_serve.engine.generation.openvino.loading import openvino_weights
from aios_serve.models.bundled import resolve_bundled

MIB = 1024 * 1024
WORDS = ["apple", "river", "stone", "cloud", "engine", "garden", "violin", "copper", "desert", "orbit"]


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def pipeline(cache_gb: int, blocks: int) -> tuple[object, LlamaCppVocab]:
    """The pipeline as the server builds it, with the pool in GB or in blocks."""
    import openvino_genai as ov

    gguf = resolve_bundled("smollm2-135m-instruct")
    scheduler = ov.SchedulerConfig()
    if blocks:
        scheduler.num_kv_blocks = blocks
    else:
        scheduler.cache_size = cache_gb
    scheduler.max_num_batched_tokens = 512
    scheduler.max_num_seqs = 8
    scheduler.enable_prefix_caching = True
    scheduler.dynamic_split_fuse = True
    plugin, _ = precision.choose("f32")
    weights, _ = openvino_weights(gguf)
    properties = {"INFERENCE_NUM_THREADS": 1, **plugin}
    return ov.ContinuousBatchingPipeline(str(weights), scheduler, "CPU", properties), LlamaCppVocab(gguf)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache-gb", type=int, default=1)
    parser.add_argument("--blocks", type=int, default=0, help="the pool in blocks instead (num_kv_blocks)")
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    import openvino as ov_runtime
    import openvino_genai as ov

    started = time.monotonic()
    pipe, vocab = pipeline(args.cache_gb, args.blocks)
    rng = random.Random(5)
    print(f"loaded in {time.monotonic() - started:.0f} s: RSS {rss_mib():.0f} MiB", flush=True)
    request_id = 0
    for round_number in range(1, args.rounds + 1):
        handles = []
        for _ in range(8):
            text = f"{request_id}: " + " ".join(rng.choice(WORDS) for _ in range(24))
            ids = ov_runtime.Tensor(np.asarray([vocab.tokenize(text, True)], dtype=np.int64))
            config = ov.GenerationConfig()
            config.max_new_tokens = 16
            config.ignore_eos = True
            config.do_sample = False
            handles.append(pipe.add_request(request_id, ids, config))  # type: ignore[attr-defined]
            request_id += 1
        while pipe.has_non_finished_requests():  # type: ignore[attr-defined]
            pipe.step()  # type: ignore[attr-defined]
            for handle in handles:
                if handle.can_read():
                    handle.read()
        if round_number % 10 == 0:
            metrics = pipe.get_metrics()  # type: ignore[attr-defined]
            print(
                f"{time.monotonic() - started:5.0f} s  round {round_number:4d}  requests {request_id:5d}  "
                f"RSS {rss_mib():6.0f} MiB  peak cache use {metrics.max_cache_usage:.2f} %",
                flush=True,
            )


if __name__ == "__main__":
    main()
