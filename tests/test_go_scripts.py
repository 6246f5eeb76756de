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
