"""The load test's RSS verdict (benchmarks/load/rss_trend.py): the last half's least-squares trend
and the growth between the medians of the first and last minute."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "load"))

from rss_trend import WINDOW_S, end_to_end_growth, last_half_trend, least_squares_slope, rss_series


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


def test_end_to_end_growth_reads_a_minute_at_each_end() -> None:
    """A trim cycle's sawtooth (a low sample just after each trim) is not growth; a rise is."""
    sawtooth = [(float(t), 600.0 if t % 5 == 0 else 900.0 + (t % 5) * 20) for t in range(601)]
    assert sawtooth[0][1] == 600.0 and sawtooth[-1][1] == 600.0
    assert end_to_end_growth(sawtooth) == pytest.approx(0.0)
    rising = [(float(t), 600.0 + t / 2) for t in range(601)]  # 300 MiB over the run
    assert end_to_end_growth(rising) == pytest.approx(270.0)  # medians at 30 s and 570 s
    short = [(float(t), 600.0 + t) for t in range(61)]  # windows of 6 s at each end
    assert end_to_end_growth(short) == pytest.approx(54.0)  # t 0-6 against t 54-60


def test_series_judges_the_end_minutes_and_the_trend() -> None:
    """Start, peak and after come from the samples; either kind of growth past the bound fails."""
    flat = rss_series([(float(t), 700.0 + (30 if t == 50 else 0)) for t in range(120)], after_mib=702.0)
    assert (flat.start_mib, flat.peak_mib, flat.growth_mib) == (700.0, 730.0, 2.0)
    assert flat.failures(64.0, "tree") == []
    rising = rss_series([(float(t), 700.0 + 2 * t) for t in range(120)], after_mib=700.0)
    assert [f.split(" RSS ")[1].split(" ")[0] for f in rising.failures(64.0, "tree")] == ["grew", "trend"]
    stepped = rss_series([(float(t), 700.0 if t < 200 else 800.0) for t in range(600)], after_mib=700.0)
    assert stepped.end_growth_mib == 100.0 and stepped.trend.judged_growth_mib == 0  # the last half is flat
    assert stepped.failures(64.0, "tree") == [
        "tree RSS grew 100.0 MiB from the first minute of the measured load to its last (medians)"
    ]
