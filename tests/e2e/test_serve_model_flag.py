"""`aios-serve serve --model PATH`: serving local models without a config file, the kind read
from their files, the served names, the errors for paths nothing matches, and the start-up banner."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from aios_serve.models.bundled import resolve_bundled
from tests.cpu import AUTO_OPENVINO_COMPUTE, AUTO_OPENVINO_WEIGHTS
from tests.e2e.server import Server

SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1"  # the bundled GGUF's file name without .gguf
MINILM = "all-minilm-l6-v2"
BANNER_WAIT_S = 10


@pytest.fixture(scope="module")
def smol_gguf() -> Path:
    return resolve_bundled("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sentence-transformers folder, under a link that carries its model's name."""
    link = tmp_path_factory.mktemp("models") / MINILM
    link.symlink_to(resolve_bundled(MINILM), target_is_directory=True)
    return link


def _serve_args(folder: Path, *flags: str) -> tuple[str, ...]:
    return ("--log-level", "info", "--data-dir", str(folder / "data"), *flags)


@pytest.fixture(scope="module")
def default_names_server(
    tmp_path_factory: pytest.TempPathFactory, smol_gguf: Path, minilm_dir: Path
) -> Iterator[tuple[str, Path]]:
    """A GGUF and a folder served under their own names; one --max-model-len each, in order."""
    folder = tmp_path_factory.mktemp("serve-model")
    flags = _serve_args(
        folder, "--model", str(smol_gguf), "--model", str(minilm_dir), "--max-model-len", "1024",
        "--max-model-len", "256",
    )  # fmt: skip
    with Server(folder, args=flags) as server:
        yield server.url, server.log_path


@pytest.fixture(scope="module")
def named_server(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Iterator[str]:
    """One folder under a name and an alias given on the command line."""
    folder = tmp_path_factory.mktemp("serve-model-named")
    flags = _serve_args(
        folder, "--model", str(minilm_dir), "--served-model-name", "my-embedder", "emb-alias",
        "--kind", "embedding", "--engine", "transformers",
    )  # fmt: skip
    with Server(folder, args=flags) as server:
        yield server.url


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_a_gguf_answers_chat_under_its_file_name(default_names_server: tuple[str, Path]) -> None:
    url, _ = default_names_server
    reply = _client(url).chat.completions.create(
        model=SMOL_FILE,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
        temperature=0,
    )
    assert reply.model == SMOL_FILE
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_a_sentence_transformers_folder_answers_embeddings_under_its_folder_name(
    default_names_server: tuple[str, Path],
) -> None:
    url, _ = default_names_server
    result = _client(url).embeddings.create(model=MINILM, input=["hello", "world"])
    assert [len(item.embedding) for item in result.data] == [384, 384]


def test_models_list_the_detected_kinds_and_lengths(default_names_server: tuple[str, Path]) -> None:
    url, _ = default_names_server
    cards = {card["id"]: card for card in httpx.get(f"{url}/v1/models").json()["data"]}
    assert set(cards) == {SMOL_FILE, MINILM}
    assert {"chat", "completions"} <= set(cards[SMOL_FILE]["capabilities"])
    assert {"embeddings", "rerank", "score"} <= set(cards[MINILM]["capabilities"])
    assert (cards[SMOL_FILE]["max_model_len"], cards[MINILM]["max_model_len"]) == (1024, 256)


def _banner(log_path: Path) -> str:
    """The banner's lines from the server log, waiting for the last of them."""
    deadline = time.monotonic() + BANNER_WAIT_S
    while True:
        lines = [line for line in log_path.read_text().splitlines() if "aios_serve.banner" in line]
        if any("/metrics" in line for line in lines) or time.monotonic() > deadline:
            return "\n".join(lines)
        time.sleep(0.2)


def test_the_banner_lists_every_model_and_the_urls(default_names_server: tuple[str, Path]) -> None:
    url, log_path = default_names_server
    banner = _banner(log_path)
    assert re.search(
        rf"{re.escape(SMOL_FILE)}: kind generate; backend openvino "
        rf"\(precision {AUTO_OPENVINO_COMPUTE} \(asked auto; CPU [a-z0-9_ ]+"
        r"(?:ONEDNN_MAX_CPU_ISA=[A-Z0-9_]+)?\), KV [a-z0-9]+ \d+x32 cells, "
        rf"prefix caching on; weights {AUTO_OPENVINO_WEIGHTS}\); "
        r"capabilities [^;]*chat[^;]*; max_model_len 1024",
        banner,
    ), banner
    assert re.search(
        rf"{MINILM}: kind embedding; backend transformers; capabilities embeddings, rerank, score"
        r"[^;]*; max_model_len 256",
        banner,
    ), banner
    for path in ("/", "/docs", "/metrics"):
        assert f"{url}{path}\n" in banner + "\n", banner
    assert banner.count("aios_serve.banner") == 6, banner  # announced once


def test_served_model_name_gives_the_name_and_its_aliases(named_server: str) -> None:
    ids = [card["id"] for card in httpx.get(f"{named_server}/v1/models").json()["data"]]
    assert ids == ["my-embedder", "emb-alias"]
    result = _client(named_server).embeddings.create(model="emb-alias", input="hello")
    assert len(result.data[0].embedding) == 384


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "aios_serve.cli", "serve", "--port", "1", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_a_path_that_does_not_exist_exits_1_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model.gguf"
    result = _run_cli("--model", str(missing))
    assert result.returncode == 1
    assert f"{missing} does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_layout_exits_1_naming_its_architectures(tmp_path: Path) -> None:
    folder = tmp_path / "tagger"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["FooForTokenClassification"]}))
    result = _run_cli("--model", str(folder))
    assert result.returncode == 1
    assert "architectures: FooForTokenClassification" in result.stderr
    assert "Traceback" not in result.stderr


