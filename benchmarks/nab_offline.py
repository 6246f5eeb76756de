"""Score the metric detector on the NAB series without Beam: fast iteration on defaults, and
the held-out score that cannot flatter them.

    python benchmarks/nab_offline.py [../shared/nab] [--set key=value ...] [--held-out] [--json]

Feeds every series in timestamp order through MetricScorer (exactly what the pipeline's
per-metric state does) and scores the anomaly scores with the functions of NAB's score.py
(the same code `score.py` runs on the pipeline's output): the three NAB profiles, the alerts
per 10,000 values and the cost per value. `make nab` measures the same detector through the
whole pipeline.

--held-out: leave one NAB family out (the folder in the series name: artificialNoAnomaly,
artificialWithAnomaly, realAWSCloudwatch, realKnownCause, ...). For each family, the settings
among the detector's CANDIDATES and the alert threshold are the ones that score best on the
other families; the family is then scored with them, untouched by the choice. The held-out
score adds up the families' raw scores and normalises them as NAB does (0 = no detections,
100 = perfect), so it compares with the full score, which chooses the threshold on every
series at once. The constants outside CANDIDATES (the novelty detector's 8 grid cells, say)
were chosen on all 35 series: the held-out score does not cover them.
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import importlib.util
import json
import pathlib
import time
from collections import defaultdict
from datetime import datetime

from realtime_ai.core.detectors import NOVELTY, SEASONAL, DetectorSettings, MetricScorer

# Settings the held-out protocol chooses among, per detector (the rest are the defaults).
CANDIDATES = {
    SEASONAL: tuple({"cooldown_values": cooldown, "recent_values": recent}
                    for cooldown in (50, 100, 200) for recent in (2, 3, 5)),
    NOVELTY: tuple({"cooldown_values": cooldown, "recent_values": recent, "novelty_gate": gate}
                   for cooldown in (90, 120, 150) for recent in (2, 3, 4)
                   for gate in (0.1, 0.15, 0.2)),
}


def load_series(nab_dir: pathlib.Path) -> dict[str, list[tuple[str, float, float]]]:
    series = defaultdict(list)
    with gzip.open(nab_dir / "metrics.jsonl.gz", "rt") as fh:
        for line in fh:
            event = json.loads(line)
            seconds = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
            series[event["metric"]].append((event["timestamp"], seconds, float(event["value"])))
    for rows in series.values():
        rows.sort(key=lambda r: r[1])
    return series


def load_scorer(nab_dir: pathlib.Path):
    """NAB's score.py as a module: its windows, weights and threshold sweep, not a copy."""
    spec = importlib.util.spec_from_file_location("nab_score", nab_dir / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclasses.dataclass
class Run:
    """One detector setting over every series."""

    scores: dict[str, list[float]]
    alerts: int
    values: int
    seconds: float


def run_detector(series: dict, settings: DetectorSettings) -> Run:
    scores, alerts, values = {}, 0, 0
    started = time.process_time()  # CPU time: other work on the machine does not count
    for name, rows in series.items():
        scorer = MetricScorer(settings)
        out = scores[name] = []
        for _, seconds, value in rows:
            score = scorer.update(value, seconds)
            out.append(score.anomaly_score)
            alerts += score.is_anomaly
        values += len(rows)
    return Run(scores, alerts, values, time.process_time() - started)


class Nab:
    """The labelled windows of every series and NAB's scoring of anomaly scores."""

    def __init__(self, nab_dir: pathlib.Path, series: dict):
        self.score_py = load_scorer(nab_dir)
        labels = json.loads((nab_dir / "labels.json").read_text())
        parse = self.score_py.parse_time
        self.series = series
        self.windows = {name: [(parse(a), parse(b)) for a, b in spans]
                        for name, spans in labels.items()}
        self.times = {name: [parse(stamp) for stamp, _, _ in series[name]] for name in labels}

    def points(self, run: Run, profile: str) -> dict[str, list]:
        """Per series: (anomaly_score, weight, window or None) of every scored row."""
        weights = self.score_py.PROFILES[profile]
        return {name: self.score_py.sweep_points(self.times[name], run.scores[name],
                                                 self.windows[name], name, weights)
                for name in self.windows}

    def normalised(self, raw: float, names, profile: str) -> float:
        weights = self.score_py.PROFILES[profile]
        windows = sum(len(self.windows[name]) for name in names)
        null, perfect = -weights["fn"] * windows, weights["tp"] * windows
        return round(100.0 * (raw - null) / (perfect - null), 2)

    def best(self, points: dict, names, profile: str) -> tuple[float, float]:
        """(raw score, threshold) at the threshold that scores best on `names`."""
        rows = [point for name in names for point in points[name]]
        return self.score_py.best_threshold(rows, self.score_py.PROFILES[profile])

    def raw_at(self, points: dict, names, profile: str, threshold: float) -> float:
        """Raw score on `names` with alerts at anomaly_score >= threshold, as score.py counts."""
        fn_weight = self.score_py.PROFILES[profile]["fn"]
        found: dict[str, float] = {}
        false_positives = 0.0
        for name in names:
            for score, weight, window in points[name]:
                if window is not None:
                    found.setdefault(window, -fn_weight)
                    if score >= threshold:
                        found[window] = max(found[window], weight)
                elif score >= threshold:
                    false_positives += weight
        return sum(found.values()) + false_positives


def family(name: str) -> str:
    return name.split("/", 1)[0]


def full_score(nab: Nab, run: Run) -> dict:
    result = {}
    for profile in nab.score_py.PROFILES:
        raw, threshold = nab.best(nab.points(run, profile), nab.windows, profile)
        result[profile] = {"score": nab.normalised(raw, nab.windows, profile),
                           "threshold": threshold}
    return result


def held_out(nab: Nab, base: DetectorSettings) -> dict:
    candidates = CANDIDATES.get(base.detector, ({},))
    settings = [dataclasses.replace(base, **changes) for changes in candidates]
    runs = [run_detector(nab.series, one) for one in settings]
    families = sorted({family(name) for name in nab.windows})
    result = {}
    for profile in nab.score_py.PROFILES:
        points = [nab.points(run, profile) for run in runs]
        raw_total, chosen = 0.0, {}
        for left_out in families:
            train = [name for name in nab.windows if family(name) != left_out]
            test = [name for name in nab.windows if family(name) == left_out]
            fits = [(nab.best(candidate, train, profile), index)
                    for index, candidate in enumerate(points)]
            (_, threshold), index = max(fits, key=lambda fit: fit[0][0])
            raw_total += nab.raw_at(points[index], test, profile, threshold)
            chosen[left_out] = {**candidates[index], "threshold": round(threshold, 4)}
        result[profile] = {"score": nab.normalised(raw_total, nab.windows, profile),
                           "chosen_on_the_other_families": chosen}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("nab_dir", nargs="?", default="../shared/nab")
    parser.add_argument("--set", action="append", default=[],
                        help="override a DetectorSettings field, e.g. --set threshold=0.9")
    parser.add_argument("--held-out", action="store_true",
                        help="also the leave-one-family-out score (a run per candidate)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    overrides = {}
    for item in args.set:
        key, value = item.split("=", 1)
        field_type = type(getattr(DetectorSettings(), key))
        overrides[key] = field_type(value)
    settings = DetectorSettings(**overrides)
    nab_dir = pathlib.Path(args.nab_dir)
    nab = Nab(nab_dir, load_series(nab_dir))
    run = run_detector(nab.series, settings)
    result = {
        "full": full_score(nab, run),
        "alerts_per_10k": round(10_000 * run.alerts / run.values, 2),
        "microseconds_per_value": round(run.seconds / run.values * 1e6, 2),
        "settings": dataclasses.asdict(settings),
    }
    if args.held_out:
        result["held_out"] = held_out(nab, settings)
    print(json.dumps(result, indent=2) if args.json else summary(result, len(nab.windows)))


def summary(result: dict, series: int) -> str:
    def profiles(scores: dict) -> str:
        return "  ".join(f"{profile} {scores[profile]['score']:6.2f}" for profile in scores)

    lines = [f"full score, {series} series:  {profiles(result['full'])}"]
    if "held_out" in result:
        lines.append(f"held-out score (leave one family out):  {profiles(result['held_out'])}")
        for left_out, chosen in result["held_out"]["standard"][
                "chosen_on_the_other_families"].items():
            settings = " ".join(f"{key}={value}" for key, value in chosen.items())
            lines.append(f"  standard, {left_out} scored with {settings}")
    lines.append(f"alerts per 10,000 values: {result['alerts_per_10k']:.2f}   "
                 f"cost: {result['microseconds_per_value']:.2f} us of CPU per value (this run)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
