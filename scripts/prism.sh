#!/usr/bin/env bash
# Beam's Prism runner binary: scripts/prism.sh path
# Prints the path of the prism binary for the Beam version pinned in requirements.txt, building
# it once (about 4 minutes) into ~/.cache/realtime-ai/prism-vVERSION/ with the Go toolchain.
# Run a pipeline on it with --runner=PrismRunner --prism_location="$(scripts/prism.sh path)":
# Beam's runner would otherwise download a release zip from GitHub on every new version.
# Exit 3 ("unavailable") when there is no Go to build it with, saying in one line how to get it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "${here}/lib.sh"
[ "${1:-}" = path ] && [ $# -eq 1 ] || { echo "usage: $0 path" >&2; exit 2; }

version=$(sed -n 's/^apache-beam\(\[[a-z,]*\]\)\?==\([0-9.]*\)$/\2/p' "${here}/../requirements.txt")
[ -n "$version" ] || die "no apache-beam==VERSION pin in requirements.txt"
dir="${CACHE_DIR}/prism-v${version}"
binary="${dir}/prism"

if [ ! -x "$binary" ]; then
  lock_service "prism-v${version}-build"
  if [ ! -x "$binary" ]; then  # another caller may have built it while we waited
    require_go "Beam's Prism runner"
    build_log="${RUN_DIR}/prism-v${version}-build.log"
    echo "building Beam's Prism runner v${version} (once; about 4 minutes), log: ${build_log}" >&2
    # Installed into a directory of its own and renamed, so no caller ever runs half a file.
    # The flags of the build this project was verified with (GOFLAGS from the environment
    # replaces any set with `go env -w`).
    mkdir -p "$dir"
    staging=$(mktemp -d "${dir}/.build.XXXXXX")
    GOBIN="$staging" GOFLAGS=-mod=mod \
      go install "github.com/apache/beam/sdks/v2/go/cmd/prism@v${version}" > "$build_log" 2>&1 \
      || { rm -rf "$staging"; die "building prism failed: see ${build_log}"; }
    mv "${staging}/prism" "$binary"
    rm -rf "$staging"
  fi
fi
echo "$binary"
