"""Rerank serving: score the query against each document, sort, cut to top_n."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from aios_serve.api.common.pipeline import ServingPipeline
from aios_serve.api.common.protocol import new_id
from aios_serve.api.common.request_state import note_usage
from aios_serve.api.common.responses import json_response
from aios_serve.api.embeddings.serving import as_encoder
from aios_serve.api.rerank.protocol import RerankRequest
from aios_serve.engine.relevance import PairScores, score_pairs
from aios_serve.limits import check_count
from aios_serve.registry import ServedModel


class RerankServing(ServingPipeline[RerankRequest, list[str], PairScores]):
    capability = "rerank"

    def validate(self, request: RerankRequest, model: ServedModel) -> None:
        limit = self.registry.config.limits.max_rerank_documents
        check_count(len(request.documents), limit, "documents", "documents")

    async def preprocess(self, request: RerankRequest, model: ServedModel) -> list[str]:
        documents = request.document_texts()
        if request.max_tokens_per_doc is not None:
            documents = await as_encoder(model).clip_texts(documents, request.max_tokens_per_doc)
        return documents

    async def run(
        self, request: RerankRequest, model: ServedModel, work: list[str], raw: Request
    ) -> PairScores:
        result = await score_pairs(
            as_encoder(model),
            [request.query],
            work,
            request.truncate_prompt_tokens,
            "query",
            "documents",
            self.registry.config.limits.max_request_tokens,
        )
        note_usage(raw, result.prompt_tokens)
        return result

    def build_response(
        self, request: RerankRequest, model: ServedModel, work: list[str], result: PairScores
    ) -> Response:
        originals = request.document_texts()
        order = sorted(range(len(originals)), key=lambda i: float(result.scores[i]), reverse=True)
        if request.top_n:
            order = order[: request.top_n]
        results = []
        for index in order:
            entry: dict[str, object] = {"index": index, "relevance_score": float(result.scores[index])}
            if request.return_documents:
                entry["document"] = {"text": originals[index]}
            results.append(entry)
        tokens = result.prompt_tokens
        return json_response(
            {
                "id": new_id("rerank"),
                "model": request.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                "results": results,
            }
        )
