"""Named API keys, parsed from `--api-key` / AIOS_API_KEYS / the config, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from aios_serve.api.common.context import Caller


class ApiKeySpec(BaseModel):
    """One key and the caller name usage is reported under. `key` never appears in reprs or logs."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    key: SecretStr
    admin: bool = False


def parse_api_keys(entries: Iterable[str], first_number: int = 1) -> list[ApiKeySpec]:
    """Keys written as `name:key` (split at the first colon) or a bare `key`, which gets the
    name `key-<n>`. Each entry may itself hold several keys separated by commas."""
    specs: list[ApiKeySpec] = []
    number = first_number
    for entry in entries:
        for item in entry.split(","):
            item = item.strip()
            if not item:
                continue
            name, colon, key = item.partition(":")
            if not colon:
                name, key = f"key-{number}", item
            if not name or not key:
                raise ValueError("an API key entry must be `name:key` or `key`, both non-empty")
            specs.append(ApiKeySpec(name=name, key=SecretStr(key)))
            number += 1
    return specs


def _digest(key: str) -> bytes:
    # Comparing fixed-length digests keeps the comparison's time independent of the key's length.
    return hashlib.sha256(key.encode("utf-8")).digest()


class KeyRing:
    """The configured keys; `caller_for` compares a presented key against every one of them."""

    def __init__(self, specs: Iterable[ApiKeySpec]) -> None:
        self._entries = [
            (_digest(spec.key.get_secret_value()), Caller(spec.name, spec.admin)) for spec in specs
        ]
        names = [caller.name for _, caller in self._entries]
        if len(set(names)) != len(names):
            raise ValueError("API key names must be unique")
        if len({digest for digest, _ in self._entries}) != len(self._entries):
            raise ValueError("the same API key is configured twice")

    def __bool__(self) -> bool:
        return bool(self._entries)

    def caller_for(self, presented: str) -> Caller | None:
        """The key's caller, or None. Every key is compared, so timing says nothing of which."""
        digest = _digest(presented)
        found: Caller | None = None
        for known, caller in self._entries:
            if hmac.compare_digest(known, digest):
                found = caller
        return found
