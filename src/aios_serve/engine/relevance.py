"""Relevance of query-document pairs: cosine on embedding models, sigmoid on cross-encoders."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aios_serve.engine.encoder import EncoderModel, TokenizedTexts
from aios_serve.limits import check_total_tokens


@dataclass(frozen=True)
class PairScores:
    """One score per pair, in pair order, and every token the model read."""

    scores: np.ndarray
    prompt_tokens: int


async def score_pairs(
    model: EncoderModel,
    queries: list[str],
    documents: list[str],
    truncate: int | None,
    query_param: str,
    document_param: str,
    max_request_tokens: int,
) -> PairScores:
    """Score `queries[i]` against `documents[i]`; a single query is paired with every document."""
    if len(queries) == 1 and len(documents) > 1:
        queries = queries * len(documents) if model.cross_encoder else queries
    if model.cross_encoder:
        pairs = await model.tokenize_pairs(queries, documents, truncate, document_param)
        check_total_tokens(pairs.token_count, max_request_tokens, document_param)
        return PairScores(await model.score_pairs(pairs), pairs.token_count)
    query_inputs = await model.tokenize_texts(queries, truncate, query_param)
    document_inputs = await model.tokenize_texts(documents, truncate, document_param)
    check_total_tokens(
        query_inputs.token_count + document_inputs.token_count, max_request_tokens, document_param
    )
    vectors = await model.embed(TokenizedTexts(query_inputs.inputs + document_inputs.inputs))
    query_vectors, document_vectors = vectors[: len(queries)], vectors[len(queries) :]
    # Vectors are L2-normalized, so the row-wise dot product is the cosine similarity.
    scores = np.einsum("ij,ij->i", np.broadcast_to(query_vectors, document_vectors.shape), document_vectors)
    return PairScores(scores.astype(np.float32), query_inputs.token_count + document_inputs.token_count)