def test_model_and_config_together_exit_1(tmp_path: Path, smol_gguf: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text("models: []\n")
    result = _run_cli("--model", str(smol_gguf), "--config", str(config))
    assert result.returncode == 1
    assert "either --config or --model" in result.stderr


def test_a_config_that_is_missing_or_invalid_exits_1_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-config.yaml"
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("models:\n  - name: x\n    kind: nope\n")
    for config, why in ((missing, "No such file"), (invalid, "models.0.kind")):
        result = _run_cli("--config", str(config))
        assert result.returncode == 1
        assert f"config {config}" in result.stderr and why in result.stderr
        assert "Traceback" not in result.stderr


def test_invalid_engine_options_exit_1_naming_them(tmp_path: Path) -> None:
    for options, why in (
        ("{matmul_kernels: ggml, weights_type: q8_0}", "drop weights_type: q8_0"),
        ("{frobnicate: 3}", "frobnicate"),
    ):
        config = tmp_path / "models.yaml"
        model = "name: smol, kind: generate, bundled: smollm2-135m-instruct"
        config.write_text(f"models:\n  - {{{model}, options: {options}}}\n")
        for ray in ((), ("--ray",)):  # checked before any model loads or any deployment starts
            result = _run_cli("--config", str(config), *ray)
            assert result.returncode == 1
            assert "invalid model options" in result.stderr and why in result.stderr
            assert "Traceback" not in result.stderr


def test_serve_ray_without_ray_exits_1_naming_what_is_missing(tmp_path: Path) -> None:
    if importlib.util.find_spec("ray") is not None:
        pytest.skip("ray is installed here: make test-ray covers serve --ray")
    config = tmp_path / "models.yaml"
    config.write_text("models:\n  - {name: smol, kind: generate, bundled: smollm2-135m-instruct}\n")
    result = _run_cli("--config", str(config), "--ray")
    assert result.returncode == 1
    assert "serve --ray needs ray[serve]" in result.stderr and "make ray-venv" in result.stderr
    assert "Traceback" not in result.stderr
