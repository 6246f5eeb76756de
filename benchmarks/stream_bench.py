"""Streaming benchmark of the main command: Pub/Sub in, Parquet and Pub/Sub alerts out, on Prism.

For each total rate R (events per second), against the Pub/Sub emulator of
scripts/pubsub-emulator.sh (on a port of its own, so other users of the default one neither
slow us down nor are slowed down):

1. fresh topics and subscriptions for transactions, metrics and alerts (the alerts one
   before the job starts, so no alert is missed), deleted afterwards: the emulator slows
   down with leftover backlogs;
2. `python -m realtime_ai.pipelines.main` reading both subscriptions; with a Pub/Sub input
   and --runner=DirectRunner the command runs the job on Prism itself. Local model (no
   OPENAI_API_KEY), or with --test-server our OpenAI-compatible server at 200 ms a call.
   --max_run_seconds covers start-up, the publishing and SETTLE_SECONDS for the last windows
   to close (file and insight windows of 10 s close 15 s after the watermark passes them);
3. once the job is running, `python -m realtime_ai.samples publish` per stream, as
   tests/test_streaming_pubsub.py does: one publisher per file, each at its share of R, so
   both streams flow for the whole --seconds (with both files in one publisher, --rate is an
   average over one merged timeline, and the samples' 3 hours of metrics against 48 hours of
   transactions would go out as a burst of metrics first). The first R x --seconds events of
   the samples are published, split between the files in the samples' proportions; when a
   sweep needs more events than samples/ holds, the project's generator writes a larger set
   of the same kind (more customers, more hours of metrics) for every rate of the sweep;
4. then a batch run of the same command (--runner=DirectRunner, the same shared options) over
   the events exactly as published (`publish --dump`).

Per rate: events published and the rate achieved; rows written against events published and
when the last files came; records dead-lettered as late; each output dataset against the batch
run (tests/compare.py); the alert ids published on the alerts topic against the batch run's;
event-to-alert latency (an alert message's publish time minus the alert's event time, which
is the moment its event was due to be published); the job's CPU seconds (the job process and
the children it reaped, Prism included) and peak memory; the machine's load and the CPU that
other processes took meanwhile (the machine is shared).

    python benchmarks/stream_bench.py [--rates 50,100,300,1000] [--seconds 60] [--quick]
        [--test-server] [--job-options="--OPTION=VALUE ..."] [--work DIR]

Results: benchmarks/results/stream_bench.json, one entry per kind of sweep (default, quick,
custom; -test-server, -options), others kept; and the latency percentiles against the rate of
the sweep as benchmarks/results/stream_latency.svg (default sweep) or
stream_latency_KIND.svg.
"""
from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import math
import os
import pathlib
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SAMPLES = REPO / "samples"
STREAMS = ("transactions", "metrics")
DEFAULT_RATES = "50,100,300,1000"
QUICK_RATES, QUICK_SECONDS = "37,300", 30
# The memory soak: 300 events/s for 10 minutes; memory after the first SOAK_WARM_UP_SECONDS
# of publishing (caches, the state of every key seen, Prism's buffers) must not keep growing.
# A key's state grows until it holds its bounds: the ids seen within --dedupe_horizon_seconds
# (one day by default: 16 bytes an id encoded, ~140 in Python) and --history_size
# transactions a customer (50). With the defaults and the 4,200 customers of a set this size
# (14 transactions each in the 10 minutes) that takes days, so a soak with them measures the
# state filling, not whether anything else grows. The soak bounds both within its warm-up: a
# 60 s horizon (and allowed lateness, which it may not be below), and SOAK_CUSTOMERS
# customers with as many transactions in all (about 260 each in the 10 minutes: half of them
# hold 50 after 2 minutes, all after 3.5).
SOAK_RATE, SOAK_SECONDS, SOAK_WARM_UP_SECONDS = "300", 600, 240
SOAK_CUSTOMERS = 200
SOAK_JOB_OPTIONS = ["--allowed_lateness_seconds=60", "--dedupe_horizon_seconds=60"]
# The other sweeps' warm-up, for the same memory figures.
WARM_UP_SECONDS = 120
# As tests/test_streaming_pubsub.py: alerts of both kinds within a minute of samples (the
# seasonal detector is silent for its first 300 values per metric), and windows short enough
# to close within the settle time.
SHARED_OPTIONS = ["--runner=DirectRunner", "--anomaly_detector=zscore",
                  "--insight_window_seconds=10"]
