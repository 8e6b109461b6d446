"""A generation request's fields as engine parameters: the checks that need the server's limits
or the model, the output budget, and `SamplingParams`."""

from __future__ import annotations

from aios_serve.api.common.truncation import resolve_truncation
from aios_serve.api.completions.protocol import SamplingFields
from aios_serve.engine.generation import GenerationModel, SamplingParams
from aios_serve.errors import invalid
from aios_serve.limits import LimitsConfig, check_count, check_max, check_total_tokens


def check_request_fields(request: SamplingFields) -> None:
    """Cross-field checks that pydantic cannot name a field for; run before the model lookup."""
    if request.stream_options is not None and not request.stream:
        raise invalid("Stream options can only be defined when `stream=True`.", "stream_options")


def check_model_limits(request: SamplingFields, model: GenerationModel) -> None:
    """Checks that need the loaded model: token ids in logit_bias and the number of choices."""
    n_vocab = model.n_vocab
    for key in request.logit_bias or {}:
        if int(key) >= n_vocab:
            raise invalid(f"logit_bias token id {key} is out of vocabulary (0..{n_vocab - 1}).", "logit_bias")
    for token_id in request.stop_token_ids or []:
        if not 0 <= token_id < n_vocab:
            raise invalid(f"stop_token_ids has an out-of-vocabulary id {token_id}.", "stop_token_ids")
    n = request.n or 1
    if n > model.max_sequences:
        raise invalid(f"n must be at most {model.max_sequences} for this model.", "n")


def check_request_limits(request: SamplingFields, limits: LimitsConfig, tools: int = 0) -> None:
    """The server's configured limits on choices, stop strings and tools."""
    check_max(request.n, limits.max_n, "n")
    check_count(len(request.stop_list()), limits.max_stop, "stop", "stop strings")
    check_count(tools, limits.max_tools, "tools", "tools")


def check_request_tokens(prompt_tokens: int, params: SamplingParams, n: int, limits: LimitsConfig) -> None:
    """Prompt plus every choice's maximum output must fit the per-request token limit."""
    check_total_tokens(prompt_tokens + n * params.max_tokens, limits.max_request_tokens, "max_tokens")


def check_token_ids(token_ids: list[int], n_vocab: int, param: str) -> None:
    for token_id in token_ids:
        if not 0 <= token_id < n_vocab:
            raise invalid(f"Token id {token_id} is out of vocabulary (0..{n_vocab - 1}).", param)


def truncate_prompt(
    token_ids: list[int], truncate_prompt_tokens: int | None, max_model_len: int
) -> list[int]:
    """`truncate_prompt_tokens`: keep the prompt's last k tokens (-1: the model's maximum)."""
    keep = resolve_truncation(truncate_prompt_tokens, max_model_len)
    return token_ids if keep is None else token_ids[-keep:]


def resolve_max_tokens(
    request: SamplingFields, prompt_len: int, max_model_len: int, default: int | None, what: str
) -> int:
    """The output budget, checked against the context as vLLM words it."""
    if prompt_len == 0:
        raise invalid(f"The {what} is empty.", what)
    if prompt_len >= max_model_len:
        raise invalid(
            f"This model's maximum context length is {max_model_len} tokens. However, your request "
            f"has {prompt_len} input tokens. Please reduce the length of the input {what}.",
            what,
        )
    room = max_model_len - prompt_len
    requested = request.requested_max_tokens()
    if requested is None:
        return room if default is None else min(default, room)
    if requested > room:
        param = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
        raise invalid(
            f"'{param}' is too large: {requested}. This model's maximum context length is "
            f"{max_model_len} tokens and your request has {prompt_len} input tokens "
            f"({requested} > {max_model_len} - {prompt_len}).",
            param,
        )
    return requested


def sampling_params(
    request: SamplingFields, max_tokens: int, logprobs: int | None, prompt_logprobs: int | None = None
) -> SamplingParams:
    temperature = 1.0 if request.temperature is None else request.temperature
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        top_k=request.top_k if request.top_k not in (None, 0) else -1,
        min_p=request.min_p or 0.0,
        frequency_penalty=request.frequency_penalty or 0.0,
        presence_penalty=request.presence_penalty or 0.0,
        repetition_penalty=1.0 if request.repetition_penalty is None else request.repetition_penalty,
        logit_bias={int(k): float(v) for k, v in (request.logit_bias or {}).items()},
        seed=request.seed,
        stop=tuple(request.stop_list()),
        stop_token_ids=tuple(request.stop_token_ids or ()),
        ignore_eos=request.ignore_eos,
        min_tokens=request.min_tokens,
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
    )
