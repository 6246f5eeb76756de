"""Event-to-alert latency of the streaming job on the local Flink cluster, Kafka in, Pub/Sub out.

Mirrors tests/test_flink_streaming.py at a chosen rate:

1. the first R x --seconds events of the samples (samples/ when it holds that many, else a
   larger set of the same kind from the project's generator), split between transactions and
   metrics in the files' proportions;
2. fresh Kafka topics (created here with --partitions partitions, before the job reads them)
   and a fresh alerts topic with its subscription on the Pub/Sub emulator, made before the job;
3. `python -m realtime_ai.pipelines.main --runner=FlinkRunner` reading both topics, local
   model (or with --test-server our OpenAI-compatible server at 200 ms a call, in a process
   of its own, for the job and the batch run alike), alerts to the emulator, bounded by
   --max_run_seconds (start-up + --seconds + --settle); extra pipeline options after `--`
   (e.g. `-- --max_bundle_time_mills=100`);
4. once every vertex of the new Flink job is RUNNING, `python -m realtime_ai.samples publish`
   per stream, each at its share of R (`--dump` keeps the re-timed events): steadily, 1/rate
   apart, or with `--shape recorded` at that rate on average with the samples' busy and
   quiet hours kept (their busiest second about 1.4 x R; `busiest_second_events`);
5. meanwhile, every --sample-every seconds, Flink's REST API: each vertex's input watermark
   (min over its subtasks, as lag behind the wall clock), records in and out, and busy /
   back-pressured ms per second;
6. after the job: no Flink job of ours may still be active; the alerts pulled from the
   subscription; a DirectRunner batch run over the dump; every output dataset compared with
   it (tests/compare.py), and the alert ids published against the batch run's.

Latency of an alert = its message's publish_time on the subscription minus the alert's
event_time (the moment its event was due to be published), for the first message of each
alert_id (delivery is at least once).

Needs the services running (this script starts none; stop only what you started):
    scripts/flink-cluster.sh start; scripts/kafka.sh start
    eval "$(scripts/pubsub-emulator.sh start)"; export PUBSUB_EMULATOR_HOST

    .venv/bin/python benchmarks/flink_latency.py [--rate 330] [--seconds 60] [--settle 60]
        [--partitions 1] [--test-server] [--shape steady|recorded] [--work DIR]
        [--label NAME] [-- PIPELINE OPTIONS...]

Writes WORK/result.json (everything, watermark timeline included, and `cpu_probe_s`: the CPU
seconds of a fixed piece of work before the job, this machine's speed then) and prints a
summary;
with --save also benchmarks/results/flink_latency.json (local model) or, under its rate,
benchmarks/results/flink_latency_test_server.json (--test-server); a `--shape recorded` run
in the same files with `_recorded` before `.json`.
"""
from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import math
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable

REPO = pathlib.Path(__file__).resolve().parents[1]
STREAMS = ("transactions", "metrics")
# As tests/test_flink_streaming.py (its SHARED_OPTIONS less the runner, STREAMING_OPTIONS).
SHARED_OPTIONS = ["--anomaly_detector=zscore", "--insight_window_seconds=10",
                  "--llm_backend=local"]
TEST_SERVER_LATENCY_MS = 200
RESULTS_DIR = REPO / "benchmarks" / "results"
LOCAL_MODEL_RESULTS = "flink_latency.json"
TEST_SERVER_RESULTS = "flink_latency_test_server.json"  # by rate
STREAMING_OPTIONS = ["--file_window_seconds=10", "--window_grace_seconds=15"]
ACTIVE_STATES = {"INITIALIZING", "CREATED", "RUNNING", "RESTARTING", "FAILING"}
SUBMIT_TIMEOUT_SECONDS = 240  # job server + expansion service start, jar staging, deployment
READY_PAUSE_SECONDS = 5  # after every vertex runs: the Python workers connect
EXIT_GRACE_SECONDS = 180
BATCH_TIMEOUT_SECONDS = 1800
# Flink's watermark before any: Long.MIN_VALUE; Beam's minimum timestamp is about -2^63 us.
NO_WATERMARK_BELOW_MS = -(10 ** 15)


