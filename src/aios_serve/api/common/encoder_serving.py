"""What the encoder APIs share: `truncate_prompt_tokens` on an encoder, and the pair-scoring
serving that rerank and score fill in."""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar, Protocol, TypeVar

from aios_serve.api.common.context import RequestContext
from aios_serve.api.common.pipeline import ServingPipeline
from aios_serve.api.common.truncation import resolve_truncation
from aios_serve.engine.encoder import EncoderModel, PairInputs, PairScores, prepare_pairs, score_pairs
from aios_serve.engine.errors import EngineError, InputTooLong
from aios_serve.errors import ApiError, api_error_from_engine
from aios_serve.limits import check_total_tokens


def encoder_truncation(truncate_prompt_tokens: int | None, model: EncoderModel, pair: bool) -> int | None:
    """The tokens to keep of each input (of each joined pair with `pair`), checked against the
    model: at most its length, and enough for the special tokens (and one token of each text)."""
    if pair:
        least = model.special_tokens(pair=True) + 2
        reason = f"must leave room for both texts of a pair (at least {least} tokens on this model)"
    else:
        special = model.special_tokens(pair=False)
        least = max(special, 1)
        reason = f"must keep at least the {special} special tokens this model adds"
    return resolve_truncation(
        truncate_prompt_tokens,
        model.max_model_len,
        minimum=least,
        below_minimum=reason,
        over_limit_hint="Please select a smaller truncation size.",
    )


class PairRequest(Protocol):
    """A request that scores text pairs."""

    model: str
    truncate_prompt_tokens: int | None


PairRequestT = TypeVar("PairRequestT", bound=PairRequest)


class PairScoringServing(ServingPipeline[PairRequestT, EncoderModel, PairInputs, PairScores]):
    """Rerank and score: tokenize query-document pairs, check the request's token total, score.
    Subclasses name the request fields each side of a pair comes from."""

    model_type = EncoderModel
    query_param: ClassVar[str]
    """The request field the queries come from (rerank: `query`)."""
    document_param: ClassVar[str]
    """The request field the documents come from (rerank: `documents`)."""

    @abstractmethod
    async def texts(
        self, context: RequestContext, request: PairRequestT, model: EncoderModel
    ) -> tuple[list[str], list[str]]:
        """The queries and documents to pair (one query goes with every document)."""

    async def preprocess(
        self, context: RequestContext, request: PairRequestT, model: EncoderModel
    ) -> PairInputs:
        queries, documents = await self.texts(context, request, model)
        keep = encoder_truncation(request.truncate_prompt_tokens, model, pair=model.cross_encoder)
        pairs = await prepare_pairs(model, queries, documents, keep)
        limit = self.registry.config.limits.max_request_tokens
        check_total_tokens(pairs.token_count, limit, self.document_param)
        return pairs

    async def run(
        self, context: RequestContext, request: PairRequestT, model: EncoderModel, work: PairInputs
    ) -> PairScores:
        return await score_pairs(model, work)

    def engine_error(self, exc: EngineError, request: PairRequestT) -> ApiError:
        side = exc.side if isinstance(exc, InputTooLong) else None
        return api_error_from_engine(exc, self.query_param if side == "query" else self.document_param)
