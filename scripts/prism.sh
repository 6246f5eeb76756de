#!/usr/bin/env bash
# Beam's Prism runner binary: scripts/prism.sh path
# Prints the path of the prism binary for the Beam version pinned in requirements.txt, building
# it once (about 4 minutes) into ~/.cache/realtime-ai/prism-vVERSION-FIXES/ with the Go
# toolchain, with the fix below. Run a pipeline on it with
# --runner=PrismRunner --prism_location="$(scripts/prism.sh path)": Beam's runner would
# otherwise download a release zip from GitHub on every new version.
#
# The fix (FIXES=busywait1; realtime_ai/pipelines/main.py names the same folder): Prism's
# loop that waits for a bundle (`stage.Execute` in internal/stage.go) selects on the channel
# closed once the bundle's outputs are all in, and never stops selecting on it, so from then
# until the SDK's answer it spins on a core: for the whole bundle when a stage has no outputs
# (the file writes). At 300 events/s that was as much CPU as the SDK worker itself, on a
# 2-core machine. The fix stops selecting on the channel once it has fired.
# Exit 3 ("unavailable") when there is no Go to build it with, saying in one line how to get it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "${here}/lib.sh"
[ "${1:-}" = path ] && [ $# -eq 1 ] || { echo "usage: $0 path" >&2; exit 2; }

version=$(sed -n 's/^apache-beam\(\[[a-z,]*\]\)\?==\([0-9.]*\)$/\2/p' "${here}/../requirements.txt")
[ -n "$version" ] || die "no apache-beam==VERSION pin in requirements.txt"
fixes=busywait1
name="prism-v${version}-${fixes}"
dir="${CACHE_DIR}/${name}"
binary="${dir}/prism"

# The one line of stage.go the fix follows, and the line it adds.
fired='			dataFinished = true'
fix='			dataReady = nil // fired: a closed channel is always ready, a nil one never'

build() {  # build STAGING: the fixed prism into STAGING/prism
  local staging=$1 source
  # The module's source as Go fetched it (read-only, shared): a copy of its Go part to fix.
  source=$(GOFLAGS=-mod=mod go mod download -json "github.com/apache/beam/sdks/v2@v${version}" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$source" ] || { echo "go mod download gave no source folder" >&2; return 1; }
  mkdir -p "${staging}/src"
  cp -r "${source}/go.mod" "${source}/go.sum" "${source}/go" "${staging}/src/"
  chmod -R u+w "${staging}/src"
  local stage_go="${staging}/src/go/pkg/beam/runners/prism/internal/stage.go"
  # Exactly one such line, right after `case <-dataReady:`, or this version's loop differs.
  [ "$(grep -c -x -F -- "$fired" "$stage_go")" = 1 ] \
    && grep -x -F -B1 -- "$fired" "$stage_go" | head -1 | grep -q -x -F $'\t\tcase <-dataReady:' \
    || { echo "Prism v${version}'s stage.go is not the one the fix was made for" >&2; return 1; }
  sed -i "/^${fired}\$/a\\
${fix}" "$stage_go"
  (cd "${staging}/src" && GOFLAGS=-mod=mod go build -o "${staging}/prism" ./go/cmd/prism)
}

if [ ! -x "$binary" ]; then
  lock_service "${name}-build"
  if [ ! -x "$binary" ]; then  # another caller may have built it while we waited
    require_go "Beam's Prism runner"
    build_log="${RUN_DIR}/${name}-build.log"
    echo "building Beam's Prism runner v${version} (once; about 4 minutes), log: ${build_log}" >&2
    # Built in a directory of its own and renamed, so no caller ever runs half a file.
    mkdir -p "$dir"
    staging=$(mktemp -d "${dir}/.build.XXXXXX")
    build "$staging" > "$build_log" 2>&1 \
      || { rm -rf "$staging"; die "building prism failed: see ${build_log}"; }
    mv "${staging}/prism" "$binary"
    rm -rf "$staging"
  fi
fi
echo "$binary"