def _repo_module(relative: str):
    """tests/ is not a package that is installed: load a helper module by path."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, math.ceil(p / 100 * len(ordered)) - 1)
    return round(ordered[rank], 1)


# --- data -------------------------------------------------------------------------------------

# The same events as the Pub/Sub benchmark's: its samples (or generated set) and slicing.
_STREAM_BENCH = _repo_module("benchmarks/stream_bench.py")
source_files = _STREAM_BENCH.source_files
slice_inputs = _STREAM_BENCH.slice_inputs
alert_figures = _STREAM_BENCH.alert_figures  # published alert ids against batch; latency in ms
pull_alerts = _STREAM_BENCH.pull_alerts


# --- services ---------------------------------------------------------------------------------

def rest(flink: str, path: str, timeout: float = 10.0, attempts: int = 3):
    """GET a Flink REST path. A busy JobManager (a loaded machine, a job being deployed) can
    take more than the timeout to answer: a timed-out call is tried again; a refused one is
    not (no cluster)."""
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(f"http://{flink}{path}", timeout=timeout) as answer:
                return json.load(answer)
        except TimeoutError:
            if attempt == attempts:
                raise


def create_kafka_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    try:
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)
                             for name in names])
    finally:
        admin.close()


def delete_kafka_topics(bootstrap: str, names: list[str]) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    try:
        admin.delete_topics(names)
    except Exception as error:  # noqa: BLE001 - cleanup only
        print(f"warning: topics {names} not deleted: {error}", file=sys.stderr)
    finally:
        admin.close()


def alerts_channel(run_id: str) -> tuple[str, str]:
    from realtime_ai.io.pubsub_admin import EMULATOR_PROJECT, ensure_subscription

    topic = f"flink-latency-{run_id}-alerts"
    subscription = ensure_subscription(EMULATOR_PROJECT, topic, f"{topic}-sub")
    return f"projects/{EMULATOR_PROJECT}/topics/{topic}", subscription


def delete_alerts_channel(topic: str, subscription: str) -> None:
    from google.api_core.exceptions import NotFound
    from google.cloud import pubsub_v1

    with pubsub_v1.SubscriberClient() as subscriber:
        try:
            subscriber.delete_subscription(subscription=subscription, timeout=30)
        except NotFound:
            pass
    with pubsub_v1.PublisherClient() as publisher:
        try:
            publisher.delete_topic(topic=topic, timeout=30)
        except NotFound:
            pass


# --- CPU, from /proc: who used the 2 shared cores while the events were published ------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STOLEN = "stolen by the host"
# cmdline fragment -> label; the first that matches names a process
PROCESS_LABELS = (("SdkHarness", "python SDK workers"), ("TaskManagerRunner", "Flink TaskManager"),
                  ("StandaloneSessionClusterEntrypoint", "Flink JobManager"),
                  ("job-server-launcher", "Beam job server"), ("kafka.Kafka", "Kafka broker"),
                  ("realtime_ai.samples publish", "publishers"))


def cpu_by_label() -> dict[str, float]:
    """CPU seconds so far of the processes named in PROCESS_LABELS, by label, of the whole
    machine (busy, all processes) as 'machine', and the host's steal as STOLEN: a run that
    lost much of the cores to it measures the host, not the job."""
    totals: dict[str, float] = collections.defaultdict(float)
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        for fragment, label in PROCESS_LABELS:
            if fragment in cmdline:
                totals[label] += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
                break
    totals["machine"], totals[STOLEN] = _STREAM_BENCH.machine_cpu_seconds()
    return dict(totals)


def cores_used(before: dict[str, float], after: dict[str, float], seconds: float) -> dict:
    return {label: round((after.get(label, 0.0) - before.get(label, 0.0)) / seconds, 2)
            for label in after}


# --- the Flink job, watched through REST ------------------------------------------------------

def short_name(description: str, limit: int = 70) -> str:
    """A vertex's plan description, one line: its first operator (Flink puts chained ones on
    lines of their own, after <br/>)."""
    text = description.split("<br/>")[0].strip()
    return text if len(text) <= limit else text[:limit - 3] + "..."


class FlinkWatcher:
    """Samples a job's vertices: input watermark lag, records, busy and back-pressure."""

    METRICS = "busyTimeMsPerSecond,backPressuredTimeMsPerSecond"

    def __init__(self, flink: str, job_id: str, every: float):
        self.flink, self.job_id, self.every = flink, job_id, every
        self.samples: list[dict] = []
        self.plan = rest(flink, f"/jobs/{job_id}/plan")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flink-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.samples.append(self.sample())
            except (OSError, ValueError, KeyError):
                continue  # the job ended or the cluster is busy: keep what we have

    def sample(self) -> dict:
        now = time.time()
        job = rest(self.flink, f"/jobs/{self.job_id}")
        vertices = {}
        for vertex in job["vertices"]:
            vid = vertex["id"]
            marks = rest(self.flink, f"/jobs/{self.job_id}/vertices/{vid}/watermarks")
            values = [int(mark["value"]) for mark in marks
                      if mark["id"].endswith("currentInputWatermark")]
            lowest = min(values) if values else None
            metrics = {m["id"]: m for m in rest(
                self.flink, f"/jobs/{self.job_id}/vertices/{vid}/subtasks/metrics"
                f"?get={self.METRICS}")}
            vertices[vid] = {
                "input_watermark_lag_s": (round(now - lowest / 1000, 1)
                                          if lowest is not None and lowest > NO_WATERMARK_BELOW_MS
                                          and lowest < 2 ** 62 else None),
                "input_watermark_ms": values,
                "records_in": vertex["metrics"].get("read-records"),
                "records_out": vertex["metrics"].get("write-records"),
                "busy_ms_per_s_max": metrics.get("busyTimeMsPerSecond", {}).get("max"),
                "backpressured_ms_per_s_max": metrics.get(
                    "backPressuredTimeMsPerSecond", {}).get("max"),
            }
        return {"t": now, "state": job["state"], "vertices": vertices}

    def names(self) -> dict[str, dict]:
        return {node["id"]: {"name": short_name(node["description"]),
                             "parallelism": node["parallelism"],
                             "inputs": [(edge["id"], edge.get("ship_strategy"))
                                        for edge in node.get("inputs", [])]}
                for node in self.plan["plan"]["nodes"]}