STREAMING_OPTIONS = ["--file_window_seconds=10", "--window_grace_seconds=15"]
# Prism's "pipeline is running" reaches the job's log late or never; what does mark the
# readers' start is the traceback each prints for its first bundle (io/pubsub_read.py: Prism
# finalizes the stage that sizes the restriction). Without it, the publishers start after
# READY_FALLBACK_SECONDS. Messages published before a reader starts wait in its subscription.
READY_TEXT = "Error processing instruction"
READY_FALLBACK_SECONDS = 25
READY_PAUSE_SECONDS = 2
# --max_run_seconds counts from the job's submission, a few seconds after its start: room for
# the readers to start (or the fallback) and the publishers' own start-up.
START_SECONDS = 30
SETTLE_SECONDS = 40
# The job cancels itself at --max_run_seconds; Beam then waits up to a minute for it.
EXIT_GRACE_SECONDS = 150
SAMPLE_SECONDS = 0.5
# The Pub/Sub emulator drops a message nobody pulled for 10 minutes (pstest's fixed retention):
# the alerts are pulled every so often while the job runs, or a soak loses its first ones.
PULL_ALERTS_SECONDS = 120
EMULATOR_PORT = 8087
TEST_SERVER_LATENCY_MS = 200
BATCH_TIMEOUT_SECONDS = 3600
# What samples/ was generated with (the generator's defaults but for --metrics-hours).
SAMPLE_CUSTOMERS, SAMPLE_HOURS, SAMPLE_METRICS_HOURS = 200, 48, 3
CANCEL_LINE = "reached: cancelling the job"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _repo_module(relative: str):
    """A helper module of the repository by path: tests/ and benchmarks/ are not installed,
    and this file runs both as a script and as `python -m benchmarks.stream_bench`."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- processes: CPU and memory from /proc ----------------------------------------------------

def _proc_stat(pid: int) -> tuple[int, str, float] | None:
    """(parent pid, command name, CPU seconds) of a live process, None if it is gone."""
    try:
        text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: the fields follow the last ')'
    comm = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), comm, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _memory_kb(pid: int) -> tuple[int, int]:
    """(peak RSS, current RSS) of a process in kB; zeros if it is gone."""
    values = {"VmHWM": 0, "VmRSS": 0}
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in values:
                values[name] = int(value.split()[0])
    except OSError:
        pass
    return values["VmHWM"], values["VmRSS"]


def machine_cpu_seconds(stat_line: str | None = None) -> tuple[float, float]:
    """(busy, stolen): CPU seconds all cores have spent busy since boot, and those the host
    took from this virtual machine (steal), from /proc/stat's first line. Steal is not busy:
    counted as busy, it read as load of other processes; in some runs here it was up to a
    third of the 2 cores, and alert latency on Flink went from 7 s to 43 s (p50) with it."""
    line = stat_line or pathlib.Path("/proc/stat").read_text().split("\n", 1)[0]
    fields = [int(v) for v in line.split()[1:]]
    idle, steal = fields[3] + fields[4], fields[7]  # idle + iowait; steal
    return (sum(fields[:8]) - idle - steal) / CLOCK_TICKS, steal / CLOCK_TICKS


class ProcessSampler:
    """CPU and memory of labelled processes and their descendants, from /proc.

    `roots` maps a pid to a label; every descendant counts under its nearest labelled
    ancestor. A process that has exited keeps the CPU it had at its last sample, so totals
    miss at most SAMPLE_SECONDS of each process's end (wait4 gives the job's exactly)."""

    def __init__(self, roots: dict[int, str]):
        self.roots = dict(roots)
        self._cpu: dict[int, tuple[str, str, float]] = {}  # pid -> (label, name, seconds)
        self._hwm_kb: dict[int, tuple[str, str, int]] = {}
        self.peak_rss_kb: collections.Counter = collections.Counter()  # label -> summed RSS
        self.rss_timeline: list[tuple[float, dict[str, int]]] = []  # (time, label -> kB)

    def sample(self) -> None:
        stats = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                stat = _proc_stat(int(entry))
                if stat:
                    stats[int(entry)] = stat
        rss: collections.Counter = collections.Counter()
        for pid, (_, comm, cpu) in stats.items():
            label = self._label(pid, stats)
            if label is None:
                continue
            self._cpu[pid] = (label, comm, cpu)
            hwm, current = _memory_kb(pid)
            previous = self._hwm_kb.get(pid, (label, comm, 0))[2]
            self._hwm_kb[pid] = (label, comm, max(hwm, previous))
            rss[label] += current
        for label, kb in rss.items():
            self.peak_rss_kb[label] = max(self.peak_rss_kb[label], kb)
        self.rss_timeline.append((time.time(), dict(rss)))

    def _label(self, pid: int, stats: dict) -> str | None:
        while pid not in self.roots:
            if pid not in stats or pid <= 1:
                return None
            pid = stats[pid][0]
        return self.roots[pid]

    def cpu_by_label(self) -> dict[str, float]:
        totals: collections.Counter = collections.Counter()
        for label, _, seconds in self._cpu.values():
            totals[label] += seconds
        return dict(totals)

    def by_name(self, label: str) -> tuple[dict[str, float], dict[str, float]]:
        """CPU seconds and peak RSS (MB) per process name under `label`."""
        cpu: collections.Counter = collections.Counter()
        hwm: dict[str, float] = {}
        for pid, (owner, comm, seconds) in self._cpu.items():
            if owner == label:
                cpu[comm] += seconds
                hwm[comm] = max(hwm.get(comm, 0.0), self._hwm_kb[pid][2] / 1024)
        return ({k: round(v, 1) for k, v in cpu.items()},
                {k: round(v, 1) for k, v in hwm.items()})


def _emulator_pid(port: int) -> int | None:
    """The emulator process serving `port` (scripts/pubsub-emulator.sh starts it detached)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = pathlib.Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"pstest-" in argv[0] and f"127.0.0.1:{port}".encode() in argv:
            return int(entry)
    return None


# --- services ---------------------------------------------------------------------------------

def start_emulator(port: int) -> tuple[str, bool]:
    """PUBSUB_EMULATOR_HOST of the emulator on `port`, and whether we started it."""
    script = ["bash", "scripts/pubsub-emulator.sh"]
    running = subprocess.run([*script, "status", "--port", str(port)], cwd=REPO,
                             capture_output=True).returncode == 0
    started = subprocess.run([*script, "start", "--port", str(port)], cwd=REPO,
                             capture_output=True, text=True, check=True)
    return started.stdout.strip().split("=", 1)[1], not running


