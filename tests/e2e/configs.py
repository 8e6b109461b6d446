"""Every model entry the e2e servers are configured with, in one place: the bundled models'
names, one function per model family that gives its config entry (name, kind, weights, options),
and the configurations of the shared servers (their session fixtures are in conftest.py). A test
that needs a server of its own builds its model list from the same functions."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai

# The packaged models (aios_serve.models.bundled).
MINILM = "all-minilm-l6-v2"
SMOL = "smollm2-135m-instruct"
SMOL_ALIAS = "HuggingFaceTB/SmolLM2-135M-Instruct"
QWEN = "qwen2.5-coder-0.5b-instruct"

ENGINES = ("openvino", "llama.cpp")
"""The generation engines the generation tests run on (`auto` takes OpenVINO for a GGUF)."""
AUTO_ENGINE = "openvino"
"""What `engine: auto` resolves to for the bundled GGUFs."""


def _entry(name: str, kind: str, options: dict[str, Any], **fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "kind": kind, **{k: v for k, v in fields.items() if v}}
    if options:
        entry["options"] = options
    return entry


def minilm(
    name: str = MINILM, *, aliases: list[str] | None = None, max_model_len: int | None = None, **options: Any
) -> dict[str, Any]:
    """The bundled MiniLM embedding model (options: dtype, backend, max_batch_size, ...)."""
    return _entry(name, "embedding", options, aliases=aliases, bundled=MINILM, max_model_len=max_model_len)


def minilm_fp32(name: str, *, max_model_len: int | None = None, **options: Any) -> dict[str, Any]:
    """MiniLM in float32: exact against sentence-transformers (the guard and limit tests' models)."""
    return minilm(name, max_model_len=max_model_len, dtype="float32", **options)


def cross_encoder(name: str, path: Path, **options: Any) -> dict[str, Any]:
    """A cross-encoder from a local folder (tests/tiny_models.py builds a tiny one)."""
    return _entry(name, "cross-encoder", options, path=str(path))


def smol(name: str = SMOL, *, aliases: list[str] | None = None, **options: Any) -> dict[str, Any]:
    """The bundled SmolLM2-135M-Instruct GGUF (options: engine, n_threads, max_num_seqs, ...)."""
    return _entry(name, "generate", options, aliases=aliases, bundled=SMOL)


def qwen(name: str = QWEN, **options: Any) -> dict[str, Any]:
    """The bundled Qwen2.5-Coder-0.5B-Instruct GGUF (tools, structured output, reasoning)."""
    return _entry(name, "generate", options, bundled=QWEN)


def local_generate(name: str, path: Path, **options: Any) -> dict[str, Any]:
    """A generation model from a local Hugging Face folder (the transformers engine)."""
    return _entry(name, "generate", options, path=str(path))


def remote(
    name: str, capabilities: list[str], upstreams: list[dict[str, str]], **health: Any
) -> dict[str, Any]:
    """A model that other servers run (`upstreams`: url and, optionally, model); `health`: the
    `remote` options (health_interval_s, ...)."""
    return _entry(name, "remote", {}, capabilities=capabilities, upstreams=upstreams, remote=health)


THINK_TEMPLATE = (
    "<|im_start|>system\nThink briefly inside <think></think>, then give a short answer.<|im_end|>\n"
    "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n"
    "<|im_start|>assistant\n<think>\nTwo plus two makes four.\n</think>\nThe answer is 4.<|im_end|>\n"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n<think>\\n' }}{% endif %}"
)
"""The chat template of `qwen-think` (the tools server): no reasoning model ships on PyPI, so the
template opens a `<think>` block in the generation prompt after a one-shot example of a short
thought closed by `</think>` and an answer. Greedy decoding then continues inside the block
deterministically, as Qwen3's and DeepSeek-R1's templates make those models do."""


# --- the shared servers' configurations (their session fixtures are in conftest.py) ------------
# Each function gives Server's keyword arguments: `models`, top-level settings, command-line args.

EMBEDDING = MINILM
EMBEDDING_FP32 = "minilm-fp32"
EMBEDDING_ALIAS = "sds/bge-m3"
CROSS_ENCODER = "tiny-cross-encoder"


def encoder_server(cross_encoder_dir: Path) -> dict[str, Any]:
    """The bundled embedding model (default precision under a second name, and fp32) and a tiny
    cross-encoder."""
    return {
        "models": [
            minilm(EMBEDDING, aliases=[EMBEDDING_ALIAS]),
            minilm_fp32(EMBEDDING_FP32),
            cross_encoder(CROSS_ENCODER, cross_encoder_dir, dtype="float32"),
        ]
    }


SMOL_EMBEDDING = "minilm"
"""The embedding model beside SmolLM2 on the generation servers."""


def exact(engine: str) -> dict[str, Any]:
    """The options under which `engine`'s batched greedy output equals sequential but for rare
    near-ties: OpenVINO batch-invariant (f32 without dynamic quantization, an f32 KV cache);
    llama.cpp as it is."""
    return {"batch_invariant": True} if engine == "openvino" else {}


def smol_server(engine: str) -> dict[str, Any]:
    """SmolLM2 on `engine` (8 sequences at once, options from `exact`) and an embedding model."""
    return {
        "models": [
            smol(SMOL, aliases=[SMOL_ALIAS], n_threads=2, max_num_seqs=8, engine=engine, **exact(engine)),
            minilm(SMOL_EMBEDDING),
        ]
    }


QWEN_THINK = "qwen-think"


def tools_server() -> dict[str, Any]:
    """Qwen2.5-Coder-0.5B for tools and structured output (20 sequences: 20 seeds at once), and
    the same weights as `qwen-think`, with `reasoning_parser: think` and THINK_TEMPLATE."""
    common = {"n_threads": 2, "n_ctx": 2048}
    return {
        "models": [
            qwen(QWEN, **common, max_num_seqs=20),
            qwen(
                QWEN_THINK, **common, max_num_seqs=2, reasoning_parser="think", chat_template=THINK_TEMPLATE
            ),
        ]
    }


QUEUED = "queued-minilm"
"""Runs one sequence per forward pass and queues at most 2 requests: easy to fill."""
MISCONFIGURED = "misconfigured-minilm"
"""max_model_len 1024 on a model with 512 positions: inputs past 512 tokens fail in the forward pass."""
KEYS = {"alice": "sk-alice-4f1c9d", "bob": "sk-bob-77ab02"}
"""alice's key is in the config (an admin); bob's is given on the command line."""
MAX_BODY_BYTES = 256 * 1024
MAX_EMBEDDING_INPUTS = 64
MAX_REQUEST_TOKENS = 8000


def auth(name: str = "bob") -> dict[str, str]:
    """The guarded server's Authorization header for `name`."""
    return {"Authorization": f"Bearer {KEYS[name]}"}


def guarded_server(cross_encoder_dir: Path) -> dict[str, Any]:
    """API keys, tight limits, a small queue and a misconfigured model."""
    return {
        "models": [
            minilm_fp32(EMBEDDING),
            minilm_fp32(QUEUED, max_batch_tokens=64, max_batch_size=1, max_queued_requests=2),
            minilm_fp32(MISCONFIGURED, max_model_len=1024),
            cross_encoder(CROSS_ENCODER, cross_encoder_dir, dtype="float32"),
        ],
        "api_keys": [{"name": "alice", "key": KEYS["alice"], "admin": True}],
        "limits": {
            "max_body_bytes": MAX_BODY_BYTES,
            "max_embedding_inputs": MAX_EMBEDDING_INPUTS,
            "max_request_tokens": MAX_REQUEST_TOKENS,
        },
        "args": ("--api-key", f"bob:{KEYS['bob']}"),
    }


def chat_for_seeds(api: openai.OpenAI, seeds: int, **request: Any) -> list[Any]:
    """One Qwen chat request per seed 0..seeds-1 at temperature 1 to the tools server, sent
    together so the engine batches them (it runs 20 at once); the responses in seed order."""

    def ask(seed: int) -> Any:
        return api.chat.completions.create(model=QWEN, seed=seed, temperature=1.0, **request)

    with ThreadPoolExecutor(seeds) as pool:
        return list(pool.map(ask, range(seeds)))
