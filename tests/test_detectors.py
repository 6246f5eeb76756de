"""Pure tests of the rolling statistics and the detectors."""
import math
import random

import numpy as np
import pytest

from realtime_ai.core.detectors import (
    DETECTORS,
    DetectorSettings,
    MetricScorer,
    RollingStats,
)


def test_rolling_stats_match_numpy_over_the_window():
    rng = random.Random(2)
    stats = RollingStats(20)
    values = []
    for _ in range(300):
        value = rng.gauss(100, 15)
        values.append(value)
        stats.push(value)
        window = np.array(values[-20:])
        assert stats.mean() == pytest.approx(window.mean(), rel=1e-9)
        if len(window) > 1:
            assert stats.std() == pytest.approx(window.std(ddof=1), rel=1e-7)


def test_zscore_is_the_articles_rule():
    scorer = MetricScorer(DetectorSettings(detector="zscore", window=100))
    scores = [scorer.update(10.0 + (i % 3) * 0.1, i) for i in range(9)]
    assert all(s.anomaly_score == 0.0 for s in scores)
    early = MetricScorer(DetectorSettings(detector="zscore"))
    for i in range(8):
        early.update(1.0 + 0.01 * (i % 2), i)
    assert early.update(1000.0, 9).anomaly_score == 0.0  # 9 values: still warming up
    for i in range(30):
        scorer.update(10.0 + (i % 3) * 0.1, 10 + i)
    spike = scorer.update(50.0, 100)
    assert spike.is_anomaly and spike.anomaly_score == 1.0 and spike.z_score > 3


@pytest.mark.parametrize("detector", DETECTORS)
def test_constant_series_gives_no_anomaly_and_no_nan(detector):
    scorer = MetricScorer(DetectorSettings(detector=detector))
    for i in range(500):
        score = scorer.update(7.0, i * 60.0)
        assert not score.is_anomaly
        assert score.z_score == 0.0 and not math.isnan(score.anomaly_score)


@pytest.mark.parametrize("detector", DETECTORS)
def test_state_round_trip_continues_identically(detector):
    settings = DetectorSettings(detector=detector)
    rng = random.Random(4)
    values = [rng.gauss(50, 5) + (40 if i in (300, 301) else 0) for i in range(600)]
    straight = MetricScorer(settings)
    expected = [straight.update(v, i * 300.0) for i, v in enumerate(values)]
    resumed = MetricScorer(settings)
    got = []
    for start in range(0, 600, 37):  # save and restore every 37 values, as Beam state does
        for i in range(start, min(start + 37, 600)):
            got.append(resumed.update(values[i], i * 300.0))
        resumed = MetricScorer(settings, resumed.state())
    assert got == expected
    assert all(0.0 <= s.anomaly_score <= 1.0 for s in got)


def _noise(n, seed=4):
    rng = random.Random(seed)
    return [rng.gauss(50, 5) for _ in range(n)]


def test_seasonal_flags_a_large_spike_and_a_level_shift_once():
    values = _noise(3000)
    values[1500] += 100  # a 20-sigma spike
    for i in range(2200, 2400):
        values[i] += 40  # an 8-sigma level shift that lasts
    scorer = MetricScorer(DetectorSettings())
    scores = [scorer.update(v, i * 300.0) for i, v in enumerate(values)]
    flagged = [i for i, s in enumerate(scores) if s.is_anomaly]
    assert 1500 in flagged
    shift_alerts = [i for i in flagged if 2200 <= i < 2400]
    assert shift_alerts and shift_alerts[0] <= 2203
    assert len(shift_alerts) <= 2  # the cooldown: one incident, not a page per value
    assert len(flagged) <= 5


def test_seasonal_expects_the_daily_rhythm_but_not_a_missing_peak():
    day = 288  # 5-minute values
    rng = random.Random(9)
    values = [100 + 50 * math.sin(2 * math.pi * (i % day) / day) + rng.gauss(0, 2)
              for i in range(day * 10)]
    for i in range(day * 8 + 60, day * 8 + 84):  # the peak of day 8 stays flat
        values[i] = 100 + rng.gauss(0, 2)
    scorer = MetricScorer(DetectorSettings())
    flagged = [i for i, v in enumerate(values) if scorer.update(v, i * 300.0).is_anomaly]
    assert flagged and all(day * 8 + 60 <= i < day * 8 + 84 for i in flagged), flagged


def test_gaps_in_time_do_not_raise_alarms():
    scorer = MetricScorer(DetectorSettings())
    values = _noise(1500, seed=2)
    seconds = [i * 300.0 + (86400 * 3 if i > 800 else 0) for i in range(1500)]
    assert not any(scorer.update(v, t).is_anomaly for v, t in zip(values, seconds, strict=True))


def test_unknown_detector_is_rejected():
    with pytest.raises(ValueError, match="unknown detector"):
        MetricScorer(DetectorSettings(detector="magic"))
