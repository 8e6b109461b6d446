"""OpenVINO GenAI's continuous-batching pipeline as a generation engine (GGUF files)."""

from __future__ import annotations

from aios_serve.engine.generation.openvino.engine import OpenVinoEngine
from aios_serve.engine.generation.openvino.loading import openvino_weights

__all__ = ["OpenVinoEngine", "openvino_weights"]
