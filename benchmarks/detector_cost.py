"""Per-value cost of our metric scoring against the article's approach, in one run.

The article's approach keeps a deque of the last 100 values and computes numpy mean and std
over it for every value. Ours updates rolling sums (z_score) and the selected detector in
O(1); each of our detectors (novelty, the default; seasonal; zscore) runs over the same values
in the same process. The result is printed and written as JSON to
benchmarks/results/detector_cost.json. Cost is the process's CPU time, not wall time, so other
work on a shared machine does not count against it.

    python benchmarks/detector_cost.py [--values 200000]
"""
from __future__ import annotations

import argparse
import collections
import json
import pathlib
import platform
import random
import time

import numpy as np

from realtime_ai.core.detectors import DETECTORS, DetectorSettings, MetricScorer

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def article_detector(values: list[float], window: int = 100) -> int:
    recent: collections.deque[float] = collections.deque(maxlen=window)
    flagged = 0
    for value in values:
        recent.append(value)
        if len(recent) >= 10:
            array = np.array(recent)
            std = array.std()
            if std > 0 and abs(value - array.mean()) / std > 3:
                flagged += 1
    return flagged


def ours(values: list[float], detector: str) -> int:
    scorer = MetricScorer(DetectorSettings(detector=detector))
    return sum(scorer.update(v, i * 300.0).is_anomaly for i, v in enumerate(values))


def timed(function, *args) -> float:
    started = time.process_time()
    function(*args)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--values", type=int, default=200_000)
    args = parser.parse_args()
    rng = random.Random(1)
    values = [rng.gauss(100, 10) for _ in range(args.values)]
    article = timed(article_detector, values)
    cost = {detector: timed(ours, values, detector) for detector in DETECTORS}
    result = {
        "values": args.values,
        "article_us_per_value": round(article / args.values * 1e6, 3),
        **{f"{detector}_us_per_value": round(seconds / args.values * 1e6, 3)
           for detector, seconds in cost.items()},
        **{f"article_over_{detector}": round(article / seconds, 2)
           for detector, seconds in cost.items()},
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "detector_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
