"""`truncate_prompt_tokens`, checked the same way in every API that takes it."""

from __future__ import annotations

from aios_serve.errors import invalid

PARAM = "truncate_prompt_tokens"


def resolve_truncation(
    truncate_prompt_tokens: int | None,
    max_model_len: int,
    minimum: int = 1,
    below_minimum: str | None = None,
    over_limit_hint: str = "",
) -> int | None:
    """How many tokens to keep: None for no truncation, -1 for the model's maximum, else the
    value itself once it is at most `max_model_len` and at least `minimum` (400s otherwise).

    `below_minimum` words why a smaller value cannot work (it follows "truncate_prompt_tokens (k)");
    without it the message asks for -1 or at least `minimum`. `over_limit_hint` is appended to
    the message for a value above the model's maximum."""
    if truncate_prompt_tokens is None:
        return None
    keep = max_model_len if truncate_prompt_tokens == -1 else truncate_prompt_tokens
    if keep > max_model_len:
        message = f"{PARAM} value ({keep}) is greater than max_model_len ({max_model_len})."
        raise invalid(f"{message} {over_limit_hint}" if over_limit_hint else message, PARAM)
    if keep < minimum:
        if below_minimum is None:
            raise invalid(f"{PARAM} must be -1 or at least {minimum}.", PARAM)
        raise invalid(f"{PARAM} ({keep}) {below_minimum}.", PARAM)
    return keep
