"""Embedding serving: tokenize, queue for the encoder, encode vectors as float or base64."""

from __future__ import annotations

import base64
from typing import cast

import numpy as np
from starlette.responses import Response

from aios_serve.api.common.context import RequestContext, Usage
from aios_serve.api.common.encoder_serving import encoder_truncation
from aios_serve.api.common.pipeline import ServingPipeline
from aios_serve.api.common.protocol import UsageInfo, new_id, unix_now
from aios_serve.api.common.responses import json_response
from aios_serve.api.embeddings.protocol import EmbeddingData, EmbeddingRequest, EmbeddingResponse
from aios_serve.engine.encoder import EncoderModel, TokenizedTexts
from aios_serve.engine.errors import EngineError
from aios_serve.errors import ApiError, api_error_from_engine, invalid
from aios_serve.limits import check_count, check_total_tokens


def encode_vector(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    """Base64 is little-endian float32 bytes; a float vector stays a numpy row for orjson (the
    response model skips validating it), typed as the JSON array it becomes."""
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4", copy=False).tobytes()).decode("ascii")
    return cast("list[float]", vector)


class EmbeddingServing(ServingPipeline[EmbeddingRequest, EncoderModel, TokenizedTexts, np.ndarray]):
    model_type = EncoderModel
    capability = "embeddings"

    def validate(self, context: RequestContext, request: EmbeddingRequest, model: EncoderModel) -> None:
        given = request.input
        inputs = 1 if isinstance(given, str) or isinstance(given[0], int) else len(given)
        check_count(inputs, self.registry.config.limits.max_embedding_inputs, "input", "inputs")
        if request.dimensions is not None:
            matryoshka = model.options.matryoshka_dimensions
            if not matryoshka:
                raise invalid(
                    f"Model {request.model} does not support matryoshka representation; "
                    "changing output dimensions would give wrong results.",
                    "dimensions",
                )
            if request.dimensions not in matryoshka:
                raise invalid(f"dimensions must be one of {matryoshka}.", "dimensions")

    async def preprocess(
        self, context: RequestContext, request: EmbeddingRequest, model: EncoderModel
    ) -> TokenizedTexts:
        keep = encoder_truncation(request.truncate_prompt_tokens, model, pair=False)
        given = request.input
        if isinstance(given, str):
            work = await model.tokenize_texts([given], keep)
        elif isinstance(given[0], str):
            work = await model.tokenize_texts(cast(list[str], given), keep)
        elif isinstance(given[0], int):
            work = model.token_id_inputs([cast(list[int], given)], keep)
        else:
            work = model.token_id_inputs(cast(list[list[int]], given), keep)
        check_total_tokens(work.token_count, self.registry.config.limits.max_request_tokens, "input")
        return work

    async def run(
        self, context: RequestContext, request: EmbeddingRequest, model: EncoderModel, work: TokenizedTexts
    ) -> np.ndarray:
        return await model.embed(work, dimensions=request.dimensions)

    def build_response(
        self,
        context: RequestContext,
        request: EmbeddingRequest,
        model: EncoderModel,
        work: TokenizedTexts,
        result: np.ndarray,
    ) -> Response:
        context.usage = usage = Usage(work.token_count)
        body = EmbeddingResponse(
            id=new_id("embd"),
            created=unix_now(),
            model=request.model,
            data=[
                EmbeddingData(index=i, embedding=encode_vector(row, request.encoding_format))
                for i, row in enumerate(result)
            ],
            usage=UsageInfo.of(usage),
        )
        return json_response(body)

    def engine_error(self, exc: EngineError, request: EmbeddingRequest) -> ApiError:
        return api_error_from_engine(exc, "input")
