"""Relevance of query-document pairs: cosine on embedding models, sigmoid on cross-encoders.

Two steps, so that the caller can check the token count between them: `prepare_pairs`
tokenizes, `score_pairs` runs the model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aios_serve.engine.encoder.model import EncoderModel, TokenizedTexts


@dataclass(frozen=True)
class PairInputs:
    """Tokenized pairs: one joined input per pair on a cross-encoder; on an embedding model the
    queries' inputs, then the documents'."""

    inputs: TokenizedTexts
    query_count: int
    """How many leading inputs are queries (0 on a cross-encoder, whose inputs are pairs)."""

    @property
    def token_count(self) -> int:
        return self.inputs.token_count


@dataclass(frozen=True)
class PairScores:
    """One score per pair, in pair order, and every token the model read."""

    scores: np.ndarray
    prompt_tokens: int


async def prepare_pairs(
    model: EncoderModel, queries: list[str], documents: list[str], keep: int | None
) -> PairInputs:
    """Tokenize `queries[i]` with `documents[i]`; a single query goes with every document.
    `keep` cuts each input (a joined pair, or each text alone) to that many tokens."""
    if model.cross_encoder:
        if len(queries) == 1 and len(documents) > 1:
            queries = queries * len(documents)
        return PairInputs(await model.tokenize_pairs(queries, documents, keep), 0)
    query_inputs = await model.tokenize_texts(queries, keep, side="query")
    document_inputs = await model.tokenize_texts(documents, keep, side="document")
    return PairInputs(TokenizedTexts(query_inputs.inputs + document_inputs.inputs), len(queries))


async def score_pairs(model: EncoderModel, pairs: PairInputs) -> PairScores:
    """One score per pair: sigmoid(logit) on a cross-encoder, cosine similarity on an embedding model."""
    if model.cross_encoder:
        return PairScores(await model.score(pairs.inputs), pairs.token_count)
    vectors = await model.embed(pairs.inputs)
    query_vectors, document_vectors = vectors[: pairs.query_count], vectors[pairs.query_count :]
    # Vectors are L2-normalized, so the row-wise dot product is the cosine similarity.
    scores = np.einsum("ij,ij->i", np.broadcast_to(query_vectors, document_vectors.shape), document_vectors)
    return PairScores(scores.astype(np.float32), pairs.token_count)
