"""Pure tests of the rolling statistics and the detectors."""
import json
import math
import pathlib
import random
from datetime import datetime, timezone

import numpy as np
import pytest

from realtime_ai.core.detectors import (
    DETECTORS,
    SCORER_STATE_VERSION,
    DetectorSettings,
    MetricScorer,
    RollingStats,
    ValueNovelty,
)
from realtime_ai.core.keyed import decode_state
from realtime_ai.core.model_inputs import metric_anomaly_data
from realtime_ai.core.records import MetricRecord, ScoredMetric


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
    scorer = MetricScorer(DetectorSettings(detector="seasonal"))
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
    scorer = MetricScorer(DetectorSettings(detector="seasonal"))
    flagged = [i for i, v in enumerate(values) if scorer.update(v, i * 300.0).is_anomaly]
    assert flagged and all(day * 8 + 60 <= i < day * 8 + 84 for i in flagged), flagged


def test_gaps_in_time_do_not_raise_alarms():
    scorer = MetricScorer(DetectorSettings())
    values = _noise(1500, seed=2)
    seconds = [i * 300.0 + (86400 * 3 if i > 800 else 0) for i in range(1500)]
    assert not any(scorer.update(v, t).is_anomaly for v, t in zip(values, seconds, strict=True))


@pytest.mark.parametrize("seed", range(6))
def test_plain_noise_never_pages_not_even_right_after_the_warm_up(seed):
    scorer = MetricScorer(DetectorSettings(detector="seasonal"))
    assert not any(scorer.update(v, i * 300.0).is_anomaly
                   for i, v in enumerate(_noise(2500, seed=seed)))


def test_unknown_detector_is_rejected():
    with pytest.raises(ValueError, match="unknown detector"):
        MetricScorer(DetectorSettings(detector="magic"))


EXTREMES = [1e308, -1e308, 5e-324, -5e-324] + [1.7e308 - i * 1e306 for i in range(30)]


def _all_finite(score) -> bool:
    return all(math.isfinite(x) for x in (score.z_score, score.anomaly_score,
                                          score.rolling_mean, score.rolling_std))


@pytest.mark.parametrize("detector", DETECTORS)
def test_extreme_values_are_scored_without_blinding_the_statistics(detector):
    """#13: one huge finite value made the running sums inf/NaN and hid every later spike."""
    settings = DetectorSettings(detector=detector)
    scorer = MetricScorer(settings)
    values = _noise(2000, seed=5)
    for i, v in enumerate(values[:1000]):
        scorer.update(v, i * 300.0)
    extremes = [scorer.update(v, (1000 + i) * 300.0) for i, v in enumerate(EXTREMES)]
    assert all(_all_finite(s) for s in extremes)
    assert extremes[0].z_score > 1e300 and extremes[1].z_score < -1e300
    later = [scorer.update(v + (100 if i == 900 else 0), (1100 + i) * 300.0)
             for i, v in enumerate(values[1000:])]
    assert all(_all_finite(s) for s in later)
    assert later[-1].rolling_mean == pytest.approx(50, abs=3)  # the extremes were not absorbed
    assert later[900].is_anomaly  # a 20-sigma spike after them is still seen
    restored = MetricScorer(settings, json.loads(json.dumps(scorer.state())))
    assert _all_finite(restored.update(50.0, 3000 * 300.0))


def test_a_saved_state_whose_sums_overflowed_is_repaired_on_restore():
    scorer = MetricScorer(DetectorSettings(detector="zscore"))
    for i, v in enumerate(_noise(200)):
        scorer.update(v, i * 300.0)
    version, (ring, position, _, _, since), name, detector = scorer.state()
    broken = [version, [ring, position, math.inf, math.nan, since], name, detector]
    score = MetricScorer(DetectorSettings(detector="zscore"), broken).update(50.0, 0.0)
    assert _all_finite(score) and score.rolling_mean == pytest.approx(50, abs=2)


GOLDEN = pathlib.Path(__file__).parent / "golden"


def test_a_version_1_metric_state_still_restores():
    """The key state the previous version saved (tests/golden/metric_state_v1.json, written
    by it after 400 values) restores: its rolling statistics continue exactly."""
    saved = decode_state((GOLDEN / "metric_state_v1.json").read_bytes()).saved
    scorer = MetricScorer(DetectorSettings(), saved)
    after = [114.839, 107.065, 99.79, 105.967, 116.546]
    got = [scorer.update(v, 1_700_000_000 + (400 + i) * 300.0) for i, v in enumerate(after)]
    assert [(s.z_score, s.rolling_mean, s.rolling_std) for s in got] == [
        (1.3350989455258206, 100.66003000000002, 10.62016418147621),
        (0.6119022167072279, 100.59974000000004, 10.565838500783437),
        (-0.07929241744221287, 100.62733000000004, 10.560026128731295),
        (0.49557411674871904, 100.73395000000004, 10.559570855580786),
        (1.5068640292206987, 100.70538000000005, 10.512308803463982)]
    assert all(0.0 <= s.anomaly_score <= 1.0 for s in got)
    assert scorer.state()[0] == SCORER_STATE_VERSION