def drained(watcher: FlinkWatcher | None, since_publish_end: float) -> bool:
    """Whether no vertex has read a record for the last 10 s (once the publishers ended)."""
    samples = watcher.samples if watcher else []
    recent = [s for s in samples if s["t"] >= samples[-1]["t"] - 10] if samples else []
    if since_publish_end < 10 or len(recent) < 3:
        return False

    def records(sample):
        return sum(v["records_in"] or 0 for v in sample["vertices"].values())
    return records(recent[0]) == records(recent[-1])


def job_id_named(flink: str, name: str, deadline: float) -> str:
    """The id of the Flink job called `name` (Beam names it after --job_name): the cluster may
    run other people's jobs too."""
    while time.time() < deadline:
        jobs = rest(flink, "/jobs/overview")["jobs"]
        ours = [job["jid"] for job in jobs if job["name"] == name]
        if ours:
            return ours[0]
        time.sleep(1)
    raise RuntimeError(f"no Flink job called {name} appeared")


def wait_running(flink: str, job_id: str, deadline: float) -> None:
    while time.time() < deadline:
        job = rest(flink, f"/jobs/{job_id}")
        if job["state"] == "RUNNING" and all(v["status"] == "RUNNING" for v in job["vertices"]):
            return
        if job["state"] not in ACTIVE_STATES:
            raise RuntimeError(f"Flink job {job_id} is {job['state']}")
        time.sleep(1)
    raise RuntimeError(f"Flink job {job_id} did not get all its tasks running")


# --- checks against batch ---------------------------------------------------------------------

def _table(path: pathlib.Path):
    import pyarrow.parquet as pq

    return pq.read_table(path) if path.exists() and any(path.rglob("*.parquet")) else None


