"""API keys: their configuration, parsing from the command line, the auth middleware, and their
bearer scheme in the OpenAPI document."""

from aios_serve.security.api_keys import ApiKeySpec, KeyRing, parse_api_keys
from aios_serve.security.middleware import ApiKeyMiddleware, OpenPaths
from aios_serve.security.openapi import BEARER_SCHEME, document_bearer_auth

__all__ = [
    "BEARER_SCHEME",
    "ApiKeyMiddleware",
    "ApiKeySpec",
    "KeyRing",
    "OpenPaths",
    "document_bearer_auth",
    "parse_api_keys",
]
