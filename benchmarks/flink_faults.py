"""Faults injected into the streaming job on the local Flink cluster, with figures.

One job run per fault, each as benchmarks/flink_latency.py runs its job (whose functions this
reuses): fresh Kafka topics and a Pub/Sub alerts topic, `python -m realtime_ai.pipelines.main
--runner=FlinkRunner` with checkpointing on, events published live at --rate, Flink's REST API
sampled meanwhile, and a DirectRunner batch run over the events as published to compare with.
Faults, each --fault-at seconds after the publishers start:

- taskmanager: kill -9 the TaskManager, start a new one (Flink restores the last checkpoint);
- kafka: stop the broker (scripts/kafka.sh stop) and start it again;
- model: the model is our test server (realtime_ai/llm/server.py); it is killed and started
  again on the same port --model-down seconds later;
- savepoint: the job is stopped with a savepoint (REST /jobs/ID/stop), then started again from
  it (--savepoint_path) with another code version (--llm_timeout_seconds changed: a DoFn's
  settings, nothing in state); the customer history must carry over.

Each job ends with a drain (stop with a savepoint, sources at the final watermark: every window
is written) once it has read everything. After each: transactions lost (published, yet neither
in transactions/ nor dead-lettered) and duplicated (same transaction_id twice in
transactions/), alert ids missing or extra against the batch run, in Parquet and on Pub/Sub
after dedupe on alert_id, rows equal to batch per dataset, and recovery seconds from the fault:
to the Kafka source reading again, and to every vertex's watermark passing where it was at the
fault.

Needs the services (this script starts none):
    scripts/flink-cluster.sh start; scripts/kafka.sh start
    eval "$(scripts/pubsub-emulator.sh start)"; export PUBSUB_EMULATOR_HOST

    .venv/bin/python benchmarks/flink_faults.py [--faults taskmanager,kafka,model,savepoint]
        [--rate 100] [--seconds 100] [--fault-at 30] [--model-down 60] [--results FILE]

Exits 1 when a fault lost or duplicated a record.
"""
from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
import uuid

import flink_latency as latency  # beside this file (run as a script, benchmarks/ is on the path)

REPO = pathlib.Path(__file__).resolve().parents[1]
FAULTS = ("taskmanager", "kafka", "model", "savepoint")
CHECKPOINT_MS = 10_000
# Checkpoints and the savepoint must outlive the job: the savepoint run restores from one.
JOB_OPTIONS = [f"--checkpointing_interval={CHECKPOINT_MS}"]
# The savepoint run's second version: a DoFn setting that leaves state as it is.
NEW_VERSION_OPTIONS = ["--llm_timeout_seconds=29"]
SAVEPOINT_TIMEOUT_SECONDS = 180
MAX_RUN_SPARE_SECONDS = 900
# From launching a job to all its tasks running: job server and expansion service start, jar
# staging, deployment; over 4 minutes seen with the 2 cores busy (load average 8).
SUBMIT_TIMEOUT_SECONDS = 600
RESTART_GRACE_SECONDS = 5  # between a kill and the start of the same service


# --- faults -----------------------------------------------------------------------------------

def _script(*args: str) -> None:
    subprocess.run([str(REPO / "scripts" / args[0]), *args[1:]], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)


def _taskmanager_pids() -> list[int]:
    run = pathlib.Path.home() / ".cache" / "realtime-ai" / "run" / "flink"
    pids = []
    for pid_file in run.glob("flink-*-taskexecutor.pid"):
        for line in pid_file.read_text().split():
            try:
                if "TaskManagerRunner" in pathlib.Path(f"/proc/{line}/cmdline").read_text():
                    pids.append(int(line))
            except (OSError, ValueError):
                continue
    return pids


