#!/usr/bin/env bash
# A real Redis server on loopback for tests: scripts/redis.sh start|stop|status [--port 6390]
# `start` installs Debian's redis-server if missing, starts it daemonized without persistence and
# prints REDIS_URL=redis://127.0.0.1:PORT/0 on stdout once it answers PING (diagnostics on
# stderr). Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "${here}/lib.sh"
parse_service_args 6390 "$@"
name="redis-${PORT}"
pid_file="${RUN_DIR}/${name}.pid"
log_file="${RUN_DIR}/${name}.log"
program=redis-server

redis_answers() { [ "$(redis-cli -p "$PORT" ping 2>/dev/null)" = PONG ]; }

case $COMMAND in
  start)
    lock_service "$name"
    if ! pid_running "$pid_file" "$program"; then
      ! port_open "$PORT" || die "127.0.0.1:${PORT} is taken by a process that is not ours"
      require redis-server redis-server
      require redis-cli redis-server
      redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize yes --pidfile "$pid_file" --logfile "$log_file" < /dev/null >&2 9>&-
      wait_for 10 redis_answers \
        || { tail -5 "$log_file" >&2; die "redis did not start: see ${log_file}"; }
    fi
    echo "REDIS_URL=redis://127.0.0.1:${PORT}/0"
    ;;
  stop)
    lock_service "$name"
    stop_pid_file "$pid_file" "$program"
    ;;
  status)
    report_status "Redis" "$pid_file" "$program"
    ;;
esac