def run_batch(folder: pathlib.Path, options: list[str] = SHARED_OPTIONS) -> str | None:
    """The batch run over the events as published; its log tail if it failed."""
    command = [sys.executable, "-m", "realtime_ai.pipelines.main", "--runner=DirectRunner",
               f"--transactions={folder}/published/transactions.jsonl",
               f"--metrics={folder}/published/metrics.jsonl", f"--output={folder}/batch",
               *options]
    with open(folder / "batch.log", "w") as log:
        done = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                              timeout=BATCH_TIMEOUT_SECONDS)
    return (folder / "batch.log").read_text()[-3000:] if done.returncode else None


def compare_outputs(folder: pathlib.Path) -> dict:
    from realtime_ai.core.records import OUTPUT_SCHEMAS

    comparable_rows = _repo_module("tests/compare.py").comparable_rows
    datasets = {}
    for name in OUTPUT_SCHEMAS:
        stream, batch = _table(folder / "stream" / name), _table(folder / "batch" / name)
        stream_rows = comparable_rows(stream) if stream is not None else []
        batch_rows = comparable_rows(batch) if batch is not None else []
        keys = [collections.Counter(json.dumps(row, sort_keys=True, default=str) for row in rows)
                for rows in (stream_rows, batch_rows)]
        datasets[name] = {"equal": stream_rows == batch_rows, "stream_rows": len(stream_rows),
                          "batch_rows": len(batch_rows),
                          "only_in_stream": sum((keys[0] - keys[1]).values()),
                          "only_in_batch": sum((keys[1] - keys[0]).values())}
    dead = _table(folder / "stream" / "dead_letter")
    late = sum(1 for error in (dead.column("error").to_pylist() if dead is not None else [])
               if error.startswith("late"))
    return {"datasets": datasets, "late_dead_letters": late}


def file_times(stream: pathlib.Path, publish_end: float) -> dict:
    """Per dataset: how many files, when the first and last were written (s after the
    publishers ended; negative: before)."""
    out = {}
    for name in ("transactions", "metrics", "alerts", "insights"):
        times = sorted(path.stat().st_mtime for path in (stream / name).rglob("*.parquet"))
        out[name] = {"files": len(times),
                     "first_s": round(times[0] - publish_end, 1) if times else None,
                     "last_s": round(times[-1] - publish_end, 1) if times else None}
    return out


# --- one run ----------------------------------------------------------------------------------

def _publisher(name: str, path: pathlib.Path, topic: str, rate: float,
               dump: pathlib.Path, steady: bool = False) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "realtime_ai.samples", "publish", f"--{name}", str(path),
         f"--{name}-topic", topic, "--rate", f"{rate:.3f}", "--dump", str(dump),
         *(["--steady"] if steady else [])],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def busiest_second_events(folder: pathlib.Path) -> int:
    """The most events of all streams re-timed into one second of the replay (the dump's
    event times): what a run at an average rate asked of the job at its peak."""
    per_second: collections.Counter = collections.Counter()
    for path in folder.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                per_second[json.loads(line)["timestamp"][:19]] += 1
            except (ValueError, KeyError, TypeError):
                continue  # a payload the replay sent unchanged
    return max(per_second.values(), default=0)


def with_model_at(base_url: str | None) -> list[str]:
    """SHARED_OPTIONS, with the model at `base_url` (our test server) instead of the local
    one when given."""
    if base_url is None:
        return list(SHARED_OPTIONS)
    return [option for option in SHARED_OPTIONS
            if not option.startswith("--llm_backend")] + [f"--llm_base_url={base_url}"]


# A fixed piece of pure-Python work, timed in CPU seconds before each run: on 2026-12-03 this
# VM's cores ran the same `make run` a third slower one hour than the hour before while the
# host's steal stayed low, and the latency moved with it. Compare this beside the figures.
CPU_PROBE_LOOPS = 3_000_000


