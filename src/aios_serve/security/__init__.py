"""API keys: their configuration, parsing from the command line, and the auth middleware."""

from aios_serve.security.api_keys import ApiKeySpec, KeyRing, parse_api_keys
from aios_serve.security.middleware import ApiKeyMiddleware

__all__ = ["ApiKeyMiddleware", "ApiKeySpec", "KeyRing", "parse_api_keys"]
