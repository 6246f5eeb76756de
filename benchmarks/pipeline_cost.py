"""What the main job costs per event against a bare Beam pass-through of the same files.

For each size N, N records (transactions and metrics in the proportions of samples/, from the
sample generator) are written as JSON lines to a temporary folder; then, each in a fresh
process so that CPU and memory are its own, on the same runner:

- pass-through: the project's ReadEventPayloads -> ParseTransactions / ParseMetrics ->
  WriteDataset of the parsed records (and the dead letters) to Parquet: what any Beam job
  reading these files and writing Parquet pays;
- main: `realtime_ai.pipelines.main.run([...])` with the embedded local model (no
  OPENAI_API_KEY, no --llm_base_url), everything the job does.

Per run: wall seconds of the run (importing the job's modules, building it, running it to
the end), events per second, CPU seconds
of the process and of the children it reaped (a Prism binary included: from wait4, start-up
included; `cpu_run_s` leaves out what the process spent before the run), peak RSS, and the
main / pass-through ratios, and the cores the host took from this VM meanwhile
(`stolen_by_host_cores`), and before each pair the CPU seconds of a fixed piece of work
(`cpu_probe_s_before_each_pair`, flink_latency.cpu_probe_seconds): this VM's speed moves
by a third within minutes and by three times between days, and the ratio moves with it.
With --repeat the pair runs several times, alternating; the
ratios are of the medians, and also taken within each pair (median and range); every run is
kept. The machine's load average is recorded before and
after: other work on the machine slows wall time more than CPU time. Results go to
benchmarks/results/pipeline_cost.json under the runner's name (other runners' are kept).

    python benchmarks/pipeline_cost.py [--sizes 20000,160000 | --quick] [--repeat 1]
        [--runner DirectRunner | --runner PrismRunner [--prism_location PATH]]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from flink_latency import cpu_probe_seconds  # benchmarks/, this script's folder
from stream_bench import machine_cpu_seconds

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS_FILE = REPO / "benchmarks" / "results" / "pipeline_cost.json"
SAMPLES = REPO / "samples"
PIPELINES = ("passthrough", "main")
QUICK_SIZE = 5_000
SAMPLE_CUSTOMERS, SAMPLE_HOURS = 200, 48  # the generator's defaults, as in samples/
METRICS_PER_STEP, METRIC_STEP_SECONDS = 6, 10  # six metrics, one value each every 10 s
MAX_RECORD_BYTES = 65536


# --- data ---------------------------------------------------------------------------------

def _sample_counts() -> tuple[int, int]:
    def lines(name: str) -> int:
        with open(SAMPLES / name) as handle:
            return sum(1 for line in handle if line.strip())

    return lines("transactions.jsonl"), lines("metrics.jsonl")


def _write_jsonl(rows: list[dict], path: pathlib.Path) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def generate_inputs(events: int, folder: pathlib.Path) -> dict[str, int]:
    """`events` records in samples/' proportions: transactions of more customers over the
    samples' 48 hours (each as active as in the samples), metrics over as many hours as it
    takes; each stream cut to its count in time order. Returns the count per stream."""
    from realtime_ai.samples.generate import generate, parse_start

    sample_tx, sample_metrics = _sample_counts()
    wanted_tx = round(events * sample_tx / (sample_tx + sample_metrics))
    wanted_metrics = events - wanted_tx
    customers = max(1, round(SAMPLE_CUSTOMERS * wanted_tx / sample_tx * 1.05))
    metric_hours = -(-wanted_metrics // METRICS_PER_STEP) * METRIC_STEP_SECONDS / 3600
    start = parse_start("2026-01-05T00:00:00Z")
    while True:
        samples = generate(7, customers, start, SAMPLE_HOURS, metric_hours)
        if len(samples.transactions) >= wanted_tx:
            break
        customers = round(customers * 1.1) + 1
    _write_jsonl(samples.transactions[:wanted_tx], folder / "transactions.jsonl")
    _write_jsonl(samples.metrics[:wanted_metrics], folder / "metrics.jsonl")
    return {"transactions": wanted_tx, "metrics": wanted_metrics}


# --- the two pipelines, each run in a child process -----------------------------------------

def _passthrough(transactions: str, metrics: str, output: str, runner_args: list[str]) -> None:
    import dataclasses

    import apache_beam as beam
    import pyarrow as pa
    from apache_beam.options.pipeline_options import PipelineOptions

    from realtime_ai.core.records import OUTPUT_SCHEMAS, MetricRecord, Transaction
    from realtime_ai.core.rows import dead_letter_row
    from realtime_ai.io.files import ReadEventPayloads
    from realtime_ai.io.parquet import WriteDataset
    from realtime_ai.transforms.parse import ParseMetrics, ParseTransactions

    time_type = pa.timestamp("us", tz="UTC")
    schemas = {
        # the parsed records' own fields
        "transactions": pa.schema(
            [(f.name, time_type if f.name == "event_time" else
              pa.float64() if f.name == "amount" else pa.string())
             for f in dataclasses.fields(Transaction)]),
        "metrics": pa.schema([("metric", pa.string()), ("value", pa.float64()),
                              ("event_time", time_type), ("timestamp", pa.string()),
                              ("metadata", pa.map_(pa.string(), pa.string()))]),
    }
    assert [f.name for f in dataclasses.fields(MetricRecord)] == schemas["metrics"].names
    from realtime_ai.pipelines.main import local_batch_runner

    options = PipelineOptions(runner_args)
    # on the engine the main command runs a batch job on with these options
    with beam.Pipeline(runner=local_batch_runner(options), options=options) as pipeline:
        dead = []
        for name, spec, parse in (("transactions", transactions, ParseTransactions),
                                  ("metrics", metrics, ParseMetrics)):
            label = name.title()
            read = pipeline | f"Read{label}" >> ReadEventPayloads(spec, name)
            parsed = read.payloads | f"Parse{label}" >> parse(MAX_RECORD_BYTES)
            (parsed.valid | f"{label}Rows" >> beam.Map(dataclasses.asdict)
             | f"Write{label}" >> WriteDataset(output, name, schemas[name]))
            dead += [read.dead_letter, parsed.dead_letter]
        (tuple(dead) | "AllDeadLetters" >> beam.Flatten()
         | "DeadLetterRows" >> beam.Map(dead_letter_row)
         | "WriteDeadLetter" >> WriteDataset(output, "dead_letter",
                                             OUTPUT_SCHEMAS["dead_letter"]))


def _main_job(transactions: str, metrics: str, output: str, runner_args: list[str]) -> None:
    from realtime_ai.pipelines.main import run

    run([f"--transactions={transactions}", f"--metrics={metrics}", f"--output={output}",
         *runner_args])


def child(args: argparse.Namespace) -> None:
    """One measured run; writes its own figures as JSON to args.child_result."""
    import apache_beam  # noqa: F401 - imported before the clock starts, in both runs alike

    job = _passthrough if args.child == "passthrough" else _main_job
    before = _cpu_seconds(resource.getrusage(resource.RUSAGE_SELF))
    started = time.perf_counter()
    job(args.transactions, args.metrics, args.output, args.runner_args)
    wall = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pathlib.Path(args.child_result).write_text(json.dumps(
        {"wall_s": wall, "cpu_before_run_s": before, "python_peak_rss_kb": peak_kb}))


# --- the parent: runs, measures, compares ---------------------------------------------------

def _cpu_seconds(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def _count_rows(folder: pathlib.Path) -> dict[str, int]:
    import pyarrow.parquet as pq

    return {path.name: pq.read_table(path).num_rows
            for path in sorted(folder.iterdir()) if path.is_dir()}


def measure(pipeline: str, inputs: pathlib.Path, events: int, runner_args: list[str]) -> dict:
    """Runs one pipeline in a fresh process; its figures, and the rows of each output."""
    work = pathlib.Path(tempfile.mkdtemp(prefix=f"pipeline-cost-{pipeline}-"))
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}  # the local model
    try:
        result_file, log_file = work / "result.json", work / "log.txt"
        command = [sys.executable, __file__, "--child", pipeline,
                   "--transactions", str(inputs / "transactions.jsonl"),
                   "--metrics", str(inputs / "metrics.jsonl"), "--output", str(work / "out"),
                   "--child_result", str(result_file), "--", *runner_args]
        _, stolen_before = machine_cpu_seconds()
        started = time.monotonic()
        with open(log_file, "w") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                       cwd=REPO)
            # wait4, not wait: the usage of this process and of every child it reaped
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
        _, stolen_after = machine_cpu_seconds()
        span = time.monotonic() - started
        if process.returncode != 0:
            raise SystemExit(f"{pipeline} run failed ({process.returncode}):\n"
                             + log_file.read_text()[-4000:])
        own = json.loads(result_file.read_text())
        rows = _count_rows(work / "out")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cpu = _cpu_seconds(usage)
    return {
        "wall_s": round(own["wall_s"], 2),
        "events_per_s": round(events / own["wall_s"], 1),
        "cpu_s": round(cpu, 2),
        "cpu_run_s": round(cpu - own["cpu_before_run_s"], 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # the largest process of the run
        "python_peak_rss_mb": round(own["python_peak_rss_kb"] / 1024, 1),
        # CPU the host took from this VM meanwhile (cores): a run with much of it is slower
        # for reasons of the host's, not the job's
        "stolen_by_host_cores": round((stolen_after - stolen_before) / span, 2),
        "rows": rows,
    }


FIGURES = ("wall_s", "events_per_s", "cpu_s", "cpu_run_s", "peak_rss_mb")


RATIO_FIGURES = ("wall_s", "cpu_s", "cpu_run_s", "peak_rss_mb")


def compare(runs: dict[str, list[dict]]) -> dict:
    """Medians of each pipeline's runs and their ratio; and the ratio within each pair (a
    pass-through and the main run right after it), whose median and range are less moved
    by this machine's speed, which drifts by a third within minutes."""
    medians = {name: {figure: round(statistics.median(run[figure] for run in runs[name]), 2)
                      for figure in FIGURES} for name in PIPELINES}
    ratios = {figure: round(medians["main"][figure] / medians["passthrough"][figure], 2)
              for figure in RATIO_FIGURES}
    pairs = list(zip(runs["passthrough"], runs["main"], strict=True))
    per_pair = {figure: sorted(main[figure] / passthrough[figure]
                               for passthrough, main in pairs) for figure in RATIO_FIGURES}
    pair_ratios = {figure: {"median": round(statistics.median(values), 2),
                            "min": round(values[0], 2), "max": round(values[-1], 2)}
                   for figure, values in per_pair.items()}
    return {"median": medians, "main_over_passthrough": ratios,
            "main_over_passthrough_per_pair": pair_ratios, "runs": runs}


