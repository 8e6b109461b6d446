"""API keys in the OpenAPI document: a bearer scheme that every protected operation requires
(and its 401 answer), so that Swagger UI's Authorize button sends the key with "Try it out"."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from aios_serve.api.common.protocol import ErrorResponse
from aios_serve.security.middleware import OpenPaths

BEARER_SCHEME = "bearerAuth"
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def _error_schema(components: dict[str, Any]) -> dict[str, str]:
    """A reference to the OpenAI error shape, added to the components where no route put it."""
    schemas = components.setdefault("schemas", {})
    if ErrorResponse.__name__ not in schemas:
        generated = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(generated.pop("$defs", {}))
        schemas[ErrorResponse.__name__] = generated
    return {"$ref": f"#/components/schemas/{ErrorResponse.__name__}"}


def _with_bearer_auth(schema: dict[str, Any], open_paths: OpenPaths) -> dict[str, Any]:
    components = schema.setdefault("components", {})
    error = _error_schema(components)
    schemes = components.setdefault("securitySchemes", {})
    schemes[BEARER_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key of this server, sent as `Authorization: Bearer <key>`.",
    }
    for path, item in schema.get("paths", {}).items():
        if path in open_paths:
            continue
        for method, operation in item.items():
            if method in HTTP_METHODS:
                operation["security"] = [{BEARER_SCHEME: []}]
                operation.setdefault("responses", {}).setdefault(
                    "401",
                    {
                        "description": "Missing or incorrect API key",
                        "content": {"application/json": {"schema": dict(error)}},
                    },
                )
    return schema


def document_bearer_auth(app: FastAPI, open_paths: OpenPaths) -> None:
    """Make `app.openapi()` declare the bearer scheme on every operation outside `open_paths`."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _with_bearer_auth(build(), open_paths)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