def stop_emulator(port: int) -> None:
    subprocess.run(["bash", "scripts/pubsub-emulator.sh", "stop", "--port", str(port)],
                   cwd=REPO, check=True, capture_output=True)


def _exit_on_sigterm(signum, _frame) -> None:
    # Python's default for SIGTERM ends the process at once, skipping the `finally` blocks
    # that stop the job and the emulator the benchmark started (a `kill` of a soak left its
    # emulator running): unwind as an interrupt does instead.
    raise SystemExit(128 + signum)


def prism_path() -> str:
    return subprocess.run(["bash", "scripts/prism.sh", "path"], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout.strip()


def create_channels(run_id: str) -> dict[str, str]:
    """Topics and subscriptions of one rate: NAME_topic and NAME_subscription paths."""
    from realtime_ai.io.pubsub_admin import EMULATOR_PROJECT, ensure_subscription

    paths = {}
    for name in (*STREAMS, "alerts"):
        topic = f"bench-{run_id}-{name}"
        paths[f"{name}_subscription"] = ensure_subscription(EMULATOR_PROJECT, topic,
                                                            f"{topic}-sub")
        paths[f"{name}_topic"] = f"projects/{EMULATOR_PROJECT}/topics/{topic}"
    return paths


def delete_channels(paths: dict[str, str]) -> None:
    from google.api_core.exceptions import NotFound
    from google.cloud import pubsub_v1

    # subscriptions first: deleting a topic leaves its subscriptions (and backlogs) behind
    with pubsub_v1.SubscriberClient() as subscriber:
        for key, path in paths.items():
            if key.endswith("_subscription"):
                try:
                    subscriber.delete_subscription(subscription=path, timeout=30)
                except NotFound:
                    pass
    with pubsub_v1.PublisherClient() as publisher:
        for key, path in paths.items():
            if key.endswith("_topic"):
                try:
                    publisher.delete_topic(topic=path, timeout=30)
                except NotFound:
                    pass


# --- data -------------------------------------------------------------------------------------

def _lines(path: pathlib.Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def source_files(events: int, work: pathlib.Path, customers: int | None = None
                 ) -> tuple[dict[str, pathlib.Path], str]:
    """Files holding at least `events` events in the samples' proportions: samples/ when it
    does (and no number of customers is asked for), else a larger set from the project's
    generator, of `customers` customers if given."""
    samples = {name: SAMPLES / f"{name}.jsonl" for name in STREAMS}
    held = sum(len(_lines(path)) for path in samples.values())
    if events <= held and customers is None:
        return samples, "samples/"
    # The generator's transactions scale with customers times hours, its metrics with metrics
    # hours; 5% spare for the random number of fraud transactions.
    scale = max(1, math.ceil(events / held * 1.05))
    customers = customers or SAMPLE_CUSTOMERS * scale
    hours = math.ceil(SAMPLE_HOURS * SAMPLE_CUSTOMERS * scale / customers)
    folder = work / "generated"
    command = [sys.executable, "-m", "realtime_ai.samples", "generate", "--out", str(folder),
               "--customers", str(customers), "--hours", str(hours),
               "--metrics-hours", str(SAMPLE_METRICS_HOURS * scale)]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    return ({name: folder / f"{name}.jsonl" for name in STREAMS},
            f"generated ({' '.join(command[2:])}): samples/ holds {held} events")


def slice_inputs(sources: dict[str, pathlib.Path], events: int,
                 folder: pathlib.Path) -> dict[str, int]:
    """The first events of each file, `events` in all, in the files' proportions."""
    lines = {name: _lines(path) for name, path in sources.items()}
    total = sum(len(v) for v in lines.values())
    counts = {"transactions": round(events * len(lines["transactions"]) / total)}
    counts["metrics"] = events - counts["transactions"]
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in counts.items():
        if count > len(lines[name]):
            raise SystemExit(f"error: {sources[name]} has {len(lines[name])} events, "
                             f"{count} needed")
        (folder / f"{name}.jsonl").write_text("\n".join(lines[name][:count]) + "\n")
    return counts


# --- one rate ---------------------------------------------------------------------------------

class JobLog:
    """The job's output, each line with when it came (seconds since the epoch), also written
    to a file with the seconds since `started`; `ready` is set once both readers started."""

    def __init__(self, stream, path: pathlib.Path, started: float):
        self.lines: list[tuple[float, str]] = []
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(stream, path, started),
                                        daemon=True)
        self._thread.start()

    def _read(self, stream, path: pathlib.Path, started: float) -> None:
        readers_started = 0
        with open(path, "w") as out:
            for line in stream:
                now = time.time()
                self.lines.append((now, line.rstrip("\n")))
                out.write(f"{now - started:7.1f} {line}")
                out.flush()
                readers_started += READY_TEXT in line
                if readers_started == len(STREAMS):
                    self.ready.set()

    def join(self) -> None:
        self._thread.join(timeout=30)

    def first(self, text: str) -> float | None:
        return next((at for at, line in self.lines if text in line), None)

    def tail(self, count: int = 40) -> list[str]:
        return [line for _, line in self.lines[-count:]]

    def warnings(self) -> dict[str, int]:
        """How often each kind of warning or error was logged (numbers masked, cut short):
        Prism's and the SDK's complaints say where a run went wrong."""
        kinds: collections.Counter = collections.Counter()
        for _, line in self.lines:
            if line.startswith(("WARNING:", "ERROR:")):
                kinds[re.sub(r"\d+", "#", line)[:100]] += 1
        return dict(kinds.most_common())


def _publisher(name: str, path: pathlib.Path, topic: str, rate: float, dump: pathlib.Path,
               env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "realtime_ai.samples", "publish", f"--{name}", str(path),
         f"--{name}-topic", topic, "--rate", f"{rate:.3f}", "--dump", str(dump)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


PUBLISHED = re.compile(r"published (\d+) events in ([\d.]+) s")


def _stop_group(process: subprocess.Popen) -> None:
    """Stops a process started in a session of its own, with whatever it started."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        time.sleep(2)


def run_stream(rate: float, seconds: float, inputs: pathlib.Path, counts: dict[str, int],
               folder: pathlib.Path, env: dict, job_options: list[str],
               warm_up_seconds: float) -> dict:
    """Runs the job for one rate and publishes the inputs to it; what happened, as measured
    (memory growth after the first `warm_up_seconds` of publishing)."""
    run_id = uuid.uuid4().hex[:8]
    channels = create_channels(run_id)
    events = sum(counts.values())
    max_run = START_SECONDS + seconds + SETTLE_SECONDS
    command = [sys.executable, "-m", "realtime_ai.pipelines.main",
               f"--transactions={channels['transactions_subscription']}",
               f"--metrics={channels['metrics_subscription']}",
               f"--alerts_topic={channels['alerts_topic']}", f"--output={folder}/stream",
               f"--max_run_seconds={max_run}", *job_options]
    result: dict = {"rate": rate, "events": events, "events_by_stream": counts,
                    "job_command": command}
    sampler = ProcessSampler({os.getpid(): "benchmark"})
    emulator = _emulator_pid(int(env["PUBSUB_EMULATOR_HOST"].rsplit(":", 1)[1]))
    if emulator:
        sampler.roots[emulator] = "emulator"
    publishers: dict[str, subprocess.Popen] = {}
    pulled: list[dict] = []  # alert messages
    job = log = None
    try:
        started = time.time()
        # A session of its own: Prism, its child, goes with it if anything goes wrong.
        job = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
        sampler.roots[job.pid] = "job"
        log = JobLog(job.stdout, folder / "job.log", started)
        usage = None
        while not log.ready.wait(SAMPLE_SECONDS):
            sampler.sample()
            if job.poll() is not None:
                raise RuntimeError("the job ended before its readers started")
            if time.time() - started > READY_FALLBACK_SECONDS:
                result["readers_started_unseen"] = True
                break
        result["job_ready_after_s"] = round(time.time() - started, 1)
        time.sleep(READY_PAUSE_SECONDS)
        marks = {"publish_start": (time.time(), machine_cpu_seconds(), os.getloadavg())}
        for name in STREAMS:
            publishers[name] = _publisher(name, inputs / f"{name}.jsonl",
                                          channels[f"{name}_topic"],
                                          rate * counts[name] / events, folder / "published",
                                          env)
            sampler.roots[publishers[name].pid] = "publishers"
        sampler.sample()
        cpu_at_start = sampler.cpu_by_label()
        published = {}
        deadline = started + max_run + EXIT_GRACE_SECONDS
        pulled_at = time.time()
        while usage is None:
            time.sleep(SAMPLE_SECONDS)
            sampler.sample()
            if time.time() - pulled_at > PULL_ALERTS_SECONDS:
                pulled += pull_alerts(channels["alerts_subscription"])
                pulled_at = time.time()
            for name, publisher in publishers.items():
                if name not in published and publisher.poll() is not None:
                    published[name] = publisher.communicate()[0]
                    if len(published) == len(publishers):
                        marks["publish_end"] = (time.time(), machine_cpu_seconds(),
                                                os.getloadavg())
                        cpu_at_end = sampler.cpu_by_label()
            # wait4, not wait: the CPU of the job and of the children it reaped (Prism)
            pid, status, rusage = os.wait4(job.pid, os.WNOHANG)
            if pid:
                job.returncode = os.waitstatus_to_exitcode(status)
                usage = rusage
            elif time.time() > deadline:
                raise RuntimeError(f"the job did not end within {max_run + EXIT_GRACE_SECONDS} s")
        ended = time.time()
    except RuntimeError as error:
        result["error"] = str(error)
        return result
    finally:
        for publisher in publishers.values():
            if publisher.poll() is None:
                publisher.kill()
                publisher.wait()
        if job is not None:
            _stop_group(job)  # also a Prism left behind by a job that ended
            job.wait()
            log.join()  # its output ends once no process holds the pipe
            if "error" in result or job.returncode != 0:
                result["job_log_tail"] = log.tail()
        try:
            if job:
                pulled += pull_alerts(channels["alerts_subscription"])
        finally:
            delete_channels(channels)

    result["job_exit_code"] = job.returncode
    result["job_warnings"] = log.warnings()
    result["publishers"] = {name: output.strip().splitlines()[-1:] for name, output in
                            published.items()}
    durations = [float(m[2]) for m in (PUBLISHED.search(out) for out in published.values()) if m]
    sent = sum(int(m[1]) for m in (PUBLISHED.search(out) for out in published.values()) if m)
    result["published"] = sent
    result["publish_seconds"] = round(max(durations), 1) if durations else None
    result["achieved_rate"] = round(sent / max(durations), 1) if durations else None
    if "publish_end" in marks:
        result["load"] = _load_figures(marks, cpu_at_start, cpu_at_end)
    publish_end = marks.get("publish_end", (ended,))[0]
    cancel = log.first(CANCEL_LINE)
    result["settle_available_s"] = round(cancel - publish_end, 1) if cancel else None
    result["job_wall_s"] = round(ended - started, 1)
    cpu = usage.ru_utime + usage.ru_stime
    result["job_cpu_s"] = round(cpu, 1)
    result["job_cpu_cores"] = round(cpu / (ended - started), 2)
    result["job_cpu_s_by_process"], result["job_peak_rss_mb_by_process"] = sampler.by_name(
        "job")
    result["job_peak_rss_mb"] = round(sampler.peak_rss_kb["job"] / 1024, 1)
    result["job_memory"] = memory_growth(sampler.rss_timeline, marks["publish_start"][0],
                                         marks.get("publish_end", (ended,))[0], warm_up_seconds)
    result["alert_messages"] = pulled
    result["publish_end_epoch"] = publish_end
    return result


def memory_growth(timeline: list[tuple[float, dict[str, int]]], publish_start: float,
                  publish_end: float, warm_up_seconds: float) -> dict:
    """The job's memory (its processes' summed RSS) while events were published: the peak in
    the warm-up (the first `warm_up_seconds` of publishing), the peak after it, and the
    least-squares slope after it and over the second half of publishing. A job whose state or
    buffers leak grows steadily to the end; one whose keys' state has reached its bounds (see
    SOAK_JOB_OPTIONS) levels off, which the second half's slope tells apart."""
    samples = [(t - publish_start, rss.get("job", 0) / 1024) for t, rss in timeline
               if publish_start <= t <= publish_end]
    warm = [mb for t, mb in samples if t <= warm_up_seconds]
    after = [(t, mb) for t, mb in samples if t > warm_up_seconds]
    figures: dict = {"warm_up_s": warm_up_seconds,
                     "warm_up_peak_mb": round(max(warm), 1) if warm else None,
                     "rss_mb_every_30s": [round(mb, 1) for mb in _every(samples, 30)]}
    second_half = [(t, mb) for t, mb in samples if t >= (publish_end - publish_start) / 2]
    if len(after) >= 2 and len(second_half) >= 2:
        figures.update({
            "after_warm_up_peak_mb": round(max(mb for _, mb in after), 1),
            "after_warm_up_slope_mb_per_min": round(_slope(after) * 60, 2),
            "second_half_slope_mb_per_min": round(_slope(second_half) * 60, 2),
            "after_warm_up_first_minute_mean_mb": round(
                _mean([mb for t, mb in after if t <= warm_up_seconds + 60]), 1),
            "after_warm_up_last_minute_mean_mb": round(
                _mean([mb for t, mb in after if t >= after[-1][0] - 60]), 1),
        })
    return figures


