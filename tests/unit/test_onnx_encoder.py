"""The ONNX Runtime encoder backend: folders it cannot serve are clear load errors (served, it
answers as torch does: tests/e2e/test_onnx_backend.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from aios_serve.backends.encoder_base import EncoderLoadError
from aios_serve.backends.onnx_encoder import OnnxEncoderBackend


def test_unsupported_folders_are_clear_load_errors(
    cross_encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIOS_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(EncoderLoadError, match=r"no config\.json"):
        OnnxEncoderBackend(tmp_path, cross_encoder=False)
    no_weights = shutil.copytree(cross_encoder_dir, tmp_path / "no-weights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(EncoderLoadError, match="cannot export to ONNX"):
        OnnxEncoderBackend(no_weights, cross_encoder=True)
    broken = shutil.copytree(cross_encoder_dir, tmp_path / "broken-onnx")
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(EncoderLoadError, match="ONNX Runtime cannot load it"):
        OnnxEncoderBackend(broken, cross_encoder=True)
