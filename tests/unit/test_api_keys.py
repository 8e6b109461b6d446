"""API keys as configured: the --api-key / AIOS_API_KEYS formats and the key ring's checks
(what tests/e2e/test_auth.py checks on a real server with keys)."""

from __future__ import annotations

import pytest

from aios_serve.security import KeyRing, parse_api_keys


def test_key_parsing_formats() -> None:
    specs = parse_api_keys(["ci:sk-one, sk-two", "", "ops:sk:with:colons"])
    assert [(s.name, s.key.get_secret_value()) for s in specs] == [
        ("ci", "sk-one"),
        ("key-2", "sk-two"),
        ("ops", "sk:with:colons"),
    ]
    assert "sk-one" not in repr(specs)
    with pytest.raises(ValueError):
        parse_api_keys([":sk-no-name"])
    with pytest.raises(ValueError, match="twice"):
        KeyRing(parse_api_keys(["a:same", "b:same"]))
    ring = KeyRing(parse_api_keys(["a:k1", "b:k2"]))
    assert ring.caller_for("k2") is not None and ring.caller_for("k2").name == "b"  # type: ignore[union-attr]
    assert ring.caller_for("k3") is None
