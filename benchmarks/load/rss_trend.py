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