def cpu_probe_seconds(repeat: int = 3) -> float:
    """The fewest CPU seconds this process took for CPU_PROBE_LOOPS additions, of `repeat`."""
    fewest = math.inf
    for _ in range(repeat):
        started = time.process_time()
        total = 0
        for number in range(CPU_PROBE_LOOPS):
            total += number
        fewest = min(fewest, time.process_time() - started)
    return round(fewest, 3)


def run(args: argparse.Namespace, pipeline_options: list[str], shared_options: list[str],
        model_requests: Callable[[], int] | None = None) -> dict:
    """The streaming job over the events published, then the batch run to compare with;
    `model_requests`: how many requests the model server has answered so far (our test
    server), read before the batch run, whose requests are not the job's."""
    work = pathlib.Path(args.work or tempfile.mkdtemp(prefix="flink-latency-"))
    work.mkdir(parents=True, exist_ok=True)
    events = round(args.rate * args.seconds)
    sources, origin = source_files(events, work)
    counts = slice_inputs(sources, events, work / "in")
    run_id = uuid.uuid4().hex[:8]
    topics = {name: f"flink-latency-{run_id}-{name}" for name in STREAMS}
    create_kafka_topics(args.kafka, list(topics.values()), args.partitions)
    alerts_topic, alerts_sub = alerts_channel(run_id)
    result: dict = {"label": args.label, "work": str(work), "rate": args.rate,
                    "seconds": args.seconds, "events": counts, "inputs": origin,
                    "partitions": args.partitions, "input_shape": args.shape,
                    "pipeline_options": pipeline_options,
                    "shared_options": shared_options, "cpu_probe_s": cpu_probe_seconds()}
    job_name = f"flink-latency-{run_id}"
    busy_jobs = [job["jid"] for job in rest(args.flink, "/jobs/overview")["jobs"]
                 if job["state"] in ACTIVE_STATES]
    if busy_jobs:  # they share the TaskManager's slots and CPU with ours
        result["other_active_jobs_at_start"] = busy_jobs
    max_run = args.ready_allowance + args.seconds + args.settle
    command = [sys.executable, "-m", "realtime_ai.pipelines.main", "--runner=FlinkRunner",
               f"--flink_master={args.flink}",
               f"--transactions=kafka://{args.kafka}/{topics['transactions']}",
               f"--metrics=kafka://{args.kafka}/{topics['metrics']}",
               f"--output={work}/stream", f"--alerts_topic={alerts_topic}",
               f"--job_name={job_name}",
               *shared_options, *STREAMING_OPTIONS, f"--max_run_seconds={max_run}",
               *pipeline_options]
    result["job_command"] = command
    publishers: dict[str, subprocess.Popen] = {}
    watcher = None
    job_log = open(work / "job.log", "w")
    started = time.time()
    # A session of its own: the job server and expansion service it starts go with it.
    job = subprocess.Popen(command, cwd=REPO, stdout=job_log, stderr=subprocess.STDOUT,
                           text=True, start_new_session=True)
    try:
        job_id = job_id_named(args.flink, job_name, started + SUBMIT_TIMEOUT_SECONDS)
        result["flink_job_id"] = job_id
        wait_running(args.flink, job_id, started + SUBMIT_TIMEOUT_SECONDS)
        result["running_after_s"] = round(time.time() - started, 1)
        time.sleep(READY_PAUSE_SECONDS)
        watcher = FlinkWatcher(args.flink, job_id, args.sample_every)
        watcher.start()
        publish_start = time.time()
        cpu_start = cpu_by_label()
        for name in STREAMS:
            publishers[name] = _publisher(
                name, work / "in" / f"{name}.jsonl", f"kafka://{args.kafka}/{topics[name]}",
                args.rate * counts[name] / events, work / "published",
                steady=args.shape == "steady")
        outputs = {name: p.communicate(timeout=args.seconds * 4) for name, p in
                   publishers.items()}
        publish_end = time.time()
        result["cores_used_while_publishing"] = cores_used(cpu_start, cpu_by_label(),
                                                           publish_end - publish_start)
        result["load_average_at_publish_end"] = os.getloadavg()
        result["publish_start_epoch"], result["publish_end_epoch"] = publish_start, publish_end
        result["publishers"] = {name: out[0].strip().splitlines()[-1:]
                                for name, out in outputs.items()}
        result["busiest_second_events"] = busiest_second_events(work / "published")
        # CPU until the job's outputs stop growing: what processing these events cost.
        while job.poll() is None and not drained(watcher, time.time() - publish_end):
            time.sleep(args.sample_every)
        result["cpu_seconds_until_drained"] = cores_used(
            cpu_start, cpu_by_label(), 1.0)  # seconds, not cores
        result["drained_after_publish_end_s"] = round(time.time() - publish_end, 1)
        job.wait(timeout=max_run + EXIT_GRACE_SECONDS)
        result["job_exit_code"] = job.returncode
    finally:
        if watcher is not None:
            watcher.stop()
        for publisher in publishers.values():
            if publisher.poll() is None:
                publisher.kill()
        if job.poll() is None or result.get("job_exit_code") is None:
            try:
                os.killpg(job.pid, signal.SIGTERM)  # the job and whatever it started
            except ProcessLookupError:
                pass
            job.wait(timeout=60)
        job_log.close()
        # Whatever way the job ended, ours may not hold task slots. Only ours: others may
        # share the cluster (a test run), and their jobs are none of our business.
        ours = result.get("flink_job_id")
        leftover = [j["jid"] for j in rest(args.flink, "/jobs/overview")["jobs"]
                    if j["jid"] == ours and j["state"] in ACTIVE_STATES]
        for jid in leftover:
            request = urllib.request.Request(f"http://{args.flink}/jobs/{jid}?mode=cancel",
                                             method="PATCH")
            urllib.request.urlopen(request, timeout=10).close()
        result["flink_jobs_left_active"] = leftover
        pulled = pull_alerts(alerts_sub)
        delete_alerts_channel(alerts_topic, alerts_sub)
        delete_kafka_topics(args.kafka, list(topics.values()))

    if watcher is not None:
        result["vertices"] = watcher.names()
        result["timeline"] = watcher.samples
    log_text = (work / "job.log").read_text()
    result["job_log_has_traceback"] = "Traceback" in log_text
    result["job_log_tail"] = log_text.strip().splitlines()[-12:]
    if model_requests:
        result["llm_requests"] = model_requests()
    failed = run_batch(work, shared_options)
    if failed:
        result["batch_error"] = failed
        result["alert_messages"] = pulled
        return result
    result["compare"] = compare_outputs(work)
    result["files"] = file_times(work / "stream", result["publish_end_epoch"])
    result["alerts"] = alert_figures(pulled, work, percentile)
    result["alert_messages"] = pulled
    return result


