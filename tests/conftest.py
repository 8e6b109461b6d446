"""Shared fixtures: real servers on real models, started once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.guarded import GuardedServer, guarded_server
from tests.servers import running_server, write_config
from tests.tiny_models import build_cross_encoder

EMBEDDING = "all-minilm-l6-v2"
EMBEDDING_FP32 = "minilm-fp32"
EMBEDDING_ALIAS = "sds/bge-m3"
CROSS_ENCODER = "tiny-cross-encoder"


@pytest.fixture(scope="session")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cross_encoder(tmp_path_factory.mktemp("models") / "tiny-cross-encoder")


@pytest.fixture(scope="session")
def encoder_url(tmp_path_factory: pytest.TempPathFactory, cross_encoder_dir: Path) -> Iterator[str]:
    """One server with the bundled embedding model (default precision, and fp32) and a cross-encoder."""
    folder = tmp_path_factory.mktemp("encoder-server")
    config = write_config(
        folder,
        [
            {
                "name": EMBEDDING,
                "aliases": [EMBEDDING_ALIAS],
                "kind": "embedding",
                "bundled": "all-minilm-l6-v2",
            },
            {
                "name": EMBEDDING_FP32,
                "kind": "embedding",
                "bundled": "all-minilm-l6-v2",
                "options": {"dtype": "float32"},
            },
            {
                "name": CROSS_ENCODER,
                "kind": "cross-encoder",
                "path": str(cross_encoder_dir),
                "options": {"dtype": "float32"},
            },
        ],
    )
    with running_server(config, folder / "server.log") as url:
        yield url


@pytest.fixture(scope="session")
def guarded(tmp_path_factory: pytest.TempPathFactory, cross_encoder_dir: Path) -> Iterator[GuardedServer]:
    """One server with API keys, tight limits, a small queue and a misconfigured model."""
    with guarded_server(tmp_path_factory.mktemp("guarded-server"), cross_encoder_dir) as server:
        yield server
