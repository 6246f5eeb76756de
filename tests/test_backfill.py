"""Backfills over dated folders: the day range, the layouts, one copy after re-runs."""
import subprocess
import sys
from datetime import date

import pyarrow.parquet as pq
import pytest

from realtime_ai.pipelines import backfill
from realtime_ai.pipelines.options import InvalidOptions
from tests.conftest import REPO


def test_days_are_inclusive_and_an_inverted_range_is_refused():
    assert backfill.days_between(date(2026, 1, 30), date(2026, 2, 1)) == [
        date(2026, 1, 30), date(2026, 1, 31), date(2026, 2, 1)]
    with pytest.raises(InvalidOptions, match="before --from"):
        backfill.days_between(date(2026, 2, 1), date(2026, 1, 1))


def test_both_dated_layouts_are_found_and_empty_days_skipped():
    existing = {"r/2026-01-01/*", "r/dt=2026-01-03/*"}
    days = backfill.days_between(date(2026, 1, 1), date(2026, 1, 3))
    assert backfill.day_globs("r", days, existing.__contains__) == [
        "r/2026-01-01/*", "r/dt=2026-01-03/*"]


def _dated_layout(root):
    """The sample transactions split into one folder per day, in both layouts."""
    lines = (REPO / "samples" / "transactions.jsonl").read_text().splitlines()
    for day, folder in (("2026-01-05", "2026-01-05"), ("2026-01-06", "dt=2026-01-06")):
        (root / folder).mkdir(parents=True)
        (root / folder / "part-0.jsonl").write_text(
            "\n".join(line for line in lines if f'"{day}T' in line) + "\n")
    return len(lines)


def test_a_range_run_twice_leaves_one_copy_of_its_outputs(tmp_path, capsys):
    total = _dated_layout(tmp_path / "tx")
    argv = [f"--transactions_root={tmp_path}/tx", "--from=2026-01-04", "--to=2026-01-06",
            f"--output={tmp_path}/out", "--runner=DirectRunner"]
    for _ in range(2):
        assert backfill.main(argv) == 0
    assert "2 day folder(s) of 3 day(s)" in capsys.readouterr().out
    rows = pq.read_table(tmp_path / "out" / "2026-01-04_2026-01-06" / "transactions")
    ids = rows.column("transaction_id").to_pylist()
    assert len(ids) == total and len(set(ids)) == total


@pytest.mark.parametrize("argv, message", [
    (["--from=2026-01-02", "--to=2026-01-01"], "is before --from"),
    (["--from=2026-13-01", "--to=2026-01-01"], "not a date YYYY-MM-DD"),
    (["--from=2026-01-01", "--to=2026-01-02", "--transactions_root=ROOT"], "no day folder"),
])
def test_bad_ranges_are_clear_errors_not_stack_traces(argv, message, tmp_path):
    argv = [arg.replace("ROOT", str(tmp_path)) for arg in argv]
    if not any(arg.startswith("--transactions_root") for arg in argv):
        argv.append(f"--transactions_root={tmp_path}")
    proc = subprocess.run([sys.executable, "-m", "realtime_ai.pipelines.backfill", *argv,
                           f"--output={tmp_path}/out"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_a_bad_argument_is_one_error_line_not_usage(capsys):
    assert backfill.main(["--from=2026-13-01", "--to=2026-01-01", "--output=out"]) == 2
    assert capsys.readouterr().err == "error: --from: not a date YYYY-MM-DD: 2026-13-01\n"
