"""The model registry: served names to loaded models, with capability checks.

The one place that knows every kind of model: it builds each from its spec (engines, remote
proxy), so it sits above them; what a served model is lives below them, in `served_model`."""

from __future__ import annotations

import asyncio
import logging

from aios_serve.config import Capability, ModelSpec, ServerConfig
from aios_serve.errors import ApiError, ErrorKind
from aios_serve.served_model import ServedModel, capabilities_of

log = logging.getLogger("aios_serve.registry")


def build_model(spec: ModelSpec) -> ServedModel:
    """Pick the engine for a model's kind. Imports are lazy so unused engines cost nothing."""
    if spec.kind == "remote":
        from aios_serve.remote.model import RemoteModel

        return RemoteModel(spec)
    if spec.kind in ("embedding", "cross-encoder"):
        from aios_serve.engine.encoder import EncoderModel

        return EncoderModel(spec)
    from aios_serve.engine.generation import create_generation_model

    return create_generation_model(spec)


def check_options(spec: ModelSpec) -> None:
    """Validate a model's engine options without loading it (pydantic.ValidationError names
    what is wrong), so a bad option stops `serve` before any model or deployment starts."""
    if spec.kind in ("embedding", "cross-encoder"):
        from aios_serve.engine.encoder import EncoderOptions

        EncoderOptions.model_validate(spec.options)
    elif spec.kind == "generate":
        from aios_serve.engine.generation.options import GenerationOptions

        GenerationOptions.model_validate(spec.options)


class ModelRegistry:
    """Holds every served model; resolves a request's `model` field to one of them."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._models: dict[str, ServedModel] = {}
        self._by_name: dict[str, ServedModel] = {}
        self._loaded = asyncio.Event()
        self.load_error: BaseException | None = None
        for spec in config.models:
            model = build_model(spec)
            self._models[spec.name] = model
            for name in spec.served_names:
                self._by_name[name] = model

    @property
    def served_names(self) -> list[str]:
        return list(self._by_name)

    @property
    def models(self) -> list[ServedModel]:
        return list(self._models.values())

    @property
    def ready(self) -> bool:
        return self._loaded.is_set()

    async def start(self) -> None:
        """Load every model; `ready` turns true once all have loaded."""
        try:
            for model in self._models.values():
                log.info("loading model %s", model.spec.name)
                await model.start()
        except BaseException as exc:  # surfaced through /health and the CLI
            self.load_error = exc
            log.exception("model loading failed")
            raise
        self._loaded.set()

    async def stop(self) -> None:
        for model in self._models.values():
            await model.stop()

    def resolve(self, name: str, capability: Capability) -> ServedModel:
        """The model served under `name`, checked for `capability`."""
        model = self._by_name.get(name)
        if model is None:
            raise ApiError(
                ErrorKind.MODEL_NOT_FOUND,
                f"The model `{name}` does not exist. Served models: {', '.join(self.served_names)}.",
                param="model",
            )
        capabilities = capabilities_of(model)
        if capability not in capabilities:
            raise ApiError(
                ErrorKind.UNSUPPORTED_TASK,
                f"The model `{name}` does not support {capability}; it supports {', '.join(capabilities)}.",
                param="model",
            )
        if not self.ready:
            raise ApiError(
                ErrorKind.OVERLOADED,
                "Models are still loading; retry shortly.",
                headers={"Retry-After": "1"},
            )
        return model