# --- report -----------------------------------------------------------------------------------

def watermark_table(result: dict, at: list[float]) -> list[str]:
    """Per vertex: input watermark lag (s) at moments relative to the publishers' start."""
    samples, names = result.get("timeline") or [], result.get("vertices") or {}
    if not samples:
        return ["(no watermark samples)"]
    start = result["publish_start_epoch"]
    picked = []
    for offset in at:
        best = min(samples, key=lambda s: abs(s["t"] - start - offset))
        picked.append(best)
    header = "  ".join(f"{round(s['t'] - start):>6}s" for s in picked)
    lines = [f"{'vertex (parallelism)':<74} {header}   busy/bp max (last)"]
    for vid, info in names.items():
        lags = []
        for sample in picked:
            lag = sample["vertices"].get(vid, {}).get("input_watermark_lag_s")
            lags.append(f"{lag:>7}" if lag is not None else f"{'-':>7}")
        last = samples[-1]["vertices"].get(vid, {})
        lines.append(f"{info['name'][:70]:<70} ({info['parallelism']})  " + " ".join(lags)
                     + f"   {last.get('busy_ms_per_s_max')}/"
                       f"{last.get('backpressured_ms_per_s_max')}")
    return lines


def summary(result: dict) -> str:
    lines = [f"run {result.get('label') or ''} in {result['work']}",
             f"  events {result['events']} ({result['inputs']}), partitions "
             f"{result['partitions']}, options {' '.join(result['pipeline_options']) or '-'}",
             f"  input {result.get('input_shape')}, busiest second "
             f"{result.get('busiest_second_events')} events",
             f"  publishers: {result.get('publishers')}",
             f"  job exit {result.get('job_exit_code')}, traceback in log: "
             f"{result.get('job_log_has_traceback')}, Flink jobs left active: "
             f"{result.get('flink_jobs_left_active')}",
             f"  cores used while publishing: {result.get('cores_used_while_publishing')}, "
             f"load average then {result.get('load_average_at_publish_end')}, CPU probe "
             f"{result.get('cpu_probe_s')} s before the job",
             f"  CPU seconds from publish start until drained "
             f"({result.get('drained_after_publish_end_s')} s after publish end): "
             f"{result.get('cpu_seconds_until_drained')}"]
    if "batch_error" in result:
        lines.append("  batch run failed:\n" + result["batch_error"])
        return "\n".join(lines)
    for name, figures in result["compare"]["datasets"].items():
        lines.append(f"  {name:<12} {'EQUAL' if figures['equal'] else 'DIFFERENT':<9} stream "
                     f"{figures['stream_rows']:>6} batch {figures['batch_rows']:>6} "
                     f"(only stream {figures['only_in_stream']}, only batch "
                     f"{figures['only_in_batch']})")
    lines.append(f"  late dead letters {result['compare']['late_dead_letters']}; files "
                 f"(s after publish end) {result['files']}")
    alerts = result["alerts"]
    lines.append(f"  alerts: {alerts['published_ids']} ids published, batch {alerts['batch_ids']}"
                 f", equal {alerts['ids_equal_batch']} (missing {alerts['missing_ids']}, "
                 f"extra {alerts['extra_ids']})")
    for key, value in alerts.items():
        if key.startswith("latency_ms_"):
            in_seconds = {k: v if k == "count" else round(v / 1000, 1) for k, v in value.items()}
            lines.append(f"  latency s {key.removeprefix('latency_ms_'):<12} {in_seconds}")
    lines += ["  " + line for line in watermark_table(
        result, [5, result["seconds"] / 2, result["seconds"],
                 result["seconds"] + 30, result["seconds"] + 60])]
    return "\n".join(lines)


