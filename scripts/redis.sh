#!/usr/bin/env bash
# A real Redis server on loopback for tests: scripts/redis.sh start|stop|status [--port 6390]
# `start` installs Debian's redis-server if missing, starts it without persistence and prints
# REDIS_URL=redis://127.0.0.1:PORT/0 on stdout (diagnostics on stderr). Idempotent.
set -euo pipefail
cmd=${1:-status}
port=6390
[ "${2:-}" = "--port" ] && port=${3:?--port needs a value}
run_dir="${HOME}/.cache/realtime-ai/run"
pid_file="${run_dir}/redis-${port}.pid"
mkdir -p "$run_dir"

running() { [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; }

case "$cmd" in
  start)
    if ! running; then
      if ! command -v redis-server >/dev/null; then
        echo "installing redis-server (apt-get)" >&2
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
          apt-get install -y -qq redis-server; } > "${run_dir}/apt.log" 2>&1 || {
          echo "apt-get install redis-server failed: see ${run_dir}/apt.log" >&2; exit 1; }
      fi
      redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize yes --pidfile "$pid_file" --logfile "${run_dir}/redis-${port}.log" >&2
      for _ in $(seq 50); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && break
        sleep 0.1
      done
      redis-cli -p "$port" ping >/dev/null || { echo "redis did not start" >&2; exit 1; }
    fi
    echo "REDIS_URL=redis://127.0.0.1:${port}/0"
    ;;
  stop)
    if running; then kill "$(cat "$pid_file")"; fi
    rm -f "$pid_file"
    ;;
  status)
    if running; then echo "redis running on 127.0.0.1:${port}"; else echo "redis stopped"; exit 1; fi
    ;;
  *) echo "usage: $0 start|stop|status [--port N]" >&2; exit 2 ;;
esac