@pytest.mark.parametrize("changes", [{"day_slots": 96}, {"day_slots": 24},
                                     {"recent_values": 5}, {"recent_values": 1}])
def test_a_state_saved_with_other_settings_restores_under_the_new_ones(changes):
    """A restart with another --anomaly_day_slots (or changed defaults) indexed the saved
    slot lists out of range (IndexError) or averaged a ring of the wrong length."""
    old = MetricScorer(DetectorSettings(detector="seasonal"))
    values = _noise(1500, seed=3)
    for i, v in enumerate(values[:1000]):
        old.update(v, i * 300.0)
    settings = DetectorSettings(detector="seasonal", **changes)
    scorer = MetricScorer(settings, json.loads(json.dumps(old.state())))
    later = [scorer.update(v + (100 if i == 400 else 0), (1000 + i) * 300.0)
             for i, v in enumerate(values[1000:])]
    assert all(_all_finite(s) for s in later)
    _, _, _, (slot_mean, _, _, recent, scalars) = scorer.state()
    assert len(slot_mean) == settings.day_slots and len(recent) == settings.recent_values
    assert math.fsum(recent) == pytest.approx(scalars[3])  # the ring and its running sum agree
    if "day_slots" in changes:  # the detector starts afresh, as for a new metric
        fresh = MetricScorer(settings)
        assert [s.anomaly_score for s in later] == [
            fresh.update(v + (100 if i == 400 else 0), (1000 + i) * 300.0).anomaly_score
            for i, v in enumerate(values[1000:])]


def test_an_unknown_metric_state_version_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="metric state version 99 is not one this code reads"):
        MetricScorer(DetectorSettings(), [99, [], None])


def test_anomalies_carry_the_last_20_values_and_others_none():
    scorer = MetricScorer(DetectorSettings(detector="zscore"))
    values = [10.0 + (i % 3) * 0.1 for i in range(50)] + [50.0]
    scores = [scorer.update(v, i * 60.0) for i, v in enumerate(values)]
    assert scores[-1].is_anomaly and scores[-1].recent_values == tuple(values[-20:])
    assert all(s.recent_values == () for s in scores[:-1])
    data = metric_anomaly_data(ScoredMetric(
        MetricRecord("cpu", 50.0, datetime(2026, 1, 1, tzinfo=timezone.utc), "t"), scores[-1]), [])
    assert data["recent_values"] == values[-20:]


def test_a_version_2_metric_state_restores_under_either_detector():
    """tests/golden/metric_state_v2.json: what the previous version saved for a metric after
    600 values under the seasonal detector (then the default)."""
    saved = json.loads((GOLDEN / "metric_state_v2.json").read_text())
    after = [102.948, 105.155, 105.689, 120.987, 92.951]
    seconds = [1_700_000_000 + (600 + i) * 300.0 for i in range(5)]
    seasonal = MetricScorer(DetectorSettings(detector="seasonal"), saved)
    assert [seasonal.update(v, t).anomaly_score for v, t in zip(after, seconds, strict=True)] == [
        0.020275117837298098, 0.0178176154960739, 0.020910356121307247, 0.05193410837171542,
        0.06757165008693017]  # what the previous version scored next: it continues exactly
    novelty = MetricScorer(DetectorSettings(), saved)  # a restart onto the new default
    assert not any(novelty.update(v, t).is_anomaly for v, t in zip(after, seconds, strict=True))
    version, _, name, (profile, _, _) = novelty.state()
    assert (version, name) == (SCORER_STATE_VERSION, "novelty")
    assert profile[0] == seasonal.state()[3][0]  # the learned daily profile carried over


def test_novelty_flags_a_large_spike_and_a_level_shift_once():
    values = _noise(3000)
    values[1500] += 100  # a 20-sigma spike
    for i in range(2200, 2400):
        values[i] += 40  # an 8-sigma level shift that lasts
    scorer = MetricScorer(DetectorSettings())
    flagged = [i for i, v in enumerate(values) if scorer.update(v, i * 300.0).is_anomaly]
    assert flagged == [1500, 2200]


def test_novelty_flags_a_spike_beyond_the_routine_ones_that_seasonal_misses():
    rng = random.Random(5)
    values = [rng.gauss(50, 3) + (30 if i % 40 == 0 else 0) for i in range(3000)]
    values[2000] = 130.0  # routine spikes reach 80
    flagged = {}
    for detector in ("novelty", "seasonal"):
        scorer = MetricScorer(DetectorSettings(detector=detector))
        flagged[detector] = [i for i, v in enumerate(values)
                             if scorer.update(v, i * 300.0).is_anomaly]
    assert 2000 in flagged["novelty"] and len(flagged["novelty"]) <= 3
    assert 2000 not in flagged["seasonal"] and len(flagged["seasonal"]) > 3


