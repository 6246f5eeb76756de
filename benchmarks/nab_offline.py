"""Score the metric detector on the NAB series without Beam: fast iteration on defaults.

    python benchmarks/nab_offline.py [../shared/nab] [--detector NAME] [--set key=value ...]

Feeds every series in timestamp order through MetricScorer (exactly what the pipeline's
per-metric state does), writes metric,timestamp,anomaly_score to a CSV, runs NAB's score.py
on it and prints the score, the alerts per 10,000 values and the cost per value. `make nab`
measures the same detector through the whole pipeline.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import gzip
import json
import pathlib
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime

from realtime_ai.core.detectors import DetectorSettings, MetricScorer


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


def run(nab_dir: pathlib.Path, settings: DetectorSettings) -> dict:
    series = load_series(nab_dir)
    flagged = values = 0
    started = time.perf_counter()
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False, newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["metric", "timestamp", "anomaly_score"])
        for name, rows in series.items():
            scorer = MetricScorer(settings)
            for stamp, seconds, value in rows:
                score = scorer.update(value, seconds)
                flagged += score.is_anomaly
                values += 1
                writer.writerow([name, stamp, f"{score.anomaly_score:.6f}"])
    seconds_per_value = (time.perf_counter() - started) / values
    scored = subprocess.run([sys.executable, str(nab_dir / "score.py"), out.name, "--json"],
                            capture_output=True, text=True, check=True)
    result = json.loads(scored.stdout)
    pathlib.Path(out.name).unlink()
    return {
        "nab_standard": result["profiles"]["standard"]["score"],
        "nab_low_fp": result["profiles"]["reward_low_FP_rate"]["score"],
        "nab_low_fn": result["profiles"]["reward_low_FN_rate"]["score"],
        "best_threshold": result["profiles"]["standard"]["threshold"],
        "alerts_per_10k": round(10_000 * flagged / values, 2),
        "microseconds_per_value": round(seconds_per_value * 1e6, 2),
        "settings": dataclasses.asdict(settings),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("nab_dir", nargs="?", default="../shared/nab")
    parser.add_argument("--set", action="append", default=[],
                        help="override a DetectorSettings field, e.g. --set threshold=0.9")
    args = parser.parse_args()
    overrides = {}
    for item in args.set:
        key, value = item.split("=", 1)
        field_type = type(getattr(DetectorSettings(), key))
        overrides[key] = field_type(value)
    print(json.dumps(run(pathlib.Path(args.nab_dir), DetectorSettings(**overrides)), indent=2))


if __name__ == "__main__":
    main()
