"""Text generation: the continuous-batching engine, sampling, and the served model."""

from __future__ import annotations

from aios_serve.config import ModelSpec
from aios_serve.engine.generation.model import GenerationModel
from aios_serve.engine.generation.sampling import SamplingParams
from aios_serve.registry import ServedModel

__all__ = ["GenerationModel", "SamplingParams", "create_generation_model"]


def create_generation_model(spec: ModelSpec) -> ServedModel:
    """The registry's entry point for `kind: generate` models."""
    return GenerationModel(spec)
