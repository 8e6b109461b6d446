"""The load test's memory verdict: the trend of RSS over the last half of the measured run, and
its growth from the run's first minute to its last.

Single samples move with whatever they caught: a batch's activations in flight (tens of MiB), or
where the heap stood in the server's 5-second trim cycle (hundreds). A least-squares line through
every sample of the last half does not, nor do the medians of a minute's samples at either end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WINDOW_S = 300.0  # growth is judged as if over this long: 5 minutes
END_WINDOW_S = 60.0  # first-to-last growth compares the medians of this long at either end


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


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def end_to_end_growth(samples: Sequence[tuple[float, float]], window_s: float = END_WINDOW_S) -> float:
    """Median MiB of the last `window_s` seconds of samples minus that of the first (windows
    shrink to a tenth of the run each for runs shorter than ten of them)."""
    if not samples:
        return 0.0
    start, end = samples[0][0], samples[-1][0]
    window = min(window_s, (end - start) / 10)
    first = [mib for at, mib in samples if at <= start + window]
    last = [mib for at, mib in samples if at >= end - window]
    return _median(last) - _median(first)


@dataclass(frozen=True)
class RssSeries:
    """One process's (or the tree's) RSS over the measured run, and after it."""

    start_mib: float  # the run's first sample
    peak_mib: float
    after_mib: float  # once the load has ended and its last buffers could go
    trend: RssTrend
    end_growth_mib: float  # median of the run's last minute minus that of its first

    @property
    def growth_mib(self) -> float:
        """First sample to after the run (reported; the verdict reads `end_growth_mib`)."""
        return self.after_mib - self.start_mib

    def failures(self, bound_mib: float, what: str) -> list[str]:
        """The load test's verdict: growth from the first minute's median to the last's, and the
        last half's fitted growth over 5 minutes (over the half when shorter), each at most
        `bound_mib`."""
        found = []
        if self.end_growth_mib > bound_mib:
            found.append(
                f"{what} RSS grew {self.end_growth_mib:.1f} MiB from the first minute of the measured "
                "load to its last (medians)"
            )
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
            "first_to_last_minute_mib": round(self.end_growth_mib, 1),
            "last_half_slope_mib_per_min": round(self.trend.slope_mib_per_min, 2),
            "last_half_judged_growth_mib": round(self.trend.judged_growth_mib, 1),
        }


def rss_series(samples: Sequence[tuple[float, float]], after_mib: float) -> RssSeries:
    """The series of (seconds, MiB) samples and the value after the run."""
    trend = last_half_trend(samples)
    if not samples:
        return RssSeries(after_mib, after_mib, after_mib, trend, 0.0)
    peak = max(mib for _, mib in samples)
    return RssSeries(samples[0][1], peak, after_mib, trend, end_to_end_growth(samples))
