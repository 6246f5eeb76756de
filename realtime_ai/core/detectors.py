"""Streaming anomaly detection per metric. Pure: no Beam.

`MetricScorer` is what the pipeline keeps per metric: the article's rolling statistics over
the last `window` values (including the current one) for `z_score`, and the selected
detector for `anomaly_score`. Work per value is O(1): sums and averages are updated as a
value arrives, never recomputed over a window. `state()` returns plain data (lists and
floats) so Beam stores it cheaply.

The `seasonal` detector scores how unlikely the recent surprise is:
1. surprise: |x - expected| / spread, where expected and spread are exponentially weighted
   per time-of-day slot (so a daily rhythm is expected, and a missing peak or a flat
   stretch at a busy hour is not), falling back to the metric's overall EWMA while a slot
   is new;
2. likelihood: the mean surprise of the last few values against the long-run distribution
   of surprise (a Gaussian tail, as in Numenta's anomaly likelihood), so a routinely spiky
   metric does not page and a quiet one does when it changes;
3. score: the tail probability on a log scale in [0, 1]; zero during warm-up and for a
   cooldown after an alert, so one incident raises one alert.

The default detector, `novelty`, adds to that likelihood what it cannot see: a level of
value, or a step between levels, that the metric never showed (`ValueNovelty`, after
Numenta's contextual anomaly detector, CAD OSE). Its likelihood sums the recent surprise
instead of averaging it (see `SeasonalLikelihood`). Its score is the larger of the two, the
novelty halved in a calm stretch (likelihood below `novelty_gate`); it is silent during
warm-up and for a cooldown after an alert (counted from the alert: silenced scores do not
extend it, or a metric whose scores hover at the threshold would stay blind). The
likelihood catches what is unusual for the time of day or the metric's usual surprise; the
novelty catches a new range or a new pattern that a spiky metric's likelihood learned to
shrug off. On NAB the two miss different anomalies (see README).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import operator
import sys

from realtime_ai.core.keyed import KeyedSequence
from realtime_ai.core.records import (
    MetricRecord,
    MetricScore,
    ScoredMetric,
    metric_from_plain,
    metric_to_plain,
)

NOVELTY = "novelty"
SEASONAL = "seasonal"
ZSCORE = "zscore"
DETECTORS = (NOVELTY, SEASONAL, ZSCORE)
ZSCORE_WARMUP = 10
ZSCORE_LIMIT = 3.0
# Rolling sums drift with floating-point error; recompute them exactly this often.
RESUM_EVERY = 10_000
# Largest magnitude taken into statistics: squares (1e300) and sums of a million of them
# stay below the float maximum (1.8e308).
MAX_ABSORBED = 1e150


# Settings whose default depends on the detector (None in DetectorSettings = this default).
DETECTOR_DEFAULTS = {
    SEASONAL: {"threshold": 0.3, "recent_values": 2, "cooldown_values": 200},
    NOVELTY: {"threshold": 0.4, "recent_values": 3, "cooldown_values": 120},
    ZSCORE: {"threshold": 0.3},  # its scores are 0 or 1; the other settings are unused
}


@dataclasses.dataclass(frozen=True)
class DetectorSettings:
    detector: str = NOVELTY
    window: int = 100  # values in the article's rolling window (z_score)
    threshold: float | None = None  # is_anomaly = anomaly_score >= threshold
    # the seasonal detector's own settings (defaults chosen on NAB, not per series)
    day_slots: int = 48  # time-of-day slots of the expected value (48: half hours)
    slot_rate: float = 0.1  # EWMA weight of a new value in its slot (about 10 days)
    level_rate: float = 0.01  # EWMA weight of a new value in the overall level
    recent_values: int | None = None  # values averaged into the recent surprise
    surprise_rate: float = 0.002  # EWMA weight in the long-run surprise distribution
    warmup_values: int = 300  # values scored 0 while the model learns
    cooldown_values: int | None = None  # values scored 0 after an alert
    # the novelty detector's own settings (on top of the seasonal ones)
    novelty_bins: int = 8  # levels the value grid spans at most
    novelty_gate: float = 0.15  # novelty counts in full only with this seasonal score

    def __post_init__(self):
        for name, default in DETECTOR_DEFAULTS.get(self.detector, {}).items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)


def absorbable(value: float) -> bool:
    """Whether statistics can take `value` in: its square, and sums of many such squares,
    stay finite. A finite value beyond this (1e308, say) is still scored, but kept out of
    the running statistics, so one such value cannot make them inf or NaN."""
    return -MAX_ABSORBED <= value <= MAX_ABSORBED


def _finite(value: float) -> float:
    """A quotient that overflowed (a value near the float maximum over a small spread) as
    the largest finite float of its sign, so outputs and model inputs stay valid JSON."""
    return value if math.isfinite(value) else math.copysign(sys.float_info.max, value)


class RollingStats:
    """Mean and sample std of the last `size` values, updated in O(1) per value. Values that
    are not `absorbable` stay in the window (see `latest`) but out of the mean and std."""

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
            if not (math.isfinite(self._sum) and math.isfinite(self._sum_sq)):
                self._resum()  # saved by a version that let a huge value overflow the sums
        self._count = sum(1 for value in self._ring if absorbable(value))

    def state(self) -> list:
        return [list(self._ring), self._next, self._sum, self._sum_sq, self._since_resum]

    @property
    def count(self) -> int:
        """Values in the mean and std."""
        return self._count

    def latest(self, n: int) -> tuple[float, ...]:
        """The last `n` values pushed (at most the window), oldest first."""
        ring = self._ring
        ordered = ring if len(ring) < self._size else ring[self._next:] + ring[:self._next]
        return tuple(ordered[-n:])

    def push(self, value: float) -> None:
        if len(self._ring) < self._size:
            self._ring.append(value)
        else:
            old = self._ring[self._next]
            self._ring[self._next] = value
            self._next = (self._next + 1) % self._size
            if absorbable(old):
                self._sum -= old
                self._sum_sq -= old * old
                self._count -= 1
        if absorbable(value):
            self._sum += value
            self._sum_sq += value * value
            self._count += 1
        self._since_resum += 1
        if self._since_resum >= RESUM_EVERY:
            self._resum()

    def _resum(self) -> None:
        kept = [value for value in self._ring if absorbable(value)]
        self._sum = math.fsum(kept)
        self._sum_sq = math.fsum(v * v for v in kept)
        self._since_resum = 0

    def mean(self) -> float:
        return self._sum / self._count if self._count else 0.0

    def std(self) -> float:
        n = self._count
        if n < 2:
            return 0.0
        variance = (self._sum_sq - self._sum * self._sum / n) / (n - 1)
        return math.sqrt(variance) if variance > 0.0 else 0.0


def _z_score(value: float, mean: float, std: float) -> float:
    # below float noise the window is constant: no meaningful z
    if std <= 1e-9 * max(1.0, abs(mean)):
        return 0.0
    return _finite((value - mean) / std)


# The surprise of one value is capped so a single absurd value cannot dominate the averages.
MAX_SURPRISE = 20.0
# Slots need this many values before their own mean and spread are trusted.
MIN_SLOT_VALUES = 3
# A slot's spread is at least this share of the overall spread (a slot seen on few days).
MIN_SLOT_SPREAD_SHARE = 0.25
# Spread of the long-run surprise distribution is at least this (in surprise units).
MIN_SURPRISE_SPREAD = 1.0
# A summed recent surprise (see SeasonalLikelihood) is measured in this many spreads: 3, so
# at the default 3 values it scores what their average did, and thresholds keep their meaning.
SURPRISE_SUM_SPREADS = 3.0
# 1 - likelihood is mapped to [0, 1] on a log scale: 1e-10 (or less) scores 1.0.
LOG_FLOOR = 1e-10
_LOG_OF_FLOOR = math.log(LOG_FLOOR)
SECONDS_PER_DAY = 86400.0


_SQRT_2 = math.sqrt(2.0)


def _tail_probability(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / _SQRT_2)


def _tiny(level: float) -> float:
    return 1e-9 * max(1.0, abs(level))


# The detector's scalars: count, level mean, level variance, recent sum, recent index,
# surprise mean, surprise variance, values since the last alert, values learned (version 1
# of the state lacks the last: it learned every value it counted).
_V1_SCALAR_COUNT = 8


class SeasonalLikelihood:
    """The `seasonal` detector (see the module docstring); O(1) per value.

    `summed`: the recent surprise's excess over the usual is summed over `recent_values`
    values (in `SURPRISE_SUM_SPREADS` spreads) instead of averaged. Averaged, a lone spike
    counts 1/recent_values of itself, so that setting scales the sensitivity to spikes, and
    NAB's families disagree on it (held out, `novelty` lost 13 points to that choice);
    summed, a spike counts the same whatever the window, and a lasting deviation adds up
    over it. `novelty` sums; `seasonal` alone averages, as it was measured (it scores 2 to 8
    points lower on NAB summed, at any window from 2 to 6).
    """

    def __init__(self, settings: DetectorSettings, state: list | None = None,
                 summed: bool = False):
        self._s = settings
        self._summed = summed
        slots = settings.day_slots
        self._slot_mean, self._slot_var = [0.0] * slots, [0.0] * slots
        self._slot_count = [0] * slots
        self._recent = [0.0] * settings.recent_values
        self._scalars = [0, 0.0, 0.0, 0.0, 0, 0.0, 1.0, settings.cooldown_values, 0]
        if state is None:
            return
        slot_mean, slot_var, slot_count, recent, scalars = (list(part) for part in state)
        if len(slot_mean) != settings.day_slots:
            return  # saved with another --anomaly_day_slots: the profile does not map, start afresh
        if len(scalars) == _V1_SCALAR_COUNT:
            scalars.append(scalars[0])
        self._slot_mean, self._slot_var, self._slot_count = slot_mean, slot_var, slot_count
        self._scalars = scalars
        if len(recent) == settings.recent_values:
            self._recent = recent
        else:  # saved under another recent_values (the default was 3): keep its average
            average = scalars[3] / len(recent)
            self._recent = [average] * settings.recent_values
            scalars[3], scalars[4] = average * settings.recent_values, 0

    def state(self) -> list:
        return [list(self._slot_mean), list(self._slot_var), list(self._slot_count),
                list(self._recent), list(self._scalars)]

    def _surprise(self, value: float, slot: int, level: float, level_std: float) -> float:
        if self._slot_count[slot] < MIN_SLOT_VALUES:
            if level_std <= _tiny(level):
                return 0.0 if abs(value - level) <= _tiny(level) else MAX_SURPRISE
            return abs(value - level) / level_std
        spread = max(math.sqrt(self._slot_var[slot]), MIN_SLOT_SPREAD_SHARE * level_std,
                     _tiny(level))
        return abs(value - self._slot_mean[slot]) / spread

    @property
    def count(self) -> int:
        """Values scored so far."""
        return self._scalars[0]

    def likelihood(self, value: float, event_seconds: float) -> float:
        """How unlikely the recent surprise is, in [0, 1], learning `value`; no warm-up or
        cooldown applied."""
        s = self._s
        (count, level, level_var, recent_sum, recent_index, mean_r, var_r, since_alert,
         learned) = self._scalars
        count += 1
        slot = int((event_seconds % SECONDS_PER_DAY) / SECONDS_PER_DAY * s.day_slots)
        absorbed = absorbable(value)
        if not absorbed:
            surprise = MAX_SURPRISE  # scored as the most surprising value, never learned
        else:
            if learned == 0:
                level = value
            learned += 1
            surprise = min(self._surprise(value, slot, level, math.sqrt(level_var)),
                           MAX_SURPRISE)
            # learn: overall level, then this slot
            delta = value - level
            level += s.level_rate * delta
            level_var = (1.0 - s.level_rate) * (level_var + s.level_rate * delta * delta)
            if self._slot_count[slot] == 0:
                self._slot_mean[slot] = value
            delta = value - self._slot_mean[slot]
            self._slot_mean[slot] += s.slot_rate * delta
            self._slot_var[slot] = (1.0 - s.slot_rate) * (
                self._slot_var[slot] + s.slot_rate * delta * delta)
            self._slot_count[slot] += 1
        # recent surprise against its long-run distribution
        recent_sum += surprise - self._recent[recent_index]
        self._recent[recent_index] = surprise
        recent_index = (recent_index + 1) % s.recent_values
        recent = min(count, s.recent_values)
        excess = recent_sum - recent * mean_r
        z = excess / ((SURPRISE_SUM_SPREADS if self._summed else recent)
                      * max(math.sqrt(var_r), MIN_SURPRISE_SPREAD))
        if absorbed:  # a burst of extremes must not teach that extremes are usual
            delta = surprise - mean_r
            mean_r += s.surprise_rate * delta
            var_r = (1.0 - s.surprise_rate) * (var_r + s.surprise_rate * delta * delta)
        tail = _tail_probability(z)
        self._scalars = [count, level, level_var, recent_sum, recent_index, mean_r, var_r,
                         since_alert, learned]
        # a tail in [LOG_FLOOR, 1] maps into [0, 1]
        return 1.0 if tail <= LOG_FLOOR else max(0.0, math.log(tail) / _LOG_OF_FLOOR)

    def score(self, value: float, event_seconds: float) -> float:
        anomaly = self.likelihood(value, event_seconds)
        scalars, s = self._scalars, self._s
        scalars[7] += 1  # values since the last alert
        if scalars[0] < s.warmup_values or scalars[7] <= s.cooldown_values:
            return 0.0
        if anomaly >= s.threshold:
            scalars[7] = 0
        return anomaly


# A step never seen between levels already seen is half as novel as a new level.
NEW_STEP_NOVELTY = 0.5


class ValueNovelty:
    """Whether a value's level, or the step to it from the previous value's level, is new.

    Levels are cells of a grid anchored at the metric's first value. The grid's cell width
    doubles whenever the levels seen would span more than `bins` cells, so it always spans
    the metric's whole range in at most `bins` cells, as Numenta's CAD OSE quantises with a
    series' min and max, but learned as values arrive instead of known in advance. Learned
    levels and steps are merged into the wider cells, so state stays bounded: at most
    `bins` levels and `bins` squared steps. O(1) per value but for a doubling (at most once
    per doubling of the metric's range).
    """

    def __init__(self, bins: int, state: list | None = None):
        self._bins = bins
        if state is None:
            self._origin, self._width, self._low, self._high, self._previous = (
                None, 0.0, 0, 0, None)
            self.learned = 0
            self._seen: set[tuple] = set()
        else:
            (self._origin, self._width, self._low, self._high, self._previous, self.learned,
             seen) = state
            self._seen = {tuple(pair) for pair in seen}

    def state(self) -> list:
        return [self._origin, self._width, self._low, self._high, self._previous, self.learned,
                sorted(([p, level] for p, level in self._seen),
                       key=lambda pair: (pair[0] is not None, pair[0] or 0, pair[1]))]

    def _level(self, value: float) -> int:
        if self._width == 0.0:
            if self._origin is None:
                self._origin = value
            if abs(value - self._origin) <= _tiny(self._origin):
                return 0
            # the first difference seen spans half the grid: it can only widen from there
            self._width = abs(value - self._origin) * 2.0 / self._bins
        position = (value - self._origin) / self._width
        level = math.floor(position)
        low, high = self._low, self._high
        if low <= level <= high:  # the usual case: a level within the range seen
            return level
        if (high if high > level else level) - (low if low < level else level) < self._bins:
            self._low, self._high = min(low, level), max(high, level)
            return level
        return self._widen(position)

    def _widen(self, position: float) -> int:
        """The level of `position` (in current cells) after widening the cells as needed."""
        factor = 2
        while True:
            level = math.floor(position / factor)
            if max(self._high // factor, level) - min(self._low // factor, level) < self._bins:
                break
            factor *= 2
        self._width *= factor
        self._low, self._high = self._low // factor, self._high // factor
        if self._previous is not None:
            self._previous //= factor
        # floor(floor(x) / f) == floor(x / f): what was learned maps onto the wider cells
        self._seen = {(None if p is None else p // factor, q // factor) for p, q in self._seen}
        self._low, self._high = min(self._low, level), max(self._high, level)
        return level

    def novelty(self, value: float) -> float:
        """1.0 for a level never seen, 0.5 for a step never seen, else 0.0; learns `value`."""
        level = self._level(value)
        seen = self._seen
        step = (self._previous, level)
        if (None, level) not in seen:
            seen.add((None, level))
            novelty = 1.0
        else:
            novelty = 0.0 if step in seen else NEW_STEP_NOVELTY
        seen.add(step)
        self._previous = level
        self.learned += 1
        return novelty


class SeasonalNovelty:
    """The `novelty` detector (see the module docstring); O(1) per value."""

    def __init__(self, settings: DetectorSettings, state: list | None = None):
        self._s = settings
        seasonal_state, novelty_state, self._quiet = state or (None, None, 0)
        self._seasonal = SeasonalLikelihood(settings, seasonal_state, summed=True)
        self._novelty = ValueNovelty(settings.novelty_bins, novelty_state)

    def state(self) -> list:
        return [self._seasonal.state(), self._novelty.state(), self._quiet]

    def score(self, value: float, event_seconds: float) -> float:
        s, seasonal, values = self._s, self._seasonal, self._novelty
        likely = seasonal.likelihood(value, event_seconds)
        if seasonal.count < s.warmup_values:
            likely = 0.0
        novelty = values.novelty(value) if absorbable(value) else 1.0
        if values.learned < s.warmup_values:  # also after a restart that added it
            novelty = 0.0
        elif likely < s.novelty_gate:  # new, but in a calm stretch: often just noise
            novelty *= 0.5
        if self._quiet:
            self._quiet -= 1
            return 0.0
        anomaly = likely if likely > novelty else novelty
        # Only an alert starts the silence: were every silenced score above the threshold to
        # extend it, a metric whose scores hover there would stay blind to a new incident.
        if anomaly >= s.threshold:
            self._quiet = s.cooldown_values
        return anomaly


# Version of MetricScorer's saved state: [3, rolling statistics, detector name, detector].
# Version 2 (saved before 2026-12-02) was [2, rolling statistics, seasonal detector or None],
# version 1 (before 2026-12) [rolling statistics, seasonal detector or None]; both restore.
SCORER_STATE_VERSION = 3
# Values before and including an anomaly that go with it to the model (as in the article).
RECENT_VALUES = 20


class MetricScorer:
    """Rolling statistics plus the selected detector for one metric, fed in time order."""

    def __init__(self, settings: DetectorSettings, state: list | None = None):
        if settings.detector not in DETECTORS:
            raise ValueError(f"unknown detector {settings.detector!r}; one of {DETECTORS}")
        stats_state, saved_detector, detector_state = _scorer_parts(state)
        self._settings = settings
        self._stats = RollingStats(settings.window, stats_state)
        self._detector = _restore_detector(settings, saved_detector, detector_state)

    def state(self) -> list:
        return [SCORER_STATE_VERSION, self._stats.state(), self._settings.detector,
                self._detector.state() if self._detector else None]

    def update(self, value: float, event_seconds: float) -> MetricScore:
        self._stats.push(value)
        mean, std = self._stats.mean(), self._stats.std()
        z = _z_score(value, mean, std)
        if self._detector is not None:
            score = self._detector.score(value, event_seconds)
        else:
            score = 1.0 if self._stats.count >= ZSCORE_WARMUP and abs(z) > ZSCORE_LIMIT else 0.0
        is_anomaly = score >= self._settings.threshold
        return MetricScore(
            z_score=z, anomaly_score=score, is_anomaly=is_anomaly,
            rolling_mean=mean, rolling_std=std,
            rolling_count=self._stats.count,
            # only anomalies are explained: other values do not carry their history along
            recent_values=self._stats.latest(RECENT_VALUES) if is_anomaly else ())


def _scorer_parts(state: list | None) -> tuple[list | None, str | None, list | None]:
    """(rolling statistics, detector name, detector) of a saved state of any version this
    code reads."""
    if state is None:
        return None, None, None
    if state[0] == SCORER_STATE_VERSION:
        return state[1], state[2], state[3]
    if state[0] == 2:
        stats, detector = state[1], state[2]
    elif len(state) == 2 and isinstance(state[0], list):  # version 1
        stats, detector = state
    else:
        raise ValueError(f"metric state version {state[0]!r} is not one this code reads "
                         f"(1 to {SCORER_STATE_VERSION}): restore with the version that "
                         "wrote it")
    return stats, (SEASONAL if detector is not None else ZSCORE), detector


def _restore_detector(settings: DetectorSettings, saved: str | None, state: list | None):
    """The configured detector, continuing what a saved one learned where it can: the
    seasonal profile carries over between `seasonal` and `novelty` (a restart that changes
    --anomaly_detector keeps it); anything else starts afresh."""
    if settings.detector == ZSCORE:
        return None
    seasonal = {SEASONAL: state, NOVELTY: state[0] if state else None}.get(saved)
    if settings.detector == SEASONAL:
        return SeasonalLikelihood(settings, seasonal)
    if saved == NOVELTY:
        return SeasonalNovelty(settings, state)
    return SeasonalNovelty(settings, None if seasonal is None else [seasonal, None, 0])


def _score(scorer: MetricScorer, record: MetricRecord) -> ScoredMetric:
    return ScoredMetric(record, scorer.update(record.value, record.event_time.timestamp()))


def _metric_order(record: MetricRecord) -> tuple:
    return (record.event_time, record.value, record.timestamp, record.metadata)


def metric_sequence(settings: DetectorSettings) -> KeyedSequence:
    """How each metric's values are processed in order (see core/keyed.py)."""
    return KeyedSequence(
        restore=functools.partial(MetricScorer, settings),
        advance=_score,
        save=MetricScorer.state,
        order_key=_metric_order,
        event_id=operator.attrgetter("event_id"),
        record_to_plain=metric_to_plain,
        record_from_plain=metric_from_plain,
    )
