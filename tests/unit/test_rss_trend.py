"""The load test's RSS verdict (benchmarks/load/rss_trend.py): the last half's least-squares trend."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "load"))

from rss_trend import WINDOW_S, last_half_trend, least_squares_slope, rss_series


def test_slope_of_a_line() -> None:
    assert least_squares_slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2.0)
    assert least_squares_slope([(0, 5)]) == 0.0
    assert least_squares_slope([(1, 5), (1, 7)]) == 0.0


def test_only_the_last_half_is_fitted() -> None:
    """Warm-up growth in the first half does not count; a flat last half passes."""
    samples = [(float(t), 600.0 + 2 * t if t < 300 else 1200.0) for t in range(600)]
    trend = last_half_trend(samples)
    assert trend.samples == 300
    assert trend.slope_mib_per_min == pytest.approx(0.0)


def test_growth_is_judged_over_five_minutes_or_the_half_when_shorter() -> None:
    soak = last_half_trend([(float(t), 600.0 + t / 60) for t in range(601)])  # 1 MiB/min
    assert soak.slope_mib_per_min == pytest.approx(1.0)
    assert soak.judged_growth_mib == pytest.approx(WINDOW_S / 60)
    short = last_half_trend([(float(t), 600.0 + t) for t in range(61)])  # 60 MiB/min for 30 s
    assert short.judged_growth_mib == pytest.approx(30.0)


def test_noise_around_a_flat_line_is_not_growth() -> None:
    samples = [(float(t), 700.0 + (40 if t % 2 else -40)) for t in range(600)]
    assert abs(last_half_trend(samples).judged_growth_mib) < 1.0


def test_series_judges_first_to_after_and_the_trend() -> None:
    """Start, peak and after come from the samples; either kind of growth past the bound fails."""
    flat = rss_series([(float(t), 700.0 + (30 if t == 50 else 0)) for t in range(120)], after_mib=702.0)
    assert (flat.start_mib, flat.peak_mib, flat.growth_mib) == (700.0, 730.0, 2.0)
    assert flat.failures(64.0, "tree") == []
    rising = rss_series([(float(t), 700.0 + 2 * t) for t in range(120)], after_mib=700.0)
    assert [f.split(" RSS ")[1].split(":")[0] for f in rising.failures(64.0, "tree")] == [
        "trend over the last half"
    ]
    grown = rss_series([(0.0, 700.0), (60.0, 700.0)], after_mib=800.0)
    assert grown.failures(64.0, "tree") == ["tree RSS grew 100.0 MiB during the measured load"]