def kill_taskmanager(_: dict) -> dict:
    pids = _taskmanager_pids()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    time.sleep(RESTART_GRACE_SECONDS)
    flink_home = pathlib.Path.home() / ".cache" / "realtime-ai" / "flink-1.19.3"
    subprocess.run([str(flink_home / "bin" / "taskmanager.sh"), "start"], check=True,
                   env={**os.environ, "FLINK_CONF_DIR": str(flink_home / "conf")},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                   timeout=60)
    return {"killed_pids": pids}


def restart_kafka(_: dict) -> dict:
    _script("kafka.sh", "stop")
    time.sleep(RESTART_GRACE_SECONDS)
    _script("kafka.sh", "start")
    return {}


class ModelServer:
    """Our OpenAI-compatible test server in a process of its own, on a fixed port."""

    def __init__(self, port: int, log: pathlib.Path):
        self.port, self.log = port, log
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "realtime_ai.llm.server", f"--port={self.port}"],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"the model server did not open port {self.port}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


def take_model_down(context: dict) -> dict:
    server: ModelServer = context["model_server"]
    server.kill()
    time.sleep(context["model_down_seconds"])
    server.start()
    return {"down_seconds": context["model_down_seconds"]}


def stop_job(context: dict, drain: bool) -> dict:
    """Stops the Flink job with a savepoint (REST /jobs/ID/stop; `drain`: after its sources
    have sent the final watermark, so every window closes and is written); waits for the
    job's launcher to exit (the job FINISHED: it prints its report)."""
    flink, job_id = context["flink"], context["flink_job_id"]
    body = json.dumps({"targetDirectory": str(context["work"] / "savepoints"),
                       "drain": drain}).encode()
    request = urllib.request.Request(f"http://{flink}/jobs/{job_id}/stop", data=body,
                                     method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        trigger = json.load(answer)["request-id"]
    deadline = time.time() + SAVEPOINT_TIMEOUT_SECONDS
    while time.time() < deadline:
        status = latency.rest(flink, f"/jobs/{job_id}/savepoints/{trigger}")
        if status["status"]["id"] == "COMPLETED":
            operation = status["operation"]
            if "location" not in operation:
                raise RuntimeError(f"stop with savepoint failed: {operation}")
            context["launcher"].wait(timeout=SAVEPOINT_TIMEOUT_SECONDS)
            return {"savepoint": operation["location"],
                    "launcher_exit_code": context["launcher"].returncode}
        time.sleep(1)
    raise RuntimeError("the savepoint did not complete")


def stop_with_savepoint(context: dict) -> dict:
    return stop_job(context, drain=False)


INJECT = {"taskmanager": kill_taskmanager, "kafka": restart_kafka, "model": take_model_down,
          "savepoint": stop_with_savepoint}


# --- figures ----------------------------------------------------------------------------------

def _source_records(sample: dict, sources: list[str]) -> int:
    return sum(sample["vertices"].get(vid, {}).get("records_out") or 0 for vid in sources)


def _lowest_marks(sample: dict) -> dict[str, int | None]:
    return {vid: (min(v["input_watermark_ms"]) if v["input_watermark_ms"] else None)
            for vid, v in sample["vertices"].items()}


def recovery(samples: list[dict], sources: list[str], fault_start: float,
             fault_end: float) -> dict:
    """Seconds from the fault's start until the Kafka source read again (its records out grew
    between two samples taken after the fault ended) and until every vertex's watermark passed
    where it was at the fault (the last sample before it); samples of the restored job follow
    those of the first in the savepoint run."""
    before = [s for s in samples if s["t"] < fault_start]
    after = [s for s in samples if s["t"] > fault_end]
    figures: dict = {"reading_again_s": None, "watermark_passed_s": None}
    for previous, sample in itertools.pairwise(after):
        if sample["state"] == "RUNNING" and (
                _source_records(sample, sources) > _source_records(previous, sources)):
            figures["reading_again_s"] = round(sample["t"] - fault_start, 1)
            break
    if not before:
        return figures
    at_fault = {vid: mark for vid, mark in _lowest_marks(before[-1]).items()
                if mark is not None and latency.NO_WATERMARK_BELOW_MS < mark < 2 ** 62}
    for sample in after:
        marks = _lowest_marks(sample)
        if at_fault and all((marks.get(vid) or latency.NO_WATERMARK_BELOW_MS) > mark
                            for vid, mark in at_fault.items()):
            figures["watermark_passed_s"] = round(sample["t"] - fault_start, 1)
            break
    return figures


def _ids(table, column: str) -> list[str]:
    return table.column(column).to_pylist() if table is not None else []


def _iso_millis(moment) -> str:
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def record_figures(work: pathlib.Path, alerts_pulled: list[dict]) -> dict:
    """Lost and duplicated transactions, alerts against the batch run, and which datasets
    equal the batch run's."""
    published = [json.loads(line)["transaction_id"] for line in
                 (work / "published" / "transactions.jsonl").read_text().splitlines() if line]
    stream = work / "stream"
    rows = collections.Counter(_ids(latency._table(stream / "transactions"), "transaction_id"))
    dead = latency._table(stream / "dead_letter")
    dead_ids, dead_reasons = collections.Counter(), collections.Counter()
    dead_metric_values = set()  # (metric, timestamp) of metric values dead-lettered
    for source, payload, error in zip(_ids(dead, "source"), _ids(dead, "payload"),
                                      _ids(dead, "error"), strict=True):
        try:  # a dead letter keeps the record (source: parse or the model task)
            record = json.loads(payload)
            transaction_id, metric = record.get("transaction_id"), record.get("metric")
        except (ValueError, AttributeError):
            continue
        if transaction_id:
            dead_ids[transaction_id] += 1
            dead_reasons[f"{source}: {error.split('): ')[-1].split(':')[0]}"] += 1
        elif metric:
            dead_metric_values.add((metric, record.get("timestamp")))
    alerts_parquet = collections.Counter(_ids(latency._table(stream / "alerts"), "alert_id"))
    batch_table = latency._table(work / "batch" / "alerts")
    # The alert of a dead-lettered transaction or metric value is not missing: its record
    # awaits a redrive.
    of_dead_lettered = {
        alert_id for alert_id, subject, moment in zip(
            _ids(batch_table, "alert_id"), _ids(batch_table, "subject"),
            _ids(batch_table, "event_time"), strict=True)
        if dead_ids[subject] or (subject, _iso_millis(moment)) in dead_metric_values}
    batch_alerts = set(_ids(batch_table, "alert_id")) - of_dead_lettered
    pubsub_ids = collections.Counter(message["alert_id"] for message in alerts_pulled)
    compare = latency.compare_outputs(work)
    return {
        "transactions_published": len(published),
        "transactions_lost": sum(1 for tid in set(published)
                                 if not rows[tid] and not dead_ids[tid]),
        "transactions_duplicated": sum(count - 1 for count in rows.values() if count > 1),
        "transactions_dead_lettered": sum(dead_ids.values()),
        "dead_letter_reasons": dict(dead_reasons),
        "alerts_batch": len(batch_alerts),
        "alerts_batch_of_dead_letters": len(of_dead_lettered),
        "alerts_parquet_missing": len(batch_alerts - set(alerts_parquet)),
        "alerts_parquet_extra": len(set(alerts_parquet) - batch_alerts),
        "alerts_parquet_duplicated": sum(c - 1 for c in alerts_parquet.values() if c > 1),
        "alerts_pubsub_messages": sum(pubsub_ids.values()),
        "alerts_pubsub_missing_after_dedupe": len(batch_alerts - set(pubsub_ids)),
        "alerts_pubsub_extra_after_dedupe": len(set(pubsub_ids) - batch_alerts),
        "datasets_equal_batch": {name: figures["equal"]
                                 for name, figures in compare["datasets"].items()},
        "compare": compare,
    }


# --- one run ----------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch(command: list[str], log: pathlib.Path) -> subprocess.Popen:
    with open(log, "a") as out:  # a session of its own: the job server goes with it
        return subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)


