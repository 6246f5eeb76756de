#!/usr/bin/env bash
# A real Flink 1.19 session cluster on loopback, for --runner=FlinkRunner:
#   scripts/flink-cluster.sh start|stop|status [--port 8081]
# `start` assembles (once, cached under ~/.cache/realtime-ai) FLINK_HOME from PyPI's apache-flink
# wheel (bin/, conf/) and apache-flink-libraries sdist (lib/, opt/, plugins/), and the Beam 2.62
# Flink 1.19 job server from Maven Central (scripts/jobserver/pom.xml) with a small launcher jar;
# then starts a JobManager and a TaskManager (REST on 127.0.0.1:PORT) and the Beam Python worker
# pool on 127.0.0.1:50000 (the EXTERNAL environment of realtime_ai.pipelines.flink_defaults).
# It prints FLINK_MASTER=..., FLINK_JOB_SERVER_JAR=... on stdout, diagnostics on stderr.
# The wheel and sdist are only unpacked, never pip-installed: they pin an older Beam.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
parse_service_args 8081 "$@"

FLINK_VERSION=1.19.3
WORKER_POOL_PORT=50000
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY="${REPO}/.venv/bin/python"
FLINK_HOME="${CACHE_DIR}/flink-${FLINK_VERSION}"
FLINK_RUN="${RUN_DIR}/flink"
POOL_PID="${FLINK_RUN}/worker-pool.pid"
POOL_PROGRAM=apache_beam.runners.worker.worker_pool_main
export FLINK_HOME FLINK_CONF_DIR="${FLINK_HOME}/conf"

[ -x "$PY" ] || die "no ${PY}: run 'make venv' first"
# The jars' paths are defined once, in Python, where the pipeline reads them.
read -r JOB_SERVER_JAR EXPANSION_SERVICE_JAR RUNNER_JAR \
  < <(PYTHONPATH="$REPO" "$PY" -m realtime_ai.pipelines.flink_defaults)
JOB_SERVER_DIR=$(dirname "$JOB_SERVER_JAR")

