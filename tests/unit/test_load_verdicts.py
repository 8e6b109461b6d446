"""The load test's generation verdicts and /metrics reading (benchmarks/load)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "load"))

from engine_metrics import busy, parse
from generation_mix import common_prefix, verdict

REFS = {
    "apple": "The apple fell into the river.",
    "stone": "A stone sat in the garden.",
    "desert": "Clouds over the desert.",
    "apple-sea": "The apple fell into the sea, and the waves took it far away.",
}


def _verdict(answer: str, own: str, partial: bool = False) -> tuple[str, str | None]:
    return verdict(answer, REFS[own], {k: t for k, t in REFS.items() if k != own}, partial)


def test_common_prefix() -> None:
    assert common_prefix("The apple", "The army") == 5
    assert common_prefix("", "abc") == 0


def test_own_answer_is_ok_and_a_neighbour_s_is_cross_talk() -> None:
    assert _verdict(REFS["apple"], "apple") == ("ok", None)
    assert _verdict(REFS["stone"], "apple") == ("cross-talk", "stone")
    assert _verdict("A stone sat in the gardens.", "apple") == ("cross-talk", "stone")
    assert _verdict("The apple fell into a river.", "apple") == ("mismatch", None)


def test_an_answer_that_follows_its_own_reference_further_is_a_mismatch() -> None:
    """Diverging from its own reference into text that resembles another's is still a mismatch
    while it follows its own reference furthest: greedy decoding is a chain."""
    later = "The apple fell into the river, and the waves took it far away."
    assert _verdict(later, "apple") == ("mismatch", None)
    assert _verdict(later, "apple-sea") == ("cross-talk", "apple")


def test_a_closed_stream_is_judged_on_prefixes() -> None:
    assert _verdict("The apple", "apple", partial=True) == ("ok", None)
    assert _verdict("A stone", "apple", partial=True) == ("cross-talk", "stone")
    assert _verdict("The appl!", "apple", partial=True) == ("mismatch", None)
    assert _verdict("Clo", "stone", partial=True) == ("cross-talk", "desert")  # equal to its start


def test_a_word_or_two_in_common_by_chance_is_a_mismatch() -> None:
    """Seen under load: a short closed stream whose first word differs from its reference's."""
    refs = {"diamond": " diamond stone\nLine 56:", "lantern": " lantern, cloud; meadow"}
    assert verdict(" electron", refs["diamond"], {"lantern": refs["lantern"]}, True) == ("mismatch", None)
    assert verdict("The apple rolled", REFS["stone"], {"apple": REFS["apple"]}, False) == (
        "cross-talk",
        "apple",
    )


METRICS = """\
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="a"} 0.25
vllm:kv_cache_usage_perc{model_name="b"} 0.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="a"} 2.0
vllm:num_requests_running{model_name="b"} 0.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="a"} 0.0
vllm:num_requests_waiting{model_name="b"} 0.0
vllm:num_requests_waiting{model_name="encoder"} 3.0
# TYPE aios_serve_engine_restarts_total counter
aios_serve_engine_restarts_total{model_name="a"} 1.0
"""


def test_metrics_are_read_per_model_and_busy_names_what_is_held() -> None:
    values = parse(METRICS, ("a", "b"))
    assert values == {
        "a": {"kv_cache_usage": 0.25, "running": 2.0, "waiting": 0.0, "restarts": 1.0},
        "b": {"kv_cache_usage": 0.0, "running": 0.0, "waiting": 0.0},
    }
    assert busy(values) == ["a: kv_cache_usage 0.25", "a: running 2"]
    assert busy(parse(METRICS, ("c",))) == [
        "c: no kv_cache_usage gauge",
        "c: no running gauge",
        "c: no waiting gauge",
    ]
