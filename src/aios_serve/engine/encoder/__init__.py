"""Encoders: embedding models and cross-encoders behind one token-budget batching queue.

What the API uses: `EncoderModel` (tokenize, `embed`, `score`), `TokenizedTexts`, and relevance
scoring in two steps, `prepare_pairs` then `score_pairs`. The engine raises the typed errors of
`aios_serve.engine.errors` (QueueFull, InputTooLong, TokenOutOfVocabulary, InferenceFailed);
the modules below are internal to the engine and its backends."""

from __future__ import annotations

from aios_serve.engine.encoder.model import EncoderModel, TokenizedTexts
from aios_serve.engine.encoder.options import EncoderOptions
from aios_serve.engine.encoder.relevance import PairInputs, PairScores, prepare_pairs, score_pairs

__all__ = [
    "EncoderModel",
    "EncoderOptions",
    "PairInputs",
    "PairScores",
    "TokenizedTexts",
    "prepare_pairs",
    "score_pairs",
]
