"""Score serving: 1:1, 1:N or N:N text pairs, scored like rerank."""

from __future__ import annotations

from starlette.responses import Response

from aios_serve.api.common.context import RequestContext, Usage
from aios_serve.api.common.encoder_serving import PairScoringServing
from aios_serve.api.common.protocol import UsageInfo, new_id, unix_now
from aios_serve.api.common.responses import json_response
from aios_serve.api.score.protocol import ScoreData, ScoreRequest, ScoreResponse
from aios_serve.engine.encoder import EncoderModel, PairInputs, PairScores
from aios_serve.errors import invalid
from aios_serve.limits import check_count


def as_list(texts: str | list[str]) -> list[str]:
    return [texts] if isinstance(texts, str) else texts


class ScoreServing(PairScoringServing[ScoreRequest]):
    capability = "score"
    query_param = "text_1"
    document_param = "text_2"

    def validate(self, context: RequestContext, request: ScoreRequest, model: EncoderModel) -> None:
        first, second = as_list(request.text_1), as_list(request.text_2)
        check_count(
            max(len(first), len(second)), self.registry.config.limits.max_score_pairs, "text_2", "pairs"
        )
        if len(first) > 1 and len(first) != len(second):
            raise invalid(
                f"text_1 has {len(first)} texts and text_2 has {len(second)}; pairs must be 1:1, 1:N or N:N.",
                "text_2",
            )

    async def texts(
        self, context: RequestContext, request: ScoreRequest, model: EncoderModel
    ) -> tuple[list[str], list[str]]:
        return as_list(request.text_1), as_list(request.text_2)

    def build_response(
        self,
        context: RequestContext,
        request: ScoreRequest,
        model: EncoderModel,
        work: PairInputs,
        result: PairScores,
    ) -> Response:
        context.usage = usage = Usage(result.prompt_tokens)
        body = ScoreResponse(
            id=new_id("score"),
            created=unix_now(),
            model=request.model,
            data=[ScoreData(index=i, score=float(score)) for i, score in enumerate(result.scores)],
            usage=UsageInfo.of(usage),
        )
        return json_response(body)
