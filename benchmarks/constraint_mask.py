"""Per-step cost of a grammar mask on the Qwen2.5 vocabulary (151,665 tokens): llguidance (what
the server uses) against llama.cpp's grammar sampler on the same tool-call grammar.

Run: .venv/bin/python -m benchmarks.constraint_mask
"""

from __future__ import annotations

import ctypes
import json
import time

import llama_cpp.llama_cpp as llama
import numpy as np
from llama_cpp import llama_grammar
from tests._vocab import gguf_vocab

from aios_serve.engine.generation.constraints import tool_call_grammar
from aios_serve.engine.generation.constraints.grammars import function_call_schema

WEATHER = {
    "type": "object",
    "properties": {
        "location": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["location", "unit"],
}
CALL = (
    '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris", "unit": "celsius"}}'
    "\n</tool_call>"
)


def main() -> None:
    vocab, cvocab = gguf_vocab("qwen2.5-coder-0.5b-instruct")
    ids = vocab.tokenize(CALL)
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(vocab.n_vocab).astype(np.float32)

    constraint = cvocab.compile(tool_call_grammar([("get_weather", WEATHER)])).new_constraint()
    llg: list[float] = []
    for token in ids:
        work = logits.copy()
        start = time.perf_counter()
        constraint.mask(work)
        llg.append(time.perf_counter() - start)
        assert np.isfinite(work[token]) and constraint.accept(token)

    gbnf = llama_grammar.json_schema_to_gbnf(json.dumps(function_call_schema("get_weather", WEATHER)))
    gbnf = gbnf.replace("root ::=", "call ::=", 1) + '\nroot ::= "<tool_call>\\n" call "\\n</tool_call>"\n'
    sampler = llama.llama_sampler_init_grammar(vocab.vocab, gbnf.encode(), b"root")
    data = (llama.llama_token_data * vocab.n_vocab)()
    view = np.frombuffer(data, dtype=np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)]))
    gbnf_times: list[float] = []
    for token in ids:
        view["id"], view["logit"], view["p"] = np.arange(vocab.n_vocab), logits, 0
        candidates = llama.llama_token_data_array(data=data, size=vocab.n_vocab, selected=-1, sorted=False)
        start = time.perf_counter()
        llama.llama_sampler_apply(sampler, ctypes.byref(candidates))
        gbnf_times.append(time.perf_counter() - start)
        assert np.isfinite(view["logit"][token])
        llama.llama_sampler_accept(sampler, token)
    llama.llama_sampler_free(sampler)
    for name, times in (("llguidance (mask + apply)", llg), ("llama.cpp grammar sampler", gbnf_times)):
        ms = np.array(times) * 1e3
        print(
            f"{name}: {len(ms)} steps, mean {ms.mean():.2f} ms, "
            f"median {np.median(ms):.2f} ms, max {ms.max():.2f} ms"
        )


if __name__ == "__main__":
    main()
