"""The shared servers: one session fixture per standard configuration (tests/e2e/configs.py),
each a real `aios-serve` process started on first use and stopped at the end of the session.

    encoder          MiniLM (default precision + alias, fp32) and a tiny cross-encoder
    guarded          API keys, tight limits, a small queue and a misconfigured model
    smol_openvino    SmolLM2 on OpenVINO (what `engine: auto` picks) and MiniLM as `minilm`
    smol_llama_cpp   SmolLM2 on llama.cpp and MiniLM as `minilm`
    smol_server      module-scoped, parametrized over both engines (`smol_engine` names the
                     one): a module's tests run on one engine's server, then on the other's
    tools            Qwen2.5-Coder-0.5B (tools, structured output) and `qwen-think` (reasoning)

Each yields a `Server` (tests/e2e/server.py): `.url`, `.client()`, `.log_text()`, ...; the
`*_client` fixtures are their openai clients. A test that needs a configuration of its own makes
a `Server` itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e import configs
from tests.e2e.server import Server


def _serve(tmp_path_factory: pytest.TempPathFactory, name: str, config: dict[str, Any]) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp(name), **config) as server:
        yield server


@pytest.fixture(scope="session")
def encoder(tmp_path_factory: pytest.TempPathFactory, cross_encoder_dir: Path) -> Iterator[Server]:
    yield from _serve(tmp_path_factory, "encoder-server", configs.encoder_server(cross_encoder_dir))


@pytest.fixture(scope="session")
def encoder_client(encoder: Server) -> openai.OpenAI:
    return encoder.client()


@pytest.fixture(scope="session")
def guarded(tmp_path_factory: pytest.TempPathFactory, cross_encoder_dir: Path) -> Iterator[Server]:
    yield from _serve(tmp_path_factory, "guarded-server", configs.guarded_server(cross_encoder_dir))


@pytest.fixture(scope="session")
def smol_openvino(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _serve(tmp_path_factory, "smol-openvino", configs.smol_server("openvino"))


@pytest.fixture(scope="session")
def smol_llama_cpp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _serve(tmp_path_factory, "smol-llama-cpp", configs.smol_server("llama.cpp"))


SMOL_SERVERS = {"openvino": "smol_openvino", "llama.cpp": "smol_llama_cpp"}


@pytest.fixture(scope="module", params=configs.ENGINES)
def smol_engine(request: pytest.FixtureRequest) -> str:
    """Each engine in turn: the one `smol_server` runs on."""
    engine: str = request.param
    return engine


@pytest.fixture(scope="module")
def smol_server(smol_engine: str, request: pytest.FixtureRequest) -> Server:
    """The SmolLM2 server of each engine in turn (`smol_engine` names it)."""
    server: Server = request.getfixturevalue(SMOL_SERVERS[smol_engine])
    return server


@pytest.fixture(scope="module")
def smol_client(smol_server: Server) -> openai.OpenAI:
    return smol_server.client(timeout=120)


@pytest.fixture(scope="session")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _serve(tmp_path_factory, "tools-server", configs.tools_server())


@pytest.fixture(scope="session")
def tools_client(tools: Server) -> openai.OpenAI:
    return tools.client()
