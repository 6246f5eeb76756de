"""Event-to-alert latency on the local Flink cluster against the rate, Kafka in, Pub/Sub out.

benchmarks/flink_latency.py at each of --rates (50, 100, 300, 1000 and 2000 events/s by
default), one after another, with the local model or (--test-server) our server at 200 ms a
call; its other options pass through (--seconds, --settle, ...; pipeline options after `--`).
Per rate: the events published and the rate they went out at, how long after publishing ended
records still moved between the job's steps (`drained_after_publish_end_s`: windows close up to 25 s
after their last event, so 20-40 s when the job kept up; a job still behind when its
--max_run_seconds ends it writes fewer rows than the batch run: the events it did not get to
are still in Kafka), the largest lag of a step's input watermark behind the wall clock
halfway through publishing and at its end (a lag that grows is a backlog that grows),
records dead-lettered as late, every output and the alert ids against a batch run over the
same events, event-to-alert latency percentiles and the cores used while publishing.

Needs the services running, as flink_latency.py (`make bench-flink-sweep` starts them):

    .venv/bin/python benchmarks/flink_sweep.py [--rates 50,100,300,1000,2000] [--test-server]
        [flink_latency.py options] [-- PIPELINE OPTIONS...]

Results: benchmarks/results/flink_sweep.json under "local model" or "test server" (the
other kept), each run's full result in its work folder; the plot
benchmarks/results/flink_latency_by_rate.svg (_test_server before .svg with --test-server).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys

import flink_latency  # benchmarks/, this script's folder
import stream_bench

RESULTS_FILE = flink_latency.RESULTS_DIR / "flink_sweep.json"
DEFAULT_RATES = "50,100,300,1000,2000"


def _largest_watermark_lag(result: dict, offset: float) -> float | None:
    """The largest lag of any vertex's input watermark at the sample nearest `offset`
    seconds after publishing started (None before any watermark)."""
    samples = result.get("timeline") or []
    if not samples:
        return None
    nearest = min(samples, key=lambda s: abs(s["t"] - result["publish_start_epoch"] - offset))
    lags = [v["input_watermark_lag_s"] for v in nearest["vertices"].values()
            if v.get("input_watermark_lag_s") is not None]
    return max(lags) if lags else None


def figures(result: dict) -> dict:
    """One rate's figures, from a flink_latency.run result."""
    published = sum(result["events"].values())
    span = result["publish_end_epoch"] - result["publish_start_epoch"]
    row = {
        "rate": result["rate"], "published": published,
        "achieved_rate": round(published / span, 1) if span > 0 else None,
        "job_exit_code": result.get("job_exit_code"),
        "drained_after_publish_end_s": result.get("drained_after_publish_end_s"),
        "watermark_lag_s": {
            "half_way": _largest_watermark_lag(result, result["seconds"] / 2),
            "publish_end": _largest_watermark_lag(result, span)},
        "cores_used_while_publishing": result.get("cores_used_while_publishing"),
        "cpu_probe_s": result.get("cpu_probe_s"), "work": result["work"]}
    if "batch_error" in result:
        return {**row, "error": f"batch run failed: {result['batch_error'][-300:]}"}
    datasets = result["compare"]["datasets"]
    alerts = result["alerts"]
    return {**row,
            "late_dead_letters": result["compare"]["late_dead_letters"],
            "datasets_equal_batch": {name: d["equal"] for name, d in datasets.items()},
            "rows": {name: [d["stream_rows"], d["batch_rows"]] for name, d in datasets.items()},
            "alerts": {key: value for key, value in alerts.items()
                       if key in ("published_ids", "batch_ids", "ids_equal_batch")
                       or key.startswith("latency_ms_")}}


def line(row: dict) -> str:
    if "published" not in row:  # the job did not run
        return f"{row['rate']:>6g}  ERROR: {row['error']}"
    lags = row["watermark_lag_s"]
    head = (f"{row['rate']:>6g} {row['published']:>7} {row['achieved_rate'] or 0:>8.1f} "
            f"{row['drained_after_publish_end_s']!s:>7} "
            f"{lags['half_way']!s:>7}/{lags['publish_end']!s:<7}")
    if "error" in row:
        return f"{head}  {row['error']}"
    same = " ".join(f"{name[:2]}={'S' if equal else 'D'}"
                    for name, equal in row["datasets_equal_batch"].items())
    seconds = stream_bench.latency_seconds_text(row["alerts"].get("latency_ms_all"))
    return (f"{head} {row['late_dead_letters']:>5}  {same}  ids"
            f"{'==' if row['alerts']['ids_equal_batch'] else '!='}"
            f"{row['alerts']['published_ids']:<5} {seconds:>22}")


def _rates(text: str) -> list[float]:
    try:
        rates = [float(rate) for rate in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not numbers separated by commas: {text!r}") from None
    if not all(0 < rate < float("inf") for rate in rates):
        raise argparse.ArgumentTypeError(f"rates must be positive: {text!r}")
    return rates


def parser() -> argparse.ArgumentParser:
    """flink_latency.py's options, and the rates."""
    parser = flink_latency.parser()
    parser.description = __doc__.splitlines()[0]
    parser.add_argument("--rates", type=_rates, default=DEFAULT_RATES,
                        help="events per second, total, separated by commas")
    return parser


def main() -> int:
    argv, pipeline_options = flink_latency.split_argv(sys.argv[1:])
    args = parser().parse_args(argv)
    flink_latency.check_services(args.flink)
    kind = "test server" if args.test_server else "local model"
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    code_at_start = stream_bench.code_version()
    work = args.work
    rows = []
    print("  rate    sent  rate/s  drained  lag s half/end  late  datasets (S=same as batch)"
          "  alert ids  p50/p95/p99/max s", flush=True)
    for rate in args.rates:
        args.rate = rate
        args.work = f"{work}/rate-{rate:g}" if work else None
        problem = flink_latency.cluster_problem(args.flink)
        if problem:  # a job would only wait out its start-up allowance and fail
            rows.append({"rate": rate, "error": problem})
            print(line(rows[-1]), flush=True)
            continue
        try:
            rows.append(figures(flink_latency.run_with_model(args, pipeline_options)))
        except Exception as error:  # noqa: BLE001 - one rate's failure is its figure
            rows.append({"rate": rate, "error": f"{type(error).__name__}: {error}"})
        print(line(rows[-1]), flush=True)
    sweeps = json.loads(RESULTS_FILE.read_text()) if RESULTS_FILE.exists() else {}
    sweeps[kind] = {"when": started, "code_at_start": code_at_start,
                    "code_at_end": stream_bench.code_version(), "seconds_per_rate": args.seconds,
                    "settle_seconds": args.settle, "pipeline_options": pipeline_options,
                    "shared_options": flink_latency.SHARED_OPTIONS, "runs": rows}
    RESULTS_FILE.write_text(json.dumps(sweeps, indent=1, default=str) + "\n")
    plot = flink_latency.RESULTS_DIR / ("flink_latency_by_rate.svg" if not args.test_server
                                        else "flink_latency_by_rate_test_server.svg")
    stream_bench.svg_latency_by_rate(
        [row for row in rows if "error" not in row],
        f"Event to alert on the local Flink cluster (Kafka in), {kind}", plot)
    print(f"results: {RESULTS_FILE}, plot: {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
