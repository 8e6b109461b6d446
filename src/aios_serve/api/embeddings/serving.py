"""Embedding serving: tokenize, queue for the encoder, encode vectors as float or base64."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import Request
from starlette.responses import Response

from aios_serve.api.common.pipeline import ServingPipeline
from aios_serve.api.common.protocol import new_id, prompt_only_usage, unix_now
from aios_serve.api.common.request_state import note_usage
from aios_serve.api.common.responses import json_response
from aios_serve.api.embeddings.protocol import EmbeddingRequest
from aios_serve.engine.encoder import EncoderModel, TokenizedTexts
from aios_serve.errors import invalid
from aios_serve.limits import check_count, check_total_tokens
from aios_serve.registry import ServedModel


def as_encoder(model: ServedModel) -> EncoderModel:
    assert isinstance(model, EncoderModel), "encoder capability on a non-encoder model"
    return model


def encode_vector(vector: np.ndarray, encoding_format: str) -> list[float] | str | np.ndarray:
    """Float vectors go to orjson as numpy; base64 is little-endian float32 bytes."""
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4", copy=False).tobytes()).decode("ascii")
    return vector


class EmbeddingServing(ServingPipeline[EmbeddingRequest, TokenizedTexts, np.ndarray]):
    capability = "embeddings"

    def validate(self, request: EmbeddingRequest, model: ServedModel) -> None:
        given = request.input
        inputs = 1 if isinstance(given, str) or isinstance(given[0], int) else len(given)
        check_count(inputs, self.registry.config.limits.max_embedding_inputs, "input", "inputs")
        if request.dimensions is not None:
            matryoshka = as_encoder(model).spec.options.get("matryoshka_dimensions")
            if not matryoshka:
                raise invalid(
                    f"Model {request.model} does not support matryoshka representation; "
                    "changing output dimensions would give wrong results.",
                    "dimensions",
                )
            if request.dimensions not in matryoshka:
                raise invalid(f"dimensions must be one of {matryoshka}.", "dimensions")

    async def preprocess(self, request: EmbeddingRequest, model: ServedModel) -> TokenizedTexts:
        work = await self._tokenize(request, model)
        check_total_tokens(work.token_count, self.registry.config.limits.max_request_tokens, "input")
        return work

    async def _tokenize(self, request: EmbeddingRequest, model: ServedModel) -> TokenizedTexts:
        encoder = as_encoder(model)
        given = request.input
        if isinstance(given, str):
            return await encoder.tokenize_texts([given], request.truncate_prompt_tokens)
        if isinstance(given[0], str):
            return await encoder.tokenize_texts(list(given), request.truncate_prompt_tokens)  # type: ignore[arg-type]
        if isinstance(given[0], int):
            return encoder.token_id_inputs([given], request.truncate_prompt_tokens)  # type: ignore[list-item]
        return encoder.token_id_inputs(list(given), request.truncate_prompt_tokens)  # type: ignore[arg-type]

    async def run(
        self, request: EmbeddingRequest, model: ServedModel, work: TokenizedTexts, raw: Request
    ) -> np.ndarray:
        vectors = await as_encoder(model).embed(work)
        note_usage(raw, work.token_count)
        if request.dimensions is not None:
            vectors = vectors[:, : request.dimensions]
            vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors

    def build_response(
        self, request: EmbeddingRequest, model: ServedModel, work: TokenizedTexts, result: np.ndarray
    ) -> Response:
        tokens = work.token_count
        return json_response(
            {
                "id": new_id("embd"),
                "object": "list",
                "created": unix_now(),
                "model": request.model,
                "data": [
                    {
                        "index": i,
                        "object": "embedding",
                        "embedding": encode_vector(row, request.encoding_format),
                    }
                    for i, row in enumerate(result)
                ],
                "usage": prompt_only_usage(tokens),
            }
        )
