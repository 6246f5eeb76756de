#!/usr/bin/env bash
# Beam's Prism runner binary: scripts/prism.sh path
# Prints the path of the prism binary for the Beam version pinned in requirements.txt, building
# it once (about 4 minutes) into ~/.cache/realtime-ai/prism-vVERSION-FIXES/ with the Go
# toolchain, with the fixes below. Run a pipeline on it with
# --runner=PrismRunner --prism_location="$(scripts/prism.sh path)": Beam's runner would
# otherwise download a release zip from GitHub on every new version.
#
# The fixes (FIXES; realtime_ai/pipelines/main.py names the same folder). Two in Prism's loop
# that waits for a bundle (`stage.Execute` in internal/stage.go):
# - It selects on the channel closed once the bundle's outputs are all in, and never stops
#   selecting on it, so from then until the SDK's answer it spins on a core: for the whole
#   bundle when a stage has no outputs (the file writes). At 300 events/s that was as much CPU
#   as the SDK worker itself, on a 2-core machine. Fixed: it stops selecting on it once fired.
# - It asks the SDK for the bundle's progress every 100 ms, to decide on splitting it. With
#   splits turned off (the command turns them off: `_prism_settings` in pipelines/main.py) the
#   answers only update metrics while the bundle runs, and each costs the Python SDK the
#   monitoring data of every transform of the stage, under its GIL: with a bundle of a
#   thousand customers taking seconds, 4-7 s of every 10 s. Fixed: every 30 s (Prism's
#   longest interval) when splits are off.
# And one in how it asks the SDK for a bundle (`B.ProcessOn` in internal/worker/bundle.go):
# - It sends no cache token, so the Python SDK may keep no user state from one bundle to the
#   next: every bundle of a keyed step read each of its keys' state from Prism again, a round
#   trip each (about 5 ms under load at 300 events/s), one after another. Fixed: each bundle
#   carries one user-state token per worker. Prism may: a key is in one bundle at a time,
#   only the SDK writes user state (Prism drops it only for a window that has expired), a
#   failed bundle fails the job, and the token names the one worker the SDK's cache serves.
# Exit 3 ("unavailable") when there is no Go to build it with, saying in one line how to get it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "${here}/lib.sh"
[ "${1:-}" = path ] && [ $# -eq 1 ] || { echo "usage: $0 path" >&2; exit 2; }

version=$(sed -n 's/^apache-beam\(\[[a-z,]*\]\)\?==\([0-9.]*\)$/\2/p' "${here}/../requirements.txt")
[ -n "$version" ] || die "no apache-beam==VERSION pin in requirements.txt"
fixes=fixed3
name="prism-v${version}-${fixes}"
dir="${CACHE_DIR}/${name}"
binary="${dir}/prism"

# Each fix: the one line of stage.go it follows, the line before that, and the lines it adds.
fired='			dataFinished = true'
fired_before='		case <-dataReady:'
fired_fix='			dataReady = nil // fired: a closed channel is always ready, a nil one never'
tick='	baseTick := s.baseProgTick.Load().(time.Duration)'
tick_before='	unsplit := true'
tick_fix='	if !s.sdfSplittable { // progress only serves splitting, and metrics meanwhile
		baseTick = maximumProgTick
	}'
token='				ProcessBundleDescriptorId: b.PBDID,'
token_before='			ProcessBundle: &fnpb.ProcessBundleRequest{'
token_fix='				CacheTokens: []*fnpb.ProcessBundleRequest_CacheToken{{ // user state may be cached
					Type: &fnpb.ProcessBundleRequest_CacheToken_UserState_{
						UserState: &fnpb.ProcessBundleRequest_CacheToken_UserState{}},
					Token: []byte("user-state:" + wk.ID),
				}},'

build() {  # build STAGING: the fixed prism into STAGING/prism
  local staging=$1 source
  # The module's source as Go fetched it (read-only, shared): a copy of its Go part to fix.
  source=$(GOFLAGS=-mod=mod go mod download -json "github.com/apache/beam/sdks/v2@v${version}" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$source" ] || { echo "go mod download gave no source folder" >&2; return 1; }
  mkdir -p "${staging}/src"
  cp -r "${source}/go.mod" "${source}/go.sum" "${source}/go" "${staging}/src/" || return 1
  chmod -R u+w "${staging}/src"
  local stage_go="${staging}/src/go/pkg/beam/runners/prism/internal/stage.go"
  # Each fix ends the build on failure: called in an `||` list, it runs without `set -e`.
  add_after "$stage_go" "$fired" "$fired_before" "$fired_fix" || return 1
  add_after "$stage_go" "$tick" "$tick_before" "$tick_fix" || return 1
  add_after "${staging}/src/go/pkg/beam/runners/prism/internal/worker/bundle.go" \
    "$token" "$token_before" "$token_fix" || return 1
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
