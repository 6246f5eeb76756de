"""Pure tests of the rolling statistics and the detectors."""
import math
import random

import numpy as np
import pytest

from realtime_ai.transforms.detectors import (
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
    assert got[300].anomaly_score > 0.5


def test_unknown_detector_is_rejected():
    with pytest.raises(ValueError, match="unknown detector"):
        MetricScorer(DetectorSettings(detector="magic"))