def _runner_args(args: argparse.Namespace) -> list[str]:
    runner = [f"--runner={args.runner}"]
    prism = args.prism_location
    if args.runner in ("PrismRunner", "prism") and not prism:
        # the binary the project builds (once), as the tests use it; Beam would download one
        prism = subprocess.run(["bash", "scripts/prism.sh", "path"], cwd=REPO, check=True,
                               capture_output=True, text=True).stdout.strip()
    if prism:
        runner.append(f"--prism_location={prism}")
    return runner


def _save(results_file: pathlib.Path, runner: str, result: dict) -> None:
    saved = json.loads(results_file.read_text()) if results_file.exists() else {}
    saved[runner] = result
    results_file.parent.mkdir(parents=True, exist_ok=True)
    results_file.write_text(json.dumps(saved, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20000,160000",
                        help="records per run, comma-separated (default 20000,160000)")
    parser.add_argument("--quick", action="store_true", help=f"one size, {QUICK_SIZE}")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each pipeline per size")
    parser.add_argument("--runner", default="DirectRunner", help="DirectRunner or PrismRunner")
    parser.add_argument("--prism_location", help="a Prism binary, for --runner PrismRunner "
                        "(default: the one scripts/prism.sh builds)")
    parser.add_argument("--results", type=pathlib.Path, default=RESULTS_FILE)
    # internal: one measured run in this (child) process
    parser.add_argument("--child", choices=PIPELINES, help=argparse.SUPPRESS)
    for name in ("transactions", "metrics", "output", "child_result"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    parser.add_argument("runner_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    sizes = [QUICK_SIZE] if args.quick else [int(size) for size in args.sizes.split(",")]
    runner_args = _runner_args(args)
    result = {"runner": args.runner, "python": platform.python_version(),
              "cores": os.cpu_count(), "load_average_before": os.getloadavg(), "sizes": {}}
    for events in sizes:
        inputs = pathlib.Path(tempfile.mkdtemp(prefix="pipeline-cost-inputs-"))
        try:
            counts = generate_inputs(events, inputs)
            runs: dict[str, list[dict]] = {name: [] for name in PIPELINES}
            probes = []
            for _ in range(args.repeat):
                probes.append(cpu_probe_seconds())
                for name in PIPELINES:
                    runs[name].append(measure(name, inputs, events, runner_args))
                    print(f"{events} events, {name}: {json.dumps(runs[name][-1])}", flush=True)
        finally:
            shutil.rmtree(inputs, ignore_errors=True)
        result["sizes"][str(events)] = {"inputs": counts, **compare(runs),
                                        "cpu_probe_s_before_each_pair": probes}
    result["load_average_after"] = os.getloadavg()
    _save(args.results, args.runner, result)
    print(json.dumps({size: {k: v for k, v in figures.items() if k != "runs"}
                      for size, figures in result["sizes"].items()}, indent=2))


if __name__ == "__main__":
    main()