assemble_flink_home() {
  [ -d "$FLINK_HOME" ] && return
  echo "assembling ${FLINK_HOME} from PyPI (~230 MB, once)" >&2
  local downloads="${CACHE_DIR}/downloads" staging="${FLINK_HOME}.partial"
  mkdir -p "$downloads"
  "$PY" -m pip download -q --no-deps --no-cache-dir --dest "$downloads" \
    "apache-flink==${FLINK_VERSION}" "apache-flink-libraries==${FLINK_VERSION}" >&2
  rm -rf "$staging" && mkdir -p "$staging/wheel" "$staging/log"
  "$PY" -m zipfile -e "$downloads"/apache_flink-"${FLINK_VERSION}"-*.whl "$staging/wheel"
  mv "$staging/wheel/pyflink/bin" "$staging/wheel/pyflink/conf" "$staging/"
  rm -rf "$staging/wheel"
  tar -xzf "$downloads/apache-flink-libraries-${FLINK_VERSION}.tar.gz" -C "$staging" \
    --strip-components=2 --wildcards '*/deps/lib' '*/deps/opt' '*/deps/plugins' \
    '*/deps/bin/bash-java-utils.jar'
  chmod +x "$staging"/bin/*
  mv "$staging/conf/config.yaml" "$staging/conf/config.shipped.yaml"
  mv "$staging" "$FLINK_HOME"
}

# The job server's jars come from Maven Central (assembled again when the pom changes); launcher
# jars name them in their manifests (relative Class-Path, lines of at most 72 bytes) so that
# `java -jar` runs FlinkJobServerDriver, or the expansion service that serves KafkaIO.
assemble_job_server() {
  local pom="${REPO}/scripts/jobserver/pom.xml"
  [ -f "$JOB_SERVER_JAR" ] && cmp -s "$pom" "${JOB_SERVER_DIR}/pom.xml" && return
  echo "assembling the Beam Flink job server in ${JOB_SERVER_DIR} (~160 MB, once)" >&2
  local staging="${JOB_SERVER_DIR}.partial"
  rm -rf "$staging" && mkdir -p "$staging"
  mvn -q -B -f "$pom" -Dmaven.repo.local="${CACHE_DIR}/m2" \
    dependency:copy-dependencies -DoutputDirectory="$staging/lib" \
    > "${RUN_DIR}/mvn-jobserver.log" 2>&1 || die "mvn failed: see ${RUN_DIR}/mvn-jobserver.log"
  fix_runner "$staging" > "${RUN_DIR}/flink-runner-fix.log" 2>&1 \
    || die "fixing Beam's Flink runner failed: see ${RUN_DIR}/flink-runner-fix.log"
  launcher_jar "$staging" org.apache.beam.runners.flink.FlinkJobServerDriver \
    "$(basename "$JOB_SERVER_JAR")"
  launcher_jar "$staging" org.apache.beam.sdk.expansion.service.ExpansionService \
    "$(basename "$EXPANSION_SERVICE_JAR")"
  cp "$pom" "$staging/pom.xml"
  rm -rf "$JOB_SERVER_DIR" && mv "$staging" "$JOB_SERVER_DIR"
}

# Two fixes to Beam's Flink runner 2.62, compiled into the job server's copy of its jar (which
# the job server stages with every job, so the TaskManager runs them too). A stage passes its
# watermark downstream only while no bundle is open (DoFnOperator.maybeEmitWatermark), and under
# a steady stream one nearly always is; the runner means to pass it on between bundles, but:
# - ExecutableStageDoFnOperator.finishBundleCallback, when the bundle just finished set a timer
#   that is already due, defers the watermark to a processing-time callback, which runs after
#   the next element has opened a new bundle;
# - DoFnOperator.processInputWatermark fires the timers a new watermark makes due, which opens a
#   bundle, before it passes the watermark on.
# The per-customer ordering step sets such timers all the time: at 330 events/s its output
# watermark stood still for up to 38-64 s while its input's trailed the clock by 4-5 s, and every
# step and window after it waited (benchmarks/flink_latency.py). Fixed: a finished bundle, and
# a new watermark before its timers fire, pass the watermark on at once, as far as the pending
# timers' holds allow (a timer holds the watermark at its output time until it fires, so
# nothing it outputs can be late); the timers then fire as before.
RUNNER_SOURCES=org.apache.beam:beam-runners-flink-1.19:2.62.0:jar:sources
# Compile-only: the annotations the runner's sources name (class-file retention, not run).
ANNOTATIONS=com.github.spotbugs:spotbugs-annotations:4.8.6
OPERATORS=org/apache/beam/runners/flink/translation/wrappers/streaming
finished_line='    minEventTimeTimerTimestampInLastBundle = minEventTimeTimerTimestampInCurrentBundle;'
finished_before='  private void finishBundleCallback() {'
finished_fix='    updateOutputWatermark(); // realtime-ai: before anything opens the next bundle'
watermark_line='    long inputWatermarkHold = applyInputWatermarkHold(getEffectiveInputWatermark());'
watermark_before='  private void processInputWatermark(boolean advanceInputWatermark) throws Exception {'
watermark_fix='    // realtime-ai: pass the watermark on before the timers it makes due open a bundle
    maybeEmitWatermark(
        applyOutputWatermarkHold(
            currentOutputWatermark, computeOutputWatermark(inputWatermarkHold)));'

# Each step ends the function on failure: called in an `||` list, it runs without `set -e`.
fix_runner() {  # fix_runner STAGING: the fixes into RUNNER_JAR's copy in STAGING/lib
  local work="$1/runner-fix" artifact
  for artifact in "$RUNNER_SOURCES" "$ANNOTATIONS"; do
    mvn -q -B -f "${REPO}/scripts/jobserver/pom.xml" -Dmaven.repo.local="${CACHE_DIR}/m2" \
      dependency:copy -Dartifact="$artifact" -DoutputDirectory="$work" || return 1
  done
  (cd "$work" && jar xf ./*-sources.jar "${OPERATORS}/ExecutableStageDoFnOperator.java" \
    "${OPERATORS}/DoFnOperator.java") || return 1
  add_after "${work}/${OPERATORS}/ExecutableStageDoFnOperator.java" \
    "$finished_line" "$finished_before" "$finished_fix" || return 1
  add_after "${work}/${OPERATORS}/DoFnOperator.java" \
    "$watermark_line" "$watermark_before" "$watermark_fix" || return 1
  javac -nowarn -proc:none --release 11 -cp "$1/lib/*:${work}/*" -d "${work}/classes" \
    "${work}/${OPERATORS}/ExecutableStageDoFnOperator.java" \
    "${work}/${OPERATORS}/DoFnOperator.java" || return 1
  jar --update --file "$1/lib/$(basename "$RUNNER_JAR")" -C "${work}/classes" . || return 1
  rm -rf "$work"
}

# launcher_jar DIR MAIN_CLASS NAME: DIR/NAME runs MAIN_CLASS with DIR/lib/*.jar.
launcher_jar() {
  {
    echo "Main-Class: $2"
    (cd "$1" && printf 'Class-Path:' && printf ' %s' lib/*.jar) \
      | fold -b -w 71 | sed '2,$s/^/ /'
    echo
  } > "$1/MANIFEST.MF"
  (cd "$1" && jar --create --file "$3" --manifest MANIFEST.MF)
  rm "$1/MANIFEST.MF"
}

# Each job loads Beam, KafkaIO and the job's generated classes afresh in a class loader of its
# own, and the JVM's optimizing (C2) compiler then took more of the TaskManager's CPU than the
# job itself for minutes (0.27 of 0.44 cores while a 330 events/s job streamed): on two cores
# shared with the Python workers, events waited for it. The quick (C1) compiler alone is
# enough for what the TaskManager runs of a Python pipeline.
TASKMANAGER_JAVA_OPTS="${REALTIME_AI_TASKMANAGER_JAVA_OPTS:--XX:TieredStopAtLevel=1}"
# The JobManager too: with C2 it spent 11 s compiling during a 330 events/s benchmark job on a
# cluster that had run three before (jstat -compiler), 4-6 s with C1. With the broker's compiler
# also C1 only (scripts/kafka.sh), that benchmark's first job on a fresh cluster had payment
# alerts p99 4.3, 3.9, 7.2, 3.8 and 4.3 s in five runs (10.7 s before) while its JVMs warmed up.
JOBMANAGER_JAVA_OPTS="${REALTIME_AI_JOBMANAGER_JAVA_OPTS:--XX:TieredStopAtLevel=1}"

# Written on every start, so the settings here are the ones in force.
write_config() {
  local java_opts
  java_opts=$(sed -n 's/^ *all: //p' "${FLINK_CONF_DIR}/config.shipped.yaml")
  mkdir -p "${FLINK_RUN}/log" "${FLINK_RUN}/checkpoints" "${FLINK_RUN}/savepoints"
  cat > "${FLINK_CONF_DIR}/config.yaml" <<EOF
env.java.opts.all: ${java_opts}
env.java.opts.taskmanager: ${TASKMANAGER_JAVA_OPTS}
env.java.opts.jobmanager: ${JOBMANAGER_JAVA_OPTS}
env.log.dir: ${FLINK_RUN}/log
env.pid.dir: ${FLINK_RUN}
jobmanager.rpc.address: 127.0.0.1
jobmanager.bind-host: 127.0.0.1
jobmanager.rpc.port: 6123
jobmanager.memory.process.size: 1024m
jobmanager.execution.failover-strategy: region
taskmanager.host: 127.0.0.1
taskmanager.bind-host: 127.0.0.1
# Two cores: a few slots so that a job and a test job fit; Beam keeps --sdk_worker_parallelism
# Python workers per TaskManager and job (2, realtime_ai/pipelines/flink_defaults.py), whatever
# the slots. Beam uses no managed memory (no RocksDB).
taskmanager.numberOfTaskSlots: 4
taskmanager.memory.process.size: 2816m
# Each Kafka job runs Beam's Java KafkaIO embedded in the TaskManager, in a class loader of its
# own, and leaks about 50 MB of it: with the default 256 MB of metaspace the TaskManager died
# (metaspace OutOfMemoryError) after seven jobs, with 512 MB after ten (a benchmark session);
# restart the cluster between long series. The process size above grew by what this adds.
taskmanager.memory.jvm-metaspace.size: 1024m
taskmanager.memory.managed.fraction: 0.1
# The realtime-ai pipeline has a few dozen shuffles, all running at once in a batch job; with
# Flink's defaults (about 128 MB of network memory, 512 buffers per sort-shuffle partition)
# the job fails for want of network buffers.
taskmanager.memory.network.min: 384m
taskmanager.memory.network.max: 384m
taskmanager.network.sort-shuffle.min-buffers: 64
parallelism.default: 2
rest.address: 127.0.0.1
# The REST API's metrics (watermarks, records, busy time) are at most this old (default 10 s):
# fresh enough to watch a streaming job's watermarks second by second.
metrics.fetcher.update-interval: 1000
rest.bind-address: 127.0.0.1
rest.port: ${PORT}
# Jobs sent by flink run take this interval. Beam's job server does not: a Beam job checkpoints
# (to state.checkpoints.dir) only when its own checkpointing_interval option is set.
execution.checkpointing.interval: 10s
state.backend.type: hashmap
state.checkpoints.dir: file://${FLINK_RUN}/checkpoints
state.savepoints.dir: file://${FLINK_RUN}/savepoints
# The processes' working folders (a TaskManager's holds each job's jars, 192 MB a job, in its
# blobStorage) in the cluster's own folder, emptied by start and stop: in the system's /tmp
# they were left behind by every TaskManager that did not exit cleanly (gigabytes a day).
io.tmp.dirs: ${FLINK_RUN}/tmp
EOF
}

# Prints the number of registered TaskManagers; fails while the REST endpoint does not answer.
taskmanagers() {
  "$PY" - "$PORT" <<'EOF'
import json, sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/overview", timeout=2) as answer:
    print(json.load(answer)["taskmanagers"])
EOF
}
cluster_ready() { [ "$(taskmanagers 2>/dev/null)" -ge 1 ] 2>/dev/null; }
daemon_pid_file() { compgen -G "${FLINK_RUN}/flink-*-$1.pid" || true; }

# Beam's `python -m apache_beam.runners.worker.worker_pool_main` starts every SDK worker with
# state_cache_size=0 (it has no option for it, and workers it starts ignore the job's
# --max_cache_memory_usage_mb): no user-state cache, so each state read of the keyed steps went
# to the TaskManager and back and was decoded again. The same pool, started here with a cache
# (the size Beam's own worker containers default to); Flink hands out cache tokens for it.
POOL_STATE_CACHE_MB=100
POOL_CODE="import sys, time
from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer
_, server = BeamFnExternalWorkerPoolServicer.start(  # serves while referenced
    use_process=True, port=int(sys.argv[1]), state_cache_size=int(sys.argv[2]) << 20)
print('worker pool on port', sys.argv[1], 'state cache', sys.argv[2], 'MB', flush=True)
while True:
    time.sleep(3600)"

start_worker_pool() {
  # The pool starts SDK workers with a bare `python`: the venv's must come first on PATH.
  # ($POOL_PROGRAM is in the code, so pid_running recognises the process.)
  PATH="${REPO}/.venv/bin:${PATH}" setsid "$PY" -c "$POOL_CODE" \
    "$WORKER_POOL_PORT" "$POOL_STATE_CACHE_MB" \
    < /dev/null > "${FLINK_RUN}/worker-pool.log" 2>&1 9>&- &
  echo $! > "$POOL_PID"
  wait_for 30 port_open "$WORKER_POOL_PORT" \
    || die "the worker pool did not open :${WORKER_POOL_PORT}: see ${FLINK_RUN}/worker-pool.log"
}

start() {
  require java openjdk-17-jdk-headless
  require javac openjdk-17-jdk-headless  # jar and javac build the job server (the JDK's)
  require mvn maven
  assemble_flink_home
  assemble_job_server
  if ! cluster_ready; then
    port_open "$PORT" && die "127.0.0.1:${PORT} is taken by something that is not a Flink cluster"
    write_config
    rm -rf "${FLINK_RUN}/tmp" && mkdir -p "${FLINK_RUN}/tmp"
    "${FLINK_HOME}/bin/start-cluster.sh" 9>&- >&2
    wait_for 90 cluster_ready || die "Flink did not come up: see ${FLINK_RUN}/log"
  fi
  if ! pid_running "$POOL_PID" "$POOL_PROGRAM"; then
    port_open "$WORKER_POOL_PORT" && die "127.0.0.1:${WORKER_POOL_PORT} is taken by something else"
    start_worker_pool
  fi
  echo "FLINK_MASTER=localhost:${PORT}"
  echo "FLINK_JOB_SERVER_JAR=${JOB_SERVER_JAR}"
  echo "KAFKA_EXPANSION_SERVICE_JAR=${EXPANSION_SERVICE_JAR}"
  echo "FLINK_WORKER_POOL=localhost:${WORKER_POOL_PORT}"
  echo "FLINK_HOME=${FLINK_HOME}"
}

stop() {
  if pid_running "$POOL_PID" "$POOL_PROGRAM"; then
    kill -- "-$(cat "$POOL_PID")" 2>/dev/null || true  # the pool's own process group: its workers
  fi
  stop_pid_file "$POOL_PID" "$POOL_PROGRAM"
  [ -d "$FLINK_HOME" ] || return 0
  local pids
  pids=$(cat "${FLINK_RUN}"/flink-*.pid 2>/dev/null || true)
  "${FLINK_HOME}/bin/stop-cluster.sh" 9>&- >&2
  for pid in $pids; do
    wait_for 20 pid_gone "$pid" || kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "${FLINK_RUN}/tmp"
}

status() {
  local failed=0 name pid_file
  for name in standalonesession taskexecutor; do
    pid_file=$(daemon_pid_file "$name")
    if [ -n "$pid_file" ] && pid_running "$pid_file" java; then
      echo "flink ${name} running (pid $(cat "$pid_file"))"
    else
      echo "flink ${name} stopped"; failed=1
    fi
  done
  if cluster_ready; then
    echo "flink REST on 127.0.0.1:${PORT} with $(taskmanagers) TaskManager(s)"
  else
    echo "flink REST on 127.0.0.1:${PORT} not answering"; failed=1
  fi
  if pid_running "$POOL_PID" "$POOL_PROGRAM"; then
    echo "beam worker pool running on 127.0.0.1:${WORKER_POOL_PORT} (pid $(cat "$POOL_PID"))"
  else
    echo "beam worker pool stopped"; failed=1
  fi
  return "$failed"
}

mkdir -p "$FLINK_RUN"
lock_service "flink-${PORT}"
"$COMMAND"