def _start_watching(flink: str, job_name: str, started: float, context: dict):
    """Samples the new Flink job called `job_name` (a restored job has the name of the
    stopped one) once all its tasks run."""
    deadline = started + SUBMIT_TIMEOUT_SECONDS
    known = context.setdefault("flink_job_ids", [])
    job_id = None
    while job_id is None:
        if time.time() > deadline:
            raise RuntimeError(f"no new Flink job called {job_name} appeared")
        time.sleep(1)
        job_id = next((job["jid"] for job in latency.rest(flink, "/jobs/overview")["jobs"]
                       if job["name"] == job_name and job["jid"] not in known), None)
    known.append(job_id)
    latency.wait_running(flink, job_id, deadline)
    watcher = latency.FlinkWatcher(flink, job_id, context["sample_every"])
    watcher.start()
    context["flink_job_id"] = job_id
    return watcher


def _step(description: str) -> str:
    """A vertex's description with the steps fused into it sorted (Beam lists them in another
    order in each job)."""
    return re.sub(r"\{([^}]*)\}",
                  lambda fused: "{" + ", ".join(sorted(fused[1].split(", "))) + "}", description)


def vertices_by_step(plan: dict, samples: list[dict]) -> tuple[list[dict], list[str]]:
    """A job's samples with each vertex under its steps and those of its inputs instead of its
    id (a job restored from a savepoint has other vertex ids for the same steps), and the keys
    of its sources (vertices without inputs)."""
    nodes = plan["plan"]["nodes"]
    steps = {node["id"]: _step(node["description"]) for node in nodes}
    keys = {node["id"]: " <- ".join([steps[node["id"]], *sorted(
        steps[edge["id"]] for edge in node.get("inputs", []))]) for node in nodes}
    renamed = [{**sample, "vertices": {keys.get(vid, vid): vertex
                                       for vid, vertex in sample["vertices"].items()}}
               for sample in samples]
    return renamed, [keys[node["id"]] for node in nodes if not node.get("inputs")]


