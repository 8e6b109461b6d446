"""One Qwen2.5-Coder-0.5B server shared by the tool, structured-output and reasoning tests
(started on first use, stopped at interpreter exit).

`qwen-think` serves the same weights with `reasoning_parser: think` and a fixture chat template
(THINK_TEMPLATE): no reasoning model ships on PyPI, so the template opens a `<think>` block in
the generation prompt after a one-shot example of a short thought closed by `</think>` and an
answer. Greedy decoding then continues inside the block deterministically, as Qwen3's and
DeepSeek-R1's templates make those models do.
"""

from __future__ import annotations

import atexit
import contextlib
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai

from tests.servers import running_server, write_config

QWEN = "qwen2.5-coder-0.5b-instruct"
QWEN_THINK = "qwen-think"

THINK_TEMPLATE = (
    "<|im_start|>system\nThink briefly inside <think></think>, then give a short answer.<|im_end|>\n"
    "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n"
    "<|im_start|>assistant\n<think>\nTwo plus two makes four.\n</think>\nThe answer is 4.<|im_end|>\n"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n<think>\\n' }}{% endif %}"
)

_state: dict[str, object] = {}


def _start() -> str:
    folder = Path(tempfile.mkdtemp(prefix="tools-server-"))
    common = {"n_threads": 2, "n_ctx": 2048}
    config = write_config(
        folder,
        [
            {"name": QWEN, "kind": "generate", "bundled": QWEN, "options": {**common, "max_num_seqs": 20}},
            {
                "name": QWEN_THINK,
                "kind": "generate",
                "bundled": QWEN,
                "options": {
                    **common,
                    "max_num_seqs": 2,
                    "reasoning_parser": "think",
                    "chat_template": THINK_TEMPLATE,
                },
            },
        ],
    )
    stack = contextlib.ExitStack()
    url = stack.enter_context(running_server(config, folder / "server.log", ("--log-level", "info")))
    atexit.register(stack.close)
    return url


def tools_server() -> str:
    """The shared server's base URL."""
    if "url" not in _state:
        _state["url"] = _start()
    return str(_state["url"])


def client() -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{tools_server()}/v1", api_key="unused", max_retries=0, timeout=300)


def chat_for_seeds(api: openai.OpenAI, seeds: int, **request: Any) -> list[Any]:
    """One Qwen chat request per seed 0..seeds-1 at temperature 1, sent together so the engine
    batches them; the responses in seed order."""

    def ask(seed: int) -> Any:
        return api.chat.completions.create(model=QWEN, seed=seed, temperature=1.0, **request)

    with ThreadPoolExecutor(seeds) as pool:
        return list(pool.map(ask, range(seeds)))