def _slope(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, value) samples, per second."""
    mean_t = sum(t for t, _ in samples) / len(samples)
    mean_value = sum(value for _, value in samples) / len(samples)
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    return sum((t - mean_t) * (value - mean_value) for t, value in samples) / spread


def _every(samples: list[tuple[float, float]], seconds: float) -> list[float]:
    """The first value of each `seconds`-long stretch."""
    firsts: dict[int, float] = {}
    for t, value in samples:
        firsts.setdefault(int(t // seconds), value)
    return [firsts[k] for k in sorted(firsts)]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _load_figures(marks: dict, cpu_start: dict[str, float], cpu_end: dict[str, float]) -> dict:
    """The machine's load while publishing, and how much of it was not ours."""
    (t0, (busy0, stolen0), load0) = marks["publish_start"]
    (t1, (busy1, stolen1), load1) = marks["publish_end"]
    span = t1 - t0
    ours = {label: round((cpu_end.get(label, 0.0) - cpu_start.get(label, 0.0)) / span, 2)
            for label in cpu_end}
    machine = (busy1 - busy0) / span
    return {
        "loadavg_at_publish_start": [round(v, 2) for v in load0],
        "loadavg_at_publish_end": [round(v, 2) for v in load1],
        "machine_busy_cores": round(machine, 2),
        "our_cores": ours,
        "other_processes_cores": round(machine - sum(ours.values()), 2),
        "stolen_by_host_cores": round((stolen1 - stolen0) / span, 2),
    }


