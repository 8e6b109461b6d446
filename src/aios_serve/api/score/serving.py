"""Score serving: 1:1, 1:N or N:N text pairs, scored like rerank."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from aios_serve.api.common.pipeline import ServingPipeline
from aios_serve.api.common.protocol import new_id, prompt_only_usage, unix_now
from aios_serve.api.common.request_state import note_usage
from aios_serve.api.common.responses import json_response
from aios_serve.api.embeddings.serving import as_encoder
from aios_serve.api.score.protocol import ScoreRequest
from aios_serve.engine.relevance import PairScores, score_pairs
from aios_serve.errors import invalid
from aios_serve.limits import check_count
from aios_serve.registry import ServedModel

TextPairs = tuple[list[str], list[str]]


def as_list(texts: str | list[str]) -> list[str]:
    return [texts] if isinstance(texts, str) else texts


class ScoreServing(ServingPipeline[ScoreRequest, TextPairs, PairScores]):
    capability = "score"

    def validate(self, request: ScoreRequest, model: ServedModel) -> None:
        first, second = as_list(request.text_1), as_list(request.text_2)
        check_count(
            max(len(first), len(second)), self.registry.config.limits.max_score_pairs, "text_2", "pairs"
        )
        if len(first) > 1 and len(first) != len(second):
            raise invalid(
                f"text_1 has {len(first)} texts and text_2 has {len(second)}; pairs must be 1:1, 1:N or N:N.",
                "text_2",
            )

    async def preprocess(self, request: ScoreRequest, model: ServedModel) -> TextPairs:
        return as_list(request.text_1), as_list(request.text_2)

    async def run(
        self, request: ScoreRequest, model: ServedModel, work: TextPairs, raw: Request
    ) -> PairScores:
        first, second = work
        result = await score_pairs(
            as_encoder(model),
            first,
            second,
            request.truncate_prompt_tokens,
            "text_1",
            "text_2",
            self.registry.config.limits.max_request_tokens,
        )
        note_usage(raw, result.prompt_tokens)
        return result

    def build_response(
        self, request: ScoreRequest, model: ServedModel, work: TextPairs, result: PairScores
    ) -> Response:
        tokens = result.prompt_tokens
        return json_response(
            {
                "id": new_id("score"),
                "object": "list",
                "created": unix_now(),
                "model": request.model,
                "data": [
                    {"index": i, "object": "score", "score": float(score)}
                    for i, score in enumerate(result.scores)
                ],
                "usage": prompt_only_usage(tokens),
            }
        )