def batch_run(work: pathlib.Path, test_server: bool) -> str | None:
    """The batch run over the events as published, with the model of the streaming job: our
    test server (same answers as the local model, other `model` and `prompt_version`) where
    the job asked it (the model fault's, --test-server), so that only the rows of an outage
    differ."""
    if not test_server:
        return latency.run_batch(work)
    server = ModelServer(_free_port(), work / "batch-model-server.log")
    server.start()
    try:
        return latency.run_batch(work, latency.with_model_at(server.base_url))
    finally:
        server.kill()


def run_fault(fault: str, args: argparse.Namespace) -> dict:
    work = pathlib.Path(args.work) / fault
    work.mkdir(parents=True, exist_ok=True)
    events = round(args.rate * args.seconds)
    sources, _ = latency.source_files(events, work)
    counts = latency.slice_inputs(sources, events, work / "in")
    run_id = uuid.uuid4().hex[:8]
    topics = {name: f"flink-faults-{run_id}-{name}" for name in latency.STREAMS}
    latency.create_kafka_topics(args.kafka, list(topics.values()), 1)
    alerts_topic, alerts_sub = latency.alerts_channel(run_id)
    context: dict = {"flink": args.flink, "work": work, "sample_every": args.sample_every,
                     "model_down_seconds": args.model_down}
    shared = list(latency.SHARED_OPTIONS)
    asks_test_server = fault == "model" or args.test_server
    if asks_test_server:
        server = context["model_server"] = ModelServer(_free_port(), work / "model-server.log")
        server.start()
        shared = latency.with_model_at(server.base_url)
    job_name = f"flink-faults-{run_id}"
    # A safety net only: each job is drained once the events are processed (stop_job).
    max_run = SUBMIT_TIMEOUT_SECONDS + args.seconds + MAX_RUN_SPARE_SECONDS
    command = [sys.executable, "-m", "realtime_ai.pipelines.main", "--runner=FlinkRunner",
               f"--flink_master={args.flink}",
               f"--transactions=kafka://{args.kafka}/{topics['transactions']}",
               f"--metrics=kafka://{args.kafka}/{topics['metrics']}",
               f"--output={work}/stream", f"--alerts_topic={alerts_topic}",
               f"--job_name={job_name}", *shared, *latency.STREAMING_OPTIONS, *JOB_OPTIONS,
               *args.job_options]
    result: dict = {"fault_name": fault, "rate": args.rate, "seconds": args.seconds,
                    "events": counts, "fault_at_s": args.fault_at, "job_command": command}
    watchers, publishers, launchers = [], {}, []
    try:
        started = time.time()
        launchers.append(_launch([*command, f"--max_run_seconds={max_run}"], work / "job.log"))
        context["launcher"] = launchers[-1]
        watchers.append(_start_watching(args.flink, job_name, started, context))
        result["running_after_s"] = round(time.time() - started, 1)
        time.sleep(latency.READY_PAUSE_SECONDS)
        publish_start = time.time()
        for name in latency.STREAMS:
            publishers[name] = latency._publisher(
                name, work / "in" / f"{name}.jsonl", f"kafka://{args.kafka}/{topics[name]}",
                args.rate * counts[name] / events, work / "published")
        time.sleep(max(0.0, publish_start + args.fault_at - time.time()))
        fault_start = time.time()
        result["fault"] = INJECT[fault](context)
        fault_end = time.time()
        if fault == "savepoint":
            watchers[-1].stop()
            launchers.append(_launch(
                [*command, *NEW_VERSION_OPTIONS, f"--savepoint_path={result['fault']['savepoint']}",
                 f"--max_run_seconds={max_run}"], work / "job.log"))
            context["launcher"] = launchers[-1]
            watchers.append(_start_watching(args.flink, job_name, fault_end, context))
            result["restored_running_after_s"] = round(time.time() - fault_end, 1)
        result["fault"]["took_s"] = round(fault_end - fault_start, 1)
        for name, publisher in publishers.items():
            out, _ = publisher.communicate(timeout=args.seconds * 4)
            result.setdefault("publishers", {})[name] = out.strip().splitlines()[-1:]
        publish_end = time.time()
        result["load_average_at_publish_end"] = os.getloadavg()
        while launchers[-1].poll() is None and not latency.drained(
                watchers[-1], time.time() - publish_end):
            time.sleep(args.sample_every)
        result["drained_after_publish_end_s"] = round(time.time() - publish_end, 1)
        result["end"] = stop_job(context, drain=True)
        result["job_exit_codes"] = [launcher.returncode for launcher in launchers]
    finally:
        for watcher in watchers:
            watcher.stop()
        for process in [*publishers.values(), *launchers]:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    process.kill()
        if "model_server" in context:
            context["model_server"].kill()
        leftover = [j["jid"] for j in latency.rest(args.flink, "/jobs/overview")["jobs"]
                    if j["jid"] in context.get("flink_job_ids", [])
                    and j["state"] in latency.ACTIVE_STATES]
        for jid in leftover:
            urllib.request.urlopen(urllib.request.Request(
                f"http://{args.flink}/jobs/{jid}?mode=cancel", method="PATCH"), timeout=10).close()
        result["flink_jobs_left_active"] = leftover
        pulled = latency.pull_alerts(alerts_sub)
        latency.delete_alerts_channel(alerts_topic, alerts_sub)
        latency.delete_kafka_topics(args.kafka, list(topics.values()))
    samples, sources = [], []
    for watcher in watchers:
        renamed, sources = vertices_by_step(watcher.plan, watcher.samples)
        samples += renamed
    result["recovery"] = recovery(samples, sources, fault_start, fault_end)
    result["fault_start_epoch"], result["fault_end_epoch"] = fault_start, fault_end
    result["timeline"] = samples
    (work / "alerts_pulled.json").write_text(json.dumps(pulled))
    log = (work / "job.log").read_text()
    result["job_log_has_traceback"] = "Traceback" in log
    failed = batch_run(work, asks_test_server)
    if failed:
        result["batch_error"] = failed
        return result
    result["records"] = record_figures(work, pulled)
    return result