def pull_alerts(subscription: str) -> list[dict]:
    from google.cloud import pubsub_v1

    pull_all = _repo_module("tests/pubsub_helpers.py").pull_all
    with pubsub_v1.SubscriberClient() as subscriber:
        messages = pull_all(subscriber, subscription)
    return [{"alert_id": m.attributes["alert_id"], "kind": m.attributes["kind"],
             "publish_time": m.publish_time.timestamp(),
             "event_time": json.loads(m.data)["event_time"]} for m in messages]


# --- checks against batch ---------------------------------------------------------------------

def run_batch(folder: pathlib.Path, env: dict, shared_options: list[str]) -> str | None:
    """The batch run over the events as published; its log tail if it failed."""
    command = [sys.executable, "-m", "realtime_ai.pipelines.main",
               f"--transactions={folder}/published/transactions.jsonl",
               f"--metrics={folder}/published/metrics.jsonl", f"--output={folder}/batch",
               *shared_options]
    try:
        with open(folder / "batch.log", "w") as log:
            done = subprocess.run(command, cwd=REPO, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, timeout=BATCH_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        return f"no end within {BATCH_TIMEOUT_SECONDS} s"
    if done.returncode != 0:
        return (folder / "batch.log").read_text()[-3000:]
    return None


def _data_files(folder: pathlib.Path) -> list[pathlib.Path]:
    """A dataset's Parquet files as readers see them: not the hidden one a write in progress
    leaves behind when the job is stopped (io/parquet.py)."""
    return [path for path in folder.rglob("*.parquet") if not path.name.startswith((".", "_"))]


def _table(path: pathlib.Path):
    import pyarrow.parquet as pq

    return pq.read_table(path) if _data_files(path) else None


def compare_outputs(folder: pathlib.Path, publish_end: float) -> dict:
    """Per dataset: SAME or DIFFERENT from the batch run, with row counts; the stream's late
    dead letters; when the stream's files were written."""
    from realtime_ai.core.records import OUTPUT_SCHEMAS

    comparable_rows = _repo_module("tests/compare.py").comparable_rows
    datasets = {}
    for name in OUTPUT_SCHEMAS:
        stream, batch = _table(folder / "stream" / name), _table(folder / "batch" / name)
        stream_rows = comparable_rows(stream) if stream is not None else []
        batch_rows = comparable_rows(batch) if batch is not None else []
        keys = [collections.Counter(json.dumps(row, sort_keys=True, default=str) for row in rows)
                for rows in (stream_rows, batch_rows)]
        datasets[name] = {"verdict": "SAME" if stream_rows == batch_rows else "DIFFERENT",
                          "stream_rows": len(stream_rows), "batch_rows": len(batch_rows),
                          "only_in_stream": sum((keys[0] - keys[1]).values()),
                          "only_in_batch": sum((keys[1] - keys[0]).values())}
    transactions = _table(folder / "stream" / "transactions")
    ids = transactions.column("transaction_id").to_pylist() if transactions is not None else []
    dead = _table(folder / "stream" / "dead_letter")
    late = sum(1 for error in (dead.column("error").to_pylist() if dead is not None else [])
               if error.startswith("late"))
    return {"datasets": datasets, "late_dead_letters": late,
            "transaction_rows_repeated": len(ids) - len(set(ids)),
            "files": _file_delays(folder / "stream", publish_end)}


def _file_delays(stream: pathlib.Path, publish_end: float) -> dict:
    """How long after its window's end each transactions/metrics file was written (the
    design is --window_grace_seconds plus the watermark's lag), and the last file's time."""
    delays, late_panes, last = [], 0, None
    for name in STREAMS:
        for path in _data_files(stream / name):
            window, pane = path.name.removesuffix(".parquet").split("-pane-")
            end = datetime.strptime(window.split("-")[1], "%Y%m%dT%H%M%S").replace(
                tzinfo=timezone.utc).timestamp()
            written = path.stat().st_mtime
            last = max(last or written, written)
            if pane == "0":
                delays.append(written - end)
            else:
                late_panes += 1
    delays.sort()
    return {
        "files": len(delays) + late_panes,
        "late_panes": late_panes,
        "window_end_to_file_s_p50": round(delays[len(delays) // 2], 1) if delays else None,
        "window_end_to_file_s_max": round(delays[-1], 1) if delays else None,
        "last_file_after_publish_end_s": round(last - publish_end, 1) if last else None,
    }


def alert_figures(messages: list[dict], folder: pathlib.Path, percentile) -> dict:
    """Published alert ids against the batch run's, and event-to-alert latency per alert id
    (its first message: delivery is at least once)."""
    first: dict[str, dict] = {}
    for message in messages:
        known = first.get(message["alert_id"])
        if known is None or message["publish_time"] < known["publish_time"]:
            first[message["alert_id"]] = message
    batch = _table(folder / "batch" / "alerts")
    batch_ids = set(batch.column("alert_id").to_pylist()) if batch is not None else set()
    figures = {"messages": len(messages), "published_ids": len(first),
               "batch_ids": len(batch_ids), "ids_equal_batch": set(first) == batch_ids,
               "missing_ids": len(batch_ids - set(first)),
               "extra_ids": len(set(first) - batch_ids),
               # which ones, to look them up in the outputs
               "missing_id_sample": sorted(batch_ids - set(first))[:20]}
    latencies = collections.defaultdict(list)
    for message in first.values():
        event_time = datetime.fromisoformat(message["event_time"].replace("Z", "+00:00"))
        latency_ms = (message["publish_time"] - event_time.timestamp()) * 1000
        latencies["all"].append(latency_ms)
        latencies[message["kind"]].append(latency_ms)
    for kind, values in latencies.items():
        figures[f"latency_ms_{kind}"] = {
            "count": len(values), **{f"p{p}": percentile(values, p) for p in (50, 95, 99)},
            "max": round(max(values), 1)}
    return figures


# --- the plot ---------------------------------------------------------------------------------

def svg_latency_by_rate(runs: list[dict], title: str, path: pathlib.Path) -> None:
    """p50, p95 and p99 of event-to-alert latency against the rate published, both axes log
    scaled (latencies span seconds to minutes), as a standalone SVG. llm_throughput.py's
    svg_cdf draws CDFs only, under its own title: not this plot."""
    points = [(run["achieved_rate"] or run["rate"], run["alerts"]["latency_ms_all"])
              for run in runs if "latency_ms_all" in run.get("alerts", {})]
    width, height, pad = 640, 360, 55
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             'font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{pad}" y="20">{title}</text>']
    parts += (_latency_lines(points, width, height, pad) if points
              else [f'<text x="{pad}" y="{height // 2}">no alerts were published</text>'])
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


def _latency_lines(points: list[tuple[float, dict]], width: int, height: int,
                   pad: int) -> list[str]:
    """Grid, axes and one line per percentile, for svg_latency_by_rate."""
    parts = []
    rates = [rate for rate, _ in points]
    seconds = [latency[key] / 1000 for _, latency in points for key in ("p50", "p95", "p99")]
    x_low, x_high = math.log10(min(rates) / 1.3), math.log10(max(rates) * 1.3)
    y_low, y_high = math.log10(min(seconds) / 1.5), math.log10(max(seconds) * 1.5)

    def x(rate: float) -> float:
        return pad + (math.log10(rate) - x_low) / (x_high - x_low) * (width - 2 * pad)

    def y(value: float) -> float:
        return height - pad - (math.log10(value) - y_low) / (y_high - y_low) * (height - 2 * pad)

    for decade in range(math.floor(y_low), math.ceil(y_high) + 1):
        for step in (1, 2, 5):
            tick = step * 10.0 ** decade
            if y_low <= math.log10(tick) <= y_high:
                parts.append(f'<line x1="{pad}" y1="{y(tick):.1f}" x2="{width - pad}" '
                             f'y2="{y(tick):.1f}" stroke="#ddd"/>'
                             f'<text x="{pad - 8}" y="{y(tick) + 4:.1f}" '
                             f'text-anchor="end">{tick:g}</text>')
    parts += [f'<text x="{x(rate):.1f}" y="{height - pad + 16}" text-anchor="middle">'
              f'{rate:g}</text>' for rate in rates]
    parts.append(f'<text x="{width / 2}" y="{height - 12}" text-anchor="middle">'
                 'events per second published (log scale)</text>'
                 f'<text x="14" y="{height / 2}" transform="rotate(-90 14 {height / 2})" '
                 'text-anchor="middle">event to alert on Pub/Sub, s (log scale)</text>')
    for i, (key, colour) in enumerate((("p50", "#1f77b4"), ("p95", "#ff7f0e"),
                                       ("p99", "#d62728"))):
        line = " ".join(f"{x(rate):.1f},{y(latency[key] / 1000):.1f}"
                        for rate, latency in points)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                     f'points="{line}"/>')
        parts += [f'<circle cx="{x(rate):.1f}" cy="{y(latency[key] / 1000):.1f}" r="3" '
                  f'fill="{colour}"/>' for rate, latency in points]
        parts.append(f'<text x="{pad + 10}" y="{pad + 15 * i}" fill="{colour}">{key}</text>')
    return parts


# --- the sweep --------------------------------------------------------------------------------

def latency_seconds_text(latency: dict | None) -> str:
    """p50/p95/p99/max of a latency in ms (alert_figures), as seconds, or - without any."""
    if not latency:
        return "-"
    return "/".join(f"{latency[k] / 1000:.1f}" for k in ("p50", "p95", "p99", "max"))


def _row(run: dict) -> str:
    if "error" in run:
        return f"{run['rate']:>6g}  ERROR: {run['error']}"
    datasets = run["outputs"]["datasets"]
    written = datasets["transactions"]["stream_rows"] + datasets["metrics"]["stream_rows"]
    verdicts = " ".join(f"{name[:2]}={'S' if d['verdict'] == 'SAME' else 'D'}"
                        for name, d in datasets.items())
    latency_text = latency_seconds_text(run["alerts"].get("latency_ms_all"))
    load = run.get("load", {})
    return (f"{run['rate']:>6g} {run['published']:>7} {run['achieved_rate'] or 0:>8.1f} "
            f"{written:>7}/{run['published']:<7} {run['outputs']['late_dead_letters']:>5} "
            f"{run['outputs']['transaction_rows_repeated']:>4} "
            f"{verdicts}  ids={'=' if run['alerts']['ids_equal_batch'] else '!'}"
            f"{run['alerts']['published_ids']:<5} {latency_text:>22} "
            f"{run['job_cpu_s']:>6.1f} {run['job_peak_rss_mb']:>6.0f} "
            f"{load.get('loadavg_at_publish_end', ['-'])[0]:>5} "
            f"{load.get('other_processes_cores', '-'):>5} "
            f"{load.get('stolen_by_host_cores', '-'):>6}")


def code_version() -> dict:
    """The commit measured, and the files that differed from it: the project changes under
    a benchmark that runs for a quarter of an hour."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True,
                              text=True).stdout

    return {"commit": git("rev-parse", "--short", "HEAD").strip(),
            "changed_files": git("status", "--porcelain", "--untracked-files=no").splitlines()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default=None,
                        help=f"total events per second, comma-separated (default {DEFAULT_RATES})")
    parser.add_argument("--seconds", type=float, default=None,
                        help="publishing time per rate (default 60)")
    parser.add_argument("--quick", action="store_true",
                        help=f"rates {QUICK_RATES} for {QUICK_SECONDS} s each")
    parser.add_argument("--soak", action="store_true",
                        help=f"the memory soak: {SOAK_RATE} events/s for {SOAK_SECONDS} s, memory "
                             f"growth after a {SOAK_WARM_UP_SECONDS} s warm-up, with each key's "
                             f"state bounded within it ({' '.join(SOAK_JOB_OPTIONS)}, "
                             f"{SOAK_CUSTOMERS} customers)")
    parser.add_argument("--test-server", action="store_true",
                        help="our OpenAI-compatible server at "
                             f"{TEST_SERVER_LATENCY_MS} ms a call instead of the local model")
    parser.add_argument("--job-options", default="",
                        help="more options of the main command, for the streaming and the "
                             "batch runs alike, e.g. --job-options=\"--dedupe_horizon_seconds=10 "
                             "--allowed_lateness_seconds=10\"")
    parser.add_argument("--emulator-port", type=int, default=EMULATOR_PORT,
                        help=f"port of the Pub/Sub emulator (default {EMULATOR_PORT})")
    parser.add_argument("--work", type=pathlib.Path, default=None,
                        help="folder for inputs, outputs and logs (default: a new temporary "
                             "one, kept)")
    args = parser.parse_args()
    rates = [float(r) for r in (args.rates or (QUICK_RATES if args.quick else SOAK_RATE
                                               if args.soak else DEFAULT_RATES)).split(",")]
    seconds = args.seconds or (QUICK_SECONDS if args.quick else SOAK_SECONDS if args.soak
                               else 60.0)
    # The soak's bounds come first, so that --job-options may override them.
    job_options = [*(SOAK_JOB_OPTIONS if args.soak else []), *shlex.split(args.job_options)]
    warm_up = SOAK_WARM_UP_SECONDS if args.soak else WARM_UP_SECONDS
    named = "quick" if args.quick else "soak" if args.soak else "default"
    sweep = ("custom" if args.rates else named) + ("-test-server" if args.test_server else "") + (
        "-options" if args.job_options else "")
    code_at_start = code_version()
    work = args.work or pathlib.Path(tempfile.mkdtemp(prefix="stream-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder: {work}", flush=True)
    llm_throughput = _repo_module("benchmarks/llm_throughput.py")

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    host, started_emulator = start_emulator(args.emulator_port)
    # The local model unless --test-server: no key is inherited, none is needed for our server.
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["PUBSUB_EMULATOR_HOST"] = os.environ["PUBSUB_EMULATOR_HOST"] = host
    runs = []
    try:
        prism = prism_path()
        sources, source = source_files(round(max(rates) * seconds), work,
                                       SOAK_CUSTOMERS if args.soak else None)
        for rate in rates:
            folder = work / f"rate-{rate:g}"
            counts = slice_inputs(sources, round(rate * seconds), folder / "in")
            server = llm_throughput.Server("--latency_ms", str(TEST_SERVER_LATENCY_MS)) if (
                args.test_server) else None
            try:
                llm = [f"--llm_base_url={server.base_url}"] if server else []
                shared = [*SHARED_OPTIONS, *job_options, *llm]
                print(f"rate {rate:g}/s: {sum(counts.values())} events {counts}, "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)
                run = run_stream(rate, seconds, folder / "in", counts, folder, env,
                                 [*shared, *STREAMING_OPTIONS, f"--prism_location={prism}"],
                                 warm_up)
                if "error" not in run:
                    if server:
                        run["llm_requests_stream"] = server.stats()["requests"]
                    batch_failure = run_batch(folder, env, shared)
                    if batch_failure:
                        run["error"] = "the batch run failed"
                        run["batch_log_tail"] = batch_failure
                    else:
                        run["outputs"] = compare_outputs(folder, run.pop("publish_end_epoch"))
                        run["alerts"] = alert_figures(run.pop("alert_messages"), folder,
                                                      llm_throughput.percentile)
            finally:
                if server:
                    server.stop()
            run.pop("alert_messages", None)
            run.pop("publish_end_epoch", None)
            runs.append(run)
            print(json.dumps(run, indent=2, default=str), flush=True)
    finally:
        if started_emulator:
            stop_emulator(args.emulator_port)

    result = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), "cores": os.cpu_count(),
        "code_at_start": code_at_start, "code_at_end": code_version(),
        "seconds_per_rate": seconds, "settle_seconds": SETTLE_SECONDS, "source": source,
        "model": (f"test server, {TEST_SERVER_LATENCY_MS} ms a call" if args.test_server
                  else "local model"),
        "shared_options": [*SHARED_OPTIONS, *job_options],
        "streaming_options": STREAMING_OPTIONS,
        "work": str(work), "runs": runs,
    }
    results_file = RESULTS / "stream_bench.json"
    saved = json.loads(results_file.read_text()) if results_file.exists() else {}
    saved[sweep] = result
    RESULTS.mkdir(exist_ok=True)
    results_file.write_text(json.dumps(saved, indent=2) + "\n")
    svg_latency_by_rate([run for run in runs if "error" not in run],
                        f"Event to alert latency, {sweep} sweep ({result['model']})",
                        RESULTS / ("stream_latency.svg" if sweep == "default"
                                   else f"stream_latency_{sweep}.svg"))
    print("  rate    sent  rate/s   rows/sent    late  rep  datasets (S=same as batch)"
          "         alert ids  p50/p95/p99/max s  cpu_s rss_mb  load other stolen")
    for run in runs:
        print(_row(run))
    for run in runs:
        memory = run.get("job_memory", {})
        if "after_warm_up_slope_mb_per_min" in memory:
            print(f"{run['rate']:>6g}/s memory: {memory['warm_up_peak_mb']} MB peak in the first "
                  f"{memory['warm_up_s']} s, {memory['after_warm_up_peak_mb']} MB peak after; "
                  f"{memory['after_warm_up_slope_mb_per_min']:+} MB/min after warm-up, "
                  f"{memory['second_half_slope_mb_per_min']:+} MB/min in the second half "
                  f"(first/last minute means {memory['after_warm_up_first_minute_mean_mb']}/"
                  f"{memory['after_warm_up_last_minute_mean_mb']} MB)")


if __name__ == "__main__":
    main()
