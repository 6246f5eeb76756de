#!/usr/bin/env bash
# A single-node KRaft Kafka broker on loopback:
#   scripts/kafka.sh start|stop|status [--port 9092]    scripts/kafka.sh topic NAME [--port 9092]
# `start` fetches (once, cached under ~/.cache/realtime-ai) the broker's jars from Maven Central
# (scripts/kafka/pom.xml), formats its storage in the run dir, starts it with the controller on
# PORT+1, waits until a topic can be created and prints KAFKA_BOOTSTRAP=127.0.0.1:PORT on stdout
# (diagnostics on stderr). `topic NAME` creates a topic if missing and prints its description.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
topic=
if [ "${1:-}" = topic ]; then
  topic=${2:?usage: $0 topic NAME [--port N]}
  set -- status "${@:3}"
fi
parse_service_args 9092 "$@"

REPO=$(cd "$(dirname "$0")/.." && pwd)
POM="${REPO}/scripts/kafka/pom.xml"
KAFKA_LIB="${CACHE_DIR}/kafka/lib"
KAFKA_RUN="${RUN_DIR}/kafka-${PORT}"
PID_FILE="${KAFKA_RUN}/kafka.pid"
SERVER_MAIN=kafka.Kafka

# The jars are fetched again when the pom changes (say, another Kafka version).
assemble_jars() {
  cmp -s "$POM" "${KAFKA_LIB}/pom.xml" && return
  echo "fetching the Kafka broker's jars into ${KAFKA_LIB} from Maven Central (~60 MB, once)" >&2
  rm -rf "${KAFKA_LIB}.partial"
  mvn -q -B -f "$POM" -Dmaven.repo.local="${CACHE_DIR}/m2" \
    dependency:copy-dependencies -DoutputDirectory="${KAFKA_LIB}.partial" \
    > "${RUN_DIR}/mvn-kafka.log" 2>&1 || die "mvn failed: see ${RUN_DIR}/mvn-kafka.log"
  cp "$POM" "${KAFKA_LIB}.partial/pom.xml"
  rm -rf "$KAFKA_LIB" && mv "${KAFKA_LIB}.partial" "$KAFKA_LIB"
}

# The quick (C1) compiler only: the broker shares this machine's cores with the jobs it feeds,
# and a freshly started broker's optimizing (C2) compiler spent 26 s compiling during the first
# streaming job at 330 events/s (jstat -compiler; 3 s with C1), as that job started up.
JAVA=(java -XX:TieredStopAtLevel=1 -Xms256m -Xmx512m -cp "${KAFKA_LIB}/*")
kafka_tool() { "${JAVA[@]}" -Dlog4j.configuration="file:${KAFKA_RUN}/tools-log4j.properties" "$@"; }

write_config() {
  mkdir -p "${KAFKA_RUN}/data"
  cat > "${KAFKA_RUN}/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$((PORT + 1))
listeners=PLAINTEXT://127.0.0.1:${PORT},CONTROLLER://127.0.0.1:$((PORT + 1))
advertised.listeners=PLAINTEXT://127.0.0.1:${PORT}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=${KAFKA_RUN}/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
  # The broker logs to stdout (server.log); the tools only warn, on stderr.
  cat > "${KAFKA_RUN}/server-log4j.properties" <<'EOF'
log4j.rootLogger=INFO, out
log4j.appender.out=org.apache.log4j.ConsoleAppender
log4j.appender.out.layout=org.apache.log4j.PatternLayout
log4j.appender.out.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
  cat > "${KAFKA_RUN}/tools-log4j.properties" <<'EOF'
log4j.rootLogger=WARN, err
log4j.appender.err=org.apache.log4j.ConsoleAppender
log4j.appender.err.target=System.err
log4j.appender.err.layout=org.apache.log4j.PatternLayout
log4j.appender.err.layout.ConversionPattern=%p %m%n
EOF
}

# create_topic NAME: idempotent; prints the topic's description on stdout.
create_topic() {
  local bootstrap=(--bootstrap-server "127.0.0.1:${PORT}")
  kafka_tool org.apache.kafka.tools.TopicCommand "${bootstrap[@]}" \
    --create --if-not-exists --topic "$1" --partitions 1 --replication-factor 1 >&2
  kafka_tool org.apache.kafka.tools.TopicCommand "${bootstrap[@]}" \
    --describe --topic "$1"
}

start() {
  require java openjdk-17-jdk-headless
  require mvn maven
  assemble_jars
  if ! pid_running "$PID_FILE" "$SERVER_MAIN"; then
    port_open "$PORT" && die "127.0.0.1:${PORT} is taken by something that is not our Kafka"
    write_config
    if [ ! -f "${KAFKA_RUN}/data/meta.properties" ]; then
      kafka_tool kafka.tools.StorageTool format --ignore-formatted \
        -t "$(kafka_tool kafka.tools.StorageTool random-uuid)" \
        -c "${KAFKA_RUN}/server.properties" >&2
    fi
    "${JAVA[@]}" -Dlog4j.configuration="file:${KAFKA_RUN}/server-log4j.properties" \
      "$SERVER_MAIN" "${KAFKA_RUN}/server.properties" \
      < /dev/null > "${KAFKA_RUN}/server.log" 2>&1 9>&- &
    echo $! > "$PID_FILE"
    wait_for 60 port_open "$PORT" || die "Kafka did not open :${PORT}: see ${KAFKA_RUN}/server.log"
    create_topic realtime-ai-ready > /dev/null \
      || die "Kafka cannot create topics: see ${KAFKA_RUN}/server.log"
  fi
  echo "KAFKA_BOOTSTRAP=127.0.0.1:${PORT}"
}

stop() { stop_pid_file "$PID_FILE" "$SERVER_MAIN"; }
status() { report_status kafka "$PID_FILE" "$SERVER_MAIN"; }

mkdir -p "$KAFKA_RUN"
lock_service "kafka-${PORT}"
if [ -n "$topic" ]; then
  status > /dev/null || die "kafka is not running on 127.0.0.1:${PORT}: run $0 start"
  create_topic "$topic"
else
  "$COMMAND"
fi
