"""Schemathesis against the server's own OpenAPI document, every operation: no 5xx, and every
response matches the status codes, content types and schemas the document declares.

Cases are both schema-valid and schema-violating. CI runs AIOS_FUZZ_EXAMPLES (default 200) cases
per operation; `make fuzz` runs more and prints the counts."""

from __future__ import annotations

import collections
import os
import zlib
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from aios_serve.app import create_app
from aios_serve.config import ServerConfig
from tests.e2e.configs import CROSS_ENCODER, EMBEDDING, auth
from tests.e2e.server import Server

EXAMPLES = int(os.environ.get("AIOS_FUZZ_EXAMPLES", "200"))
# The default (CI) run replays the same cases every time, so a landing never hangs on a new draw;
# `make fuzz` sets AIOS_FUZZ_EXAMPLES and explores fresh random cases on each run.
DERANDOMIZE = "AIOS_FUZZ_EXAMPLES" not in os.environ
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def documented_operations() -> list[tuple[str, str]]:
    """Every (method, path) of the app's OpenAPI document; building the app loads no weights."""
    config = {"models": [{"name": "m", "kind": "embedding", "path": "."}]}
    app = create_app(ServerConfig.model_validate(config))
    return [
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        for method in item
        if method in {"get", "post", "put", "delete", "patch"}
    ]


CASES_RUN: collections.Counter[int] = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def report_counts() -> Iterator[None]:
    yield
    print(f"\nfuzz: {sum(CASES_RUN.values())} cases; responses by status: {dict(sorted(CASES_RUN.items()))}")


@pytest.fixture(scope="session")
def api_schema(guarded: Server) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{guarded.url}/openapi.json", headers=auth("alice"))


def name_a_served_model(case: schemathesis.Case) -> None:
    """Most bodies name a served model, so the fuzzer reaches inference and not only the 404."""
    body = case.body
    if not isinstance(body, dict) or "model" not in body:
        return
    choice = zlib.crc32(repr(body).encode()) % 4
    if choice == 0:
        return  # keep the generated name: an unknown model must be a clean 404
    relevance = "rerank" in case.path or "score" in case.path
    body["model"] = CROSS_ENCODER if relevance and choice == 1 else EMBEDDING


@pytest.mark.parametrize(("method", "path"), documented_operations())
def test_operation_conforms_to_its_schema(
    api_schema: schemathesis.BaseSchema, method: str, path: str
) -> None:
    operation = api_schema[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
    )

    @given(case=cases)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=DERANDOMIZE,
    )
    def fuzz(case: schemathesis.Case) -> None:
        name_a_served_model(case)
        response = case.call(headers=auth("alice"), timeout=60)
        CASES_RUN[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)

    fuzz()
