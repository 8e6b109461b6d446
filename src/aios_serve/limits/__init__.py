"""Request limits: their configuration, reusable checks, and the body-size middleware."""

from aios_serve.limits.checks import check_count, check_max, check_total_tokens
from aios_serve.limits.middleware import BodySizeLimitMiddleware
from aios_serve.limits.settings import LimitsConfig

__all__ = ["BodySizeLimitMiddleware", "LimitsConfig", "check_count", "check_max", "check_total_tokens"]