def test_novelty_rarely_pages_on_plain_noise():
    """New extremes of plain noise are new levels: rare, but not never (seasonal: never)."""
    pages = 0
    for seed in range(6):
        scorer = MetricScorer(DetectorSettings())
        pages += sum(scorer.update(v, i * 300.0).is_anomaly
                     for i, v in enumerate(_noise(2500, seed=seed)))
    assert pages <= 6  # at most 4 per 10,000 values


def test_value_novelty_state_stays_bounded_as_the_range_grows():
    rng = random.Random(8)
    novelty = ValueNovelty(8)
    value = 0.0
    for i in range(20_000):
        value += rng.gauss(0, 1) * (1 + i / 100)  # a random walk whose steps keep growing
        novelty.novelty(value if i % 5000 else value * 1e6)
        if i % 997 == 0:  # round trips through plain data as Beam state does
            novelty = ValueNovelty(8, json.loads(json.dumps(novelty.state())))
    _, _, low, high, previous, learned, seen = novelty.state()
    assert high - low < 8 and low <= previous <= high and learned == 20_000
    assert len(seen) <= 8 * 8 + 8 + 1  # levels, steps between them, and the first value


def test_silenced_scores_do_not_extend_the_silence_past_a_new_incident():
    """Bursts that keep scoring at the threshold once kept the detector quiet (each silenced
    score restarted the cooldown), so a value far beyond anything seen went unflagged."""
    rng = random.Random(3)
    values = [rng.gauss(50, 3) for _ in range(3000)]
    for start in range(1200, 1700, 60):
        for i in range(start, start + 3):
            values[i] += 25
    values[1650] = 200.0
    scorer = MetricScorer(DetectorSettings())
    flagged = [i for i, v in enumerate(values) if scorer.update(v, i * 300.0).is_anomaly]
    assert 1650 in flagged
    assert len([i for i in flagged if 1200 <= i < 1700]) <= 5  # bursts: one alert per cooldown


@pytest.mark.parametrize("recent_values", [2, 3, 4])
def test_novelty_flags_a_lone_spike_whatever_its_recent_window(recent_values):
    """The recent surprise is summed: averaged, a spike counted 1/recent_values of itself,
    and a window of 4 missed this 8-sigma spike that 2 and 3 flagged."""
    rng = random.Random(4)
    values = ([50 + 45 * math.sin(i / 20) for i in range(400)]  # the range, learned early
              + [rng.gauss(50, 5) for _ in range(2600)])
    values[2500] += 40
    scorer = MetricScorer(DetectorSettings(recent_values=recent_values))
    flagged = [i for i, v in enumerate(values) if scorer.update(v, i * 300.0).is_anomaly]
    assert flagged == [2500]


def test_a_version_3_metric_state_continues_as_its_version_scored():
    """tests/golden/metric_state_v3.json: what the previous version saved for a metric after
    600 values under `novelty`. The layout is unchanged; at the default window of 3 the summed
    recent surprise scores what the average did, so the scores go on as that version's."""
    saved = json.loads((GOLDEN / "metric_state_v3.json").read_text())
    scorer = MetricScorer(DetectorSettings(), saved)
    after = [103.487, 107.035, 103.837, 102.003, 102.173]
    got = [scorer.update(v, 1_700_000_000 + (600 + i) * 300.0).anomaly_score
           for i, v in enumerate(after)]
    assert got == pytest.approx([0.034988931337551266, 0.045124201755310615,
                                 0.02662059633761151, 0.03408446984917835, 0.02722453446802537])
    version, _, name, _ = scorer.state()
    assert (version, name) == (SCORER_STATE_VERSION, "novelty")


def test_novelty_flags_every_injected_sample_anomaly_within_5_minutes_and_nothing_else():
    """samples/metrics.jsonl (what `make run` reads) and its 18 labelled anomalies, as the
    README says."""
    samples = pathlib.Path(__file__).parent.parent / "samples"

    def seconds(stamp):
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()

    values = {}
    for line in (samples / "metrics.jsonl").read_text().splitlines():
        event = json.loads(line)
        values.setdefault(event["metric"], []).append((seconds(event["timestamp"]), event["value"]))
    alerts = []
    for metric, rows in values.items():
        scorer = MetricScorer(DetectorSettings())
        alerts += [(metric, t) for t, v in sorted(rows) if scorer.update(v, t).is_anomaly]
    labels = [json.loads(line)
              for line in (samples / "metrics_labels.jsonl").read_text().splitlines()]

    def explains(label, alert):
        return alert[0] == label["metric"] and 0 <= alert[1] - seconds(label["timestamp"]) <= 300

    assert len(labels) == 18
    assert all(any(explains(label, alert) for alert in alerts) for label in labels)
    assert all(any(explains(label, alert) for label in labels) for alert in alerts)
