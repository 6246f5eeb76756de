# Shared by the local-service and build scripts (redis.sh, pubsub-emulator.sh, prism.sh, ...);
# source it, it only defines.
# Their contract: `start` prints one NAME=VALUE line on stdout and everything else on stderr;
# exit 3 means "cannot be installed here" (tests skip on it), any other failure is a failure.
CACHE_DIR="${HOME}/.cache/realtime-ai"
RUN_DIR="${CACHE_DIR}/run"
EXIT_UNAVAILABLE=3

die() { echo "$*" >&2; exit 1; }
unavailable() { echo "unavailable: $*" >&2; exit "$EXIT_UNAVAILABLE"; }

# parse_service_args DEFAULT_PORT "$@": sets COMMAND (start|stop|status) and PORT.
parse_service_args() {
  PORT=$1
  COMMAND=${2:-}
  shift 2 || shift $#
  while [ $# -gt 0 ]; do
    case $1 in
      --port) PORT=${2:?--port needs a value}; shift 2 ;;
      --port=*) PORT=${1#--port=}; shift ;;
      *) echo "unknown argument: $1" >&2; COMMAND=usage; break ;;
    esac
  done
  case $COMMAND in
    start|stop|status) ;;
    *) echo "usage: $0 start|stop|status [--port N]" >&2; exit 2 ;;
  esac
  [[ $PORT =~ ^[0-9]+$ ]] || die "--port must be a number, got '$PORT'"
}

# lock_service NAME: serializes start/stop of one service on one port across processes. fd 9 must
# not reach the daemons (close it with 9>&- when launching), or they would hold the lock forever.
lock_service() {
  mkdir -p "$RUN_DIR"
  exec 9>"${RUN_DIR}/$1.lock"
  flock 9
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# A zombie counts as gone: in a container, pid 1 may never reap it.
pid_gone() {
  ! kill -0 "$1" 2>/dev/null || [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]
}

# pid_running PID_FILE PROGRAM: the pid file names a live process running PROGRAM (the check on
# the program guards against a stale pid file whose number was reused).
pid_running() {
  local pid
  [ -f "$1" ] && pid=$(cat "$1") && [ -n "$pid" ] && ! pid_gone "$pid" \
    && grep -aq -- "$2" "/proc/${pid}/cmdline" 2>/dev/null
}

# wait_for SECONDS COMMAND...: polls COMMAND every 0.1 s; fails if it never succeeds.
wait_for() {
  local tries=$(($1 * 10))
  shift
  while ! "$@"; do
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] || return 1
    sleep 0.1
  done
}

# stop_pid_file PID_FILE PROGRAM: TERM, up to 10 s for a clean exit, then KILL; removes the file.
stop_pid_file() {
  if pid_running "$1" "$2"; then
    local pid
    pid=$(cat "$1")
    kill "$pid"
    wait_for 10 pid_gone "$pid" || { kill -9 "$pid" 2>/dev/null; wait_for 2 pid_gone "$pid"; } || true
  fi
  rm -f "$1"
}

# report_status NAME PID_FILE PROGRAM: one line on stdout; exit status 0 running, 1 stopped.
report_status() {
  if pid_running "$2" "$3"; then
    echo "$1 running on 127.0.0.1:${PORT} (pid $(cat "$2"))"
  else
    echo "$1 stopped on 127.0.0.1:${PORT}"
    return 1
  fi
}

# require_go WHAT: "unavailable" (tests skip, saying this one line) when there is no Go to build
# WHAT with. Go 1.21 and later fetch the newer toolchain a go.mod asks for by themselves.
require_go() {
  command -v go >/dev/null || unavailable "$1 is built once with Go, and \`go\` is not on" \
    "PATH: install Go 1.21 or later from https://go.dev/dl/ (Debian's golang-go is too old)," \
    "put its bin/ on PATH, then run $0 again"
}

# require COMMAND DEBIAN_PACKAGE: installs the package when the command is missing.
require() {
  command -v "$1" >/dev/null && return
  echo "installing $2 (apt-get)" >&2
  local log="${RUN_DIR}/apt-$2.log"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2"; } \
    > "$log" 2>&1 || unavailable "apt-get install $2 failed: see $log"
}

# add_after FILE LINE LINE_BEFORE ADDED: ADDED after the one LINE of FILE, which must follow
# LINE_BEFORE: how prism.sh and flink-cluster.sh fix the upstream sources they build, failing
# (status 1) when a source is not the one the fix was made for.
add_after() {
  local file=$1 line=$2 before=$3 added=$4
  [ "$(grep -c -x -F -- "$line" "$file")" = 1 ] \
    && grep -x -F -B1 -- "$line" "$file" | head -1 | grep -q -x -F -- "$before" \
    || { echo "$(basename "$file") is not the one the fixes were made for" >&2; return 1; }
  local at
  at=$(grep -n -x -F -- "$line" "$file" | cut -d: -f1)
  { head -n "$at" "$file"; printf '%s\n' "$added"; tail -n "+$((at + 1))" "$file"; } > "${file}.fixed"
  mv "${file}.fixed" "$file"
}
