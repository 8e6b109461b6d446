"""Rerank serving: score the query against each document, sort, cut to top_n."""

from __future__ import annotations

from starlette.responses import Response

from aios_serve.api.common.context import RequestContext, Usage
from aios_serve.api.common.encoder_serving import PairScoringServing
from aios_serve.api.common.protocol import new_id
from aios_serve.api.common.responses import json_response
from aios_serve.api.rerank.protocol import (
    RerankDocument,
    RerankRequest,
    RerankResponse,
    RerankResult,
    RerankUsage,
)
from aios_serve.engine.encoder import EncoderModel, PairInputs, PairScores
from aios_serve.limits import check_count


class RerankServing(PairScoringServing[RerankRequest]):
    capability = "rerank"
    query_param = "query"
    document_param = "documents"

    def validate(self, context: RequestContext, request: RerankRequest, model: EncoderModel) -> None:
        limit = self.registry.config.limits.max_rerank_documents
        check_count(len(request.documents), limit, "documents", "documents")

    async def texts(
        self, context: RequestContext, request: RerankRequest, model: EncoderModel
    ) -> tuple[list[str], list[str]]:
        documents = request.document_texts()
        if request.max_tokens_per_doc is not None:
            documents = await model.clip_texts(documents, request.max_tokens_per_doc)
        return [request.query], documents

    def build_response(
        self,
        context: RequestContext,
        request: RerankRequest,
        model: EncoderModel,
        work: PairInputs,
        result: PairScores,
    ) -> Response:
        context.usage = Usage(result.prompt_tokens)
        scores = [float(score) for score in result.scores]
        order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
        if request.top_n:
            order = order[: request.top_n]
        originals = request.document_texts()
        body = RerankResponse(
            id=new_id("rerank"),
            model=request.model,
            usage=RerankUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens),
            results=[
                RerankResult(
                    index=index,
                    relevance_score=scores[index],
                    document=RerankDocument(text=originals[index]) if request.return_documents else None,
                )
                for index in order
            ],
        )
        return json_response(body.model_dump(mode="json", exclude_none=True))
