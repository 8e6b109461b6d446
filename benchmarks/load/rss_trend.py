"""The load test's memory verdict: the trend of RSS over the last half of the measured run.

First-to-last differences move with whatever the last sample caught in flight (a batch's
activations are tens of MiB); a least-squares line through every sample of the last half does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WINDOW_S = 300.0  # growth is judged as if over this long: 5 minutes


@dataclass(frozen=True)
class RssTrend:
    """The fitted line through the last half's (seconds, MiB) samples."""

    slope_mib_per_min: float
    span_s: float  # seconds between the first and last sample fitted
    samples: int

    def growth_mib(self, over_s: float) -> float:
        """Growth the line gives over `over_s` seconds."""
        return self.slope_mib_per_min * over_s / 60.0

    @property
    def judged_growth_mib(self) -> float:
        """Growth over the last 5 minutes; a shorter run is judged over its last half only (a line
        through 30 s of samples says little about 5 minutes)."""
        return self.growth_mib(min(WINDOW_S, self.span_s))


def least_squares_slope(points: Sequence[tuple[float, float]]) -> float:
    """Slope of the least-squares line through (x, y) points; 0 for fewer than two distinct x."""
    count = len(points)
    if count < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / count
    mean_y = sum(y for _, y in points) / count
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def last_half_trend(samples: Sequence[tuple[float, float]]) -> RssTrend:
    """The trend of (seconds, MiB) samples whose time lies in the second half of the run."""
    if not samples:
        return RssTrend(0.0, 0.0, 0)
    middle = (samples[0][0] + samples[-1][0]) / 2
    half = [(at, mib) for at, mib in samples if at >= middle]
    span = half[-1][0] - half[0][0] if half else 0.0
    return RssTrend(least_squares_slope(half) * 60.0, span, len(half))


@dataclass(frozen=True)
class RssSeries:
    """One process's (or the tree's) RSS over the measured run, and after it."""

    start_mib: float  # the run's first sample
    peak_mib: float
    after_mib: float  # once the load has ended and its last buffers could go
    trend: RssTrend

    @property
    def growth_mib(self) -> float:
        """First sample to after the run."""
        return self.after_mib - self.start_mib

    def failures(self, bound_mib: float, what: str) -> list[str]:
        """The load test's verdict: growth from first to after, and the last half's fitted growth
        over 5 minutes (over the half when shorter), each at most `bound_mib`."""
        found = []
        if self.growth_mib > bound_mib:
            found.append(f"{what} RSS grew {self.growth_mib:.1f} MiB during the measured load")
        if self.trend.judged_growth_mib > bound_mib:
            found.append(
                f"{what} RSS trend over the last half: {self.trend.slope_mib_per_min:.1f} MiB/min, "
                f"{self.trend.judged_growth_mib:.1f} MiB over {min(WINDOW_S, self.trend.span_s):.0f} s"
            )
        return found

    def summary(self) -> dict[str, float]:
        """Rounded figures for the report."""
        return {
            "start_mib": round(self.start_mib, 1),
            "peak_mib": round(self.peak_mib, 1),
            "after_mib": round(self.after_mib, 1),
            "growth_mib": round(self.growth_mib, 1),
            "last_half_slope_mib_per_min": round(self.trend.slope_mib_per_min, 2),
            "last_half_judged_growth_mib": round(self.trend.judged_growth_mib, 1),
        }


def rss_series(samples: Sequence[tuple[float, float]], after_mib: float) -> RssSeries:
    """The series of (seconds, MiB) samples and the value after the run."""
    if not samples:
        return RssSeries(after_mib, after_mib, after_mib, last_half_trend(samples))
    return RssSeries(samples[0][1], max(mib for _, mib in samples), after_mib, last_half_trend(samples))