def passed(result: dict) -> bool:
    records = result.get("records")
    return bool(records) and not any(records[key] for key in (
        "transactions_lost", "transactions_duplicated", "alerts_parquet_duplicated",
        "alerts_pubsub_missing_after_dedupe", "alerts_pubsub_extra_after_dedupe"))


def summary_line(result: dict) -> str:
    records = result.get("records") or {}
    return (f"{result['fault_name']:<12}"
            f" lost {records.get('transactions_lost')} dup {records.get('transactions_duplicated')}"
            f" dead-lettered {records.get('transactions_dead_lettered')}"
            f" alerts pubsub msgs {records.get('alerts_pubsub_messages')}/"
            f"{records.get('alerts_batch')} ids (missing "
            f"{records.get('alerts_pubsub_missing_after_dedupe')}, extra "
            f"{records.get('alerts_pubsub_extra_after_dedupe')}), parquet dup "
            f"{records.get('alerts_parquet_duplicated')}; equal batch "
            f"{records.get('datasets_equal_batch')}; recovery {result.get('recovery')}; "
            f"load {result.get('load_average_at_publish_end')}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--rate", type=float, default=100.0, help="events per second, total")
    parser.add_argument("--seconds", type=float, default=100.0, help="publishing time")
    parser.add_argument("--fault-at", type=float, default=30.0,
                        help="seconds after the publishers start")
    parser.add_argument("--model-down", type=float, default=60.0, help="seconds")
    parser.add_argument("--sample-every", type=float, default=2.0)
    parser.add_argument("--flink", default="localhost:8081")
    parser.add_argument("--kafka", default="127.0.0.1:9092")
    parser.add_argument("--work", default=None)
    parser.add_argument("--results", default=None, help="write the figures here too")
    parser.add_argument("--test-server", action="store_true",
                        help="every fault's job asks our test server, as the model fault's "
                             "does: a job with a model endpoint builds the model steps "
                             "(gathering or hand-over) that one with the local model has not")
    parser.add_argument("--job-option", action="append", default=[], dest="job_options",
                        help="one more option of the job, e.g. "
                             "--job-option=--finish_bundle_before_checkpointing=false")
    args = parser.parse_args()
    faults = args.faults.split(",")
    if not set(faults) <= set(FAULTS):
        parser.error(f"--faults: choose from {', '.join(FAULTS)}")
    if not os.environ.get("PUBSUB_EMULATOR_HOST"):
        print("error: set PUBSUB_EMULATOR_HOST: eval \"$(scripts/pubsub-emulator.sh start)\"",
              file=sys.stderr)
        return 2
    try:
        latency.rest(args.flink, "/overview")
    except OSError:
        print(f"error: no Flink cluster at {args.flink}: scripts/flink-cluster.sh start",
              file=sys.stderr)
        return 2
    args.work = args.work or tempfile.mkdtemp(prefix="flink-faults-")
    results = []
    for fault in faults:
        try:
            result = run_fault(fault, args)
        except Exception:  # noqa: BLE001 - the other faults still run; the failure is reported
            result = {"fault_name": fault, "error": traceback.format_exc()}
        results.append(result)
        (pathlib.Path(args.work) / f"{fault}.json").write_text(
            json.dumps(result, indent=1, default=str))
        print(summary_line(result), flush=True)
    if args.results:
        figures = [{k: v for k, v in r.items() if k != "timeline"} for r in results]
        pathlib.Path(args.results).write_text(json.dumps(figures, indent=1, default=str))
    print(f"details: {args.work}")
    return 0 if all(passed(r) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