def save(result: dict, test_server: bool, folder: pathlib.Path) -> pathlib.Path:
    """Keeps `result` in `folder`: a local-model run as LOCAL_MODEL_RESULTS, a test-server run
    under its rate in TEST_SERVER_RESULTS (whose other rates it keeps): a test-server run
    written over the local model's figures had to be put back by hand. A run of the
    recorded shape goes to the same names with `_recorded` before `.json`."""
    suffix = "_recorded.json" if result.get("input_shape") == "recorded" else ".json"
    if not test_server:
        path = folder / LOCAL_MODEL_RESULTS.replace(".json", suffix)
        path.write_text(json.dumps(result, indent=1, default=str))
        return path
    path = folder / TEST_SERVER_RESULTS.replace(".json", suffix)
    by_rate = json.loads(path.read_text()) if path.exists() else {}
    by_rate[f"{result['rate']:g}"] = result
    path.write_text(json.dumps(by_rate, indent=1, default=str))
    return path


def parser() -> argparse.ArgumentParser:
    """This script's options (benchmarks/flink_sweep.py takes them too)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=330.0, help="events per second, total")
    parser.add_argument("--seconds", type=float, default=60.0, help="publishing time")
    parser.add_argument("--settle", type=float, default=60.0,
                        help="job time after the publishing (last windows close)")
    parser.add_argument("--ready-allowance", type=float, default=45.0,
                        help="part of --max_run_seconds for the job to start running")
    parser.add_argument("--partitions", type=int, default=1, help="per Kafka topic")
    parser.add_argument("--sample-every", type=float, default=3.0, help="REST sampling, s")
    parser.add_argument("--flink", default="localhost:8081")
    parser.add_argument("--kafka", default="127.0.0.1:9092")
    parser.add_argument("--work", default=None)
    parser.add_argument("--label", default="")
    parser.add_argument("--test-server", action="store_true",
                        help=f"our model server at {TEST_SERVER_LATENCY_MS} ms a call, not "
                        "the local model")
    parser.add_argument("--shape", choices=("steady", "recorded"), default="steady",
                        help="steady: every stream's events evenly spaced at its rate "
                        "(default); recorded: at that rate on average, the samples' busy and "
                        "quiet hours kept")
    parser.add_argument("--save", action="store_true",
                        help=f"also keep the result in {LOCAL_MODEL_RESULTS}, or with "
                        f"--test-server under its rate in {TEST_SERVER_RESULTS} "
                        f"(in {RESULTS_DIR.relative_to(REPO)})")
    return parser


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(this script's arguments, the pipeline options after `--`)."""
    if "--" not in argv:
        return argv, []
    return argv[:argv.index("--")], argv[argv.index("--") + 1:]


