"""What both the unit and the e2e tests use: the tiny cross-encoder, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_models import build_cross_encoder


@pytest.fixture(scope="session")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cross_encoder(tmp_path_factory.mktemp("models") / "tiny-cross-encoder")
