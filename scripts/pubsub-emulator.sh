#!/usr/bin/env bash
# The Pub/Sub emulator for tests: scripts/pubsub-emulator.sh start|stop|status [--port 8085]
# Google's in-memory fake (pstest, the real gRPC API) wrapped by scripts/pstest/, built once per
# source version into ~/.cache/realtime-ai/bin. `start` prints PUBSUB_EMULATOR_HOST=127.0.0.1:PORT
# on stdout once it answers (diagnostics on stderr); idempotent. Topics live only while it runs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "${here}/lib.sh"
parse_service_args 8085 "$@"
name="pubsub-emulator-${PORT}"
pid_file="${RUN_DIR}/${name}.pid"
log_file="${RUN_DIR}/${name}.log"
program=pstest-

# Prints the path of the emulator binary, building it if this source version has none yet.
emulator_binary() {
  local src="${here}/pstest" version binary build_log
  version=$(cat "${src}/go.mod" "${src}/go.sum" "${src}/main.go" | sha256sum | cut -c1-16)
  binary="${CACHE_DIR}/bin/${program}${version}"
  if [ ! -x "$binary" ]; then
    require_go "the Pub/Sub emulator"
    mkdir -p "${CACHE_DIR}/bin"
    build_log="${RUN_DIR}/pstest-build.log"
    echo "building the Pub/Sub emulator (once; about a minute), log: ${build_log}" >&2
    # Fetches just the modules the build needs, so a registry outage reads as "unavailable".
    (cd "$src" && go list -deps . > /dev/null) > "$build_log" 2>&1 \
      || unavailable "Go modules for pstest could not be downloaded: see ${build_log}"
    # Built beside its final name and renamed, so a concurrent start never runs half a file;
    # no VCS stamp, as a fresh clone's git may refuse to answer for a directory it doesn't own.
    (cd "$src" && go build -trimpath -buildvcs=false -o "${binary}.$$" .) >> "$build_log" 2>&1 \
      || die "building pstest failed: see ${build_log}"
    mv "${binary}.$$" "$binary"
    # Older source versions' binaries are never used again (a running one keeps its inode).
    find "${CACHE_DIR}/bin" -name "${program}*" ! -path "$binary" -delete
  fi
  echo "$binary"
}

emulator_up() { port_open "$PORT" || pid_gone "$1"; }

case $COMMAND in
  start)
    lock_service "$name"
    if ! pid_running "$pid_file" "$program"; then
      ! port_open "$PORT" || die "127.0.0.1:${PORT} is taken by a process that is not ours"
      binary=$(emulator_binary)
      setsid "$binary" -address "127.0.0.1:${PORT}" < /dev/null > "$log_file" 2>&1 9>&- &
      pid=$!
      echo "$pid" > "$pid_file"
      wait_for 30 emulator_up "$pid" && ! pid_gone "$pid" \
        || { tail -5 "$log_file" >&2; stop_pid_file "$pid_file" "$program"
             die "the Pub/Sub emulator did not start: see ${log_file}"; }
    fi
    echo "PUBSUB_EMULATOR_HOST=127.0.0.1:${PORT}"
    ;;
  stop)
    lock_service "$name"
    stop_pid_file "$pid_file" "$program"
    ;;
  status)
    report_status "Pub/Sub emulator" "$pid_file" "$program"
    ;;
esac
