"""Streaming anomaly detection per metric. Pure: no Beam.

`MetricScorer` is what the pipeline keeps per metric: the article's rolling statistics over
the last `window` values (including the current one) for `z_score`, and the selected
detector for `anomaly_score`. Work per value is O(1): the rolling sums are updated as a
value enters and one leaves the ring buffer, never recomputed over the window. `state()`
returns plain data (lists and floats) so Beam stores it cheaply.
"""
from __future__ import annotations

import dataclasses
import math

ZSCORE = "zscore"
DETECTORS = (ZSCORE,)
ZSCORE_WARMUP = 10
ZSCORE_LIMIT = 3.0
# Rolling sums drift with floating-point error; recompute them exactly this often.
RESUM_EVERY = 10_000


@dataclasses.dataclass(frozen=True)
class DetectorSettings:
    detector: str = ZSCORE
    window: int = 100  # values in the article's rolling window (z_score)
    threshold: float = 0.5  # is_anomaly = anomaly_score >= threshold


@dataclasses.dataclass(frozen=True)
class MetricScore:
    z_score: float
    anomaly_score: float
    is_anomaly: bool
    rolling_mean: float
    rolling_std: float
    rolling_count: int


class RollingStats:
    """Mean and sample std of the last `size` values, updated in O(1) per value."""

    def __init__(self, size: int, state: list | None = None):
        self._size = size
        if state is None:
            self._ring: list[float] = []
            self._next = 0
            self._sum = 0.0
            self._sum_sq = 0.0
            self._since_resum = 0
        else:
            self._ring, self._next, self._sum, self._sum_sq, self._since_resum = state
            self._ring = list(self._ring)

    def state(self) -> list:
        return [list(self._ring), self._next, self._sum, self._sum_sq, self._since_resum]

    @property
    def count(self) -> int:
        return len(self._ring)

    def push(self, value: float) -> None:
        if len(self._ring) < self._size:
            self._ring.append(value)
        else:
            old = self._ring[self._next]
            self._ring[self._next] = value
            self._next = (self._next + 1) % self._size
            self._sum -= old
            self._sum_sq -= old * old
        self._sum += value
        self._sum_sq += value * value
        self._since_resum += 1
        if self._since_resum >= RESUM_EVERY:
            self._sum = math.fsum(self._ring)
            self._sum_sq = math.fsum(v * v for v in self._ring)
            self._since_resum = 0

    def mean(self) -> float:
        return self._sum / len(self._ring) if self._ring else 0.0

    def std(self) -> float:
        n = len(self._ring)
        if n < 2:
            return 0.0
        variance = (self._sum_sq - self._sum * self._sum / n) / (n - 1)
        return math.sqrt(variance) if variance > 0.0 else 0.0

    def z_score(self, value: float) -> float:
        std = self.std()
        # below float noise the window is constant: no meaningful z
        if std <= 1e-9 * max(1.0, abs(self.mean())):
            return 0.0
        return (value - self.mean()) / std


class MetricScorer:
    """Rolling statistics plus the selected detector for one metric, fed in time order."""

    def __init__(self, settings: DetectorSettings, state: list | None = None):
        if settings.detector not in DETECTORS:
            raise ValueError(f"unknown detector {settings.detector!r}; one of {DETECTORS}")
        self._settings = settings
        self._stats = RollingStats(settings.window, state[0] if state else None)

    def state(self) -> list:
        return [self._stats.state()]

    def update(self, value: float, event_seconds: float) -> MetricScore:
        self._stats.push(value)
        z = self._stats.z_score(value)
        score = 1.0 if self._stats.count >= ZSCORE_WARMUP and abs(z) > ZSCORE_LIMIT else 0.0
        return MetricScore(
            z_score=z, anomaly_score=score, is_anomaly=score >= self._settings.threshold,
            rolling_mean=self._stats.mean(), rolling_std=self._stats.std(),
            rolling_count=self._stats.count)