def cluster_problem(flink: str) -> str | None:
    """Why the Flink cluster at `flink` cannot run a job now, or None. A TaskManager whose
    tasks did not exit within 180 s of a cancel shuts itself down (Flink's task cancellation
    watchdog), and every job after it fails to be scheduled."""
    try:
        overview = rest(flink, "/overview")
    except (OSError, urllib.error.URLError):
        return f"no Flink cluster at {flink}: scripts/flink-cluster.sh start"
    if not overview.get("taskmanagers"):
        return (f"the Flink cluster at {flink} has no TaskManager (its log is under "
                "~/.cache/realtime-ai/run/flink/log): scripts/flink-cluster.sh stop, then start")
    return None


def check_services(flink: str) -> None:
    if not os.environ.get("PUBSUB_EMULATOR_HOST"):
        raise SystemExit("set PUBSUB_EMULATOR_HOST: eval \"$(scripts/pubsub-emulator.sh start)\"")
    problem = cluster_problem(flink)
    if problem:
        raise SystemExit(problem)


def run_with_model(args: argparse.Namespace, pipeline_options: list[str],
                   deep_latency_ms: float | None = None) -> dict:
    """`run` with the local model, or with --test-server our server in a process of its own
    for the job and the batch run alike, the deep model answering after `deep_latency_ms`
    (None: as the fast model); the run's result is also kept in its work folder."""
    from realtime_ai.llm.base import LlmConfig

    flags = ["--latency_ms", str(TEST_SERVER_LATENCY_MS)]
    model = f"test server, {TEST_SERVER_LATENCY_MS} ms a call"
    if deep_latency_ms is not None:
        flags += ["--model_latency", f"{LlmConfig().deep_model}={deep_latency_ms}"]
        model += f", the deep model's {deep_latency_ms:g} ms"
    server = (_repo_module("benchmarks/llm_throughput.py").Server(*flags) if args.test_server
              else None)
    try:
        result = run(args, pipeline_options, with_model_at(server.base_url if server else None),
                     (lambda: server.stats()["requests"]) if server else None)
        if server:
            result["model"] = model
    finally:
        if server:
            server.stop()
    (pathlib.Path(result["work"]) / "result.json").write_text(
        json.dumps(result, indent=1, default=str))
    return result


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"not a latency in ms: {text!r}")
    return value


def main() -> int:
    argv, pipeline_options = split_argv(sys.argv[1:])
    options = parser()
    options.add_argument("--deep-latency-ms", type=_milliseconds, default=None,
                         help="with --test-server, not --save: the deep model's latency "
                         f"(default: {TEST_SERVER_LATENCY_MS} ms, as the fast model's)")
    args = options.parse_args(argv)
    if args.deep_latency_ms is not None and (args.save or not args.test_server):
        options.error("--deep-latency-ms goes with --test-server, and is not saved")
    check_services(args.flink)
    result = run_with_model(args, pipeline_options, args.deep_latency_ms)
    if args.save:
        save(result, args.test_server, RESULTS_DIR)
    print(summary(result))
    print(f"details: {pathlib.Path(result['work']) / 'result.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
