"""The limit checks the APIs run before any work: clear 400s naming the parameter (the limits on
a real server: tests/e2e/test_limits.py)."""

from __future__ import annotations

import pytest

from aios_serve.errors import ApiError
from aios_serve.limits import check_count, check_max, check_total_tokens


def test_limit_checks_raise_clear_400s() -> None:
    check_count(4, 4, "stop", "stop strings")
    with pytest.raises(ApiError) as raised:
        check_count(5, 4, "stop", "stop strings")
    assert raised.value.status == 400 and raised.value.param == "stop"
    assert "limit of 4" in raised.value.message
    check_max(None, 128, "n")
    with pytest.raises(ApiError) as raised:
        check_max(129, 128, "n")
    assert raised.value.param == "n" and "at most 128" in raised.value.message
    with pytest.raises(ApiError):
        check_total_tokens(10_001, 10_000)
