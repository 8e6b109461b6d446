"""Text generation: the continuous-batching engine, sampling, and the served model.

What the API layer needs from here is exported below: the model, its sampling parameters, the
output constraint with the tool-call tags it wraps calls in, and what a request streams back.
"""

from __future__ import annotations

from aios_serve.config import ModelSpec
from aios_serve.engine.generation.chat_template import ChatTemplateError
from aios_serve.engine.generation.constraints.grammars import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from aios_serve.engine.generation.constraints.spec import OutputConstraint
from aios_serve.engine.generation.interface import ChoiceUpdate, RequestUpdate, UpdateStream
from aios_serve.engine.generation.model import GenerationModel
from aios_serve.engine.generation.sampling import SamplingParams, TokenLogprobs
from aios_serve.served_model import ServedModel

__all__ = [
    "TOOL_CALL_CLOSE",
    "TOOL_CALL_OPEN",
    "ChatTemplateError",
    "ChoiceUpdate",
    "GenerationModel",
    "OutputConstraint",
    "RequestUpdate",
    "SamplingParams",
    "TokenLogprobs",
    "UpdateStream",
    "create_generation_model",
]


def create_generation_model(spec: ModelSpec) -> ServedModel:
    """The registry's entry point for `kind: generate` models."""
    return GenerationModel(spec)
