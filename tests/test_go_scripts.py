"""The scripts that build with Go (Prism, the Pub/Sub emulator) on a machine without Go: one
line saying what is missing and how to get it, and the "unavailable" status the tests skip
on, instead of a bare exit status."""
import os
import subprocess

import pytest

from tests.conftest import REPO, UNAVAILABLE


@pytest.mark.parametrize("command", [["scripts/prism.sh", "path"],
                                     ["scripts/pubsub-emulator.sh", "start", "--port", "8197"]])
def test_without_go_it_says_what_is_missing_and_how_to_install_it(command, tmp_path):
    bare_path = "/usr/bin:/bin"  # the tools the scripts use, and no Go
    assert not any(os.access(f"{folder}/go", os.X_OK) for folder in bare_path.split(":"))
    found = subprocess.run(["bash", *command], cwd=REPO, capture_output=True, text=True,
                           timeout=60,
                           env={"PATH": bare_path, "HOME": str(tmp_path)})  # nothing cached
    assert found.returncode == UNAVAILABLE
    assert found.stdout == ""
    lines = found.stderr.splitlines()
    assert len(lines) == 1, found.stderr
    assert "`go` is not on PATH" in lines[0] and "https://go.dev/dl/" in lines[0]


def test_prism_is_not_built_from_a_source_its_fixes_do_not_fit(tmp_path):
    # a `go` that serves a Prism source without the lines the fixes follow, and would build
    source = tmp_path / "module"
    for path in ("go/pkg/beam/runners/prism/internal/stage.go",
                 "go/pkg/beam/runners/prism/internal/worker/bundle.go", "go.mod", "go.sum"):
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        (source / path).write_text("package other\n")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "go").write_text(
        "#!/bin/bash\n"
        f'if [ "$1" = mod ]; then echo \'  "Dir": "{source}",\'; exit 0; fi\n'
        'while [ "$1" != -o ]; do shift; done; echo built > "$2"\n')
    (fake / "go").chmod(0o755)
    built = subprocess.run(["bash", "scripts/prism.sh", "path"], cwd=REPO, capture_output=True,
                           text=True, timeout=60,
                           env={"PATH": f"{fake}:/usr/bin:/bin", "HOME": str(tmp_path)})
    assert built.returncode == 1, built.stdout + built.stderr
    assert not list((tmp_path / ".cache" / "realtime-ai").glob("prism-*/prism"))
