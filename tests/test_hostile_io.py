"""Hostile inputs and outputs for the main command: damaged input files, an output folder that
cannot be written, a re-run that fails, a run killed mid-write. Outputs are replaced only by
a run that succeeds, and readers of a dataset folder never see an unfinished run."""
import gzip
import json
import logging
import os
import pathlib
import signal
import subprocess
import sys
import time

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from realtime_ai.core.records import OUTPUT_SCHEMAS
from realtime_ai.pipelines import main
from tests.compare import comparable_rows

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
PREVIOUS_RUN_PREFIX = "previous-"


def _transactions(count: int) -> list[str]:
    lines = (SAMPLES / "transactions.jsonl").read_text().splitlines()
    return [line for line in lines if line.strip()][:count]


def _readers_see(dataset) -> tuple[list[dict], list[dict]]:
    """A dataset folder's rows as pyarrow.dataset and DuckDB ('DIR/**/*.parquet') read them."""
    by_pyarrow = comparable_rows(ds.dataset(dataset, format="parquet").to_table())
    by_duckdb = comparable_rows(duckdb.sql(
        f"select * from read_parquet('{dataset}/**/*.parquet')").to_arrow_table())
    return by_pyarrow, by_duckdb


def _fail_parsing(payload, max_bytes):
    raise RuntimeError("injected failure")


def test_a_truncated_gzip_is_dead_lettered_and_a_failed_rerun_keeps_the_outputs(
        tmp_path, monkeypatch, caplog):
    # Before: the truncated gzip's missing records went unreported (exit 0); the failing
    # re-run deleted the previous outputs before it started.
    good, rest = _transactions(40), _transactions(400)[40:]
    (tmp_path / "good.jsonl").write_text("\n".join(good) + "\n")
    whole = gzip.compress(("\n".join(rest) + "\n").encode())
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[:len(whole) // 3])
    out = tmp_path / "out"
    argv = [f"--transactions={tmp_path}/good.jsonl,{tmp_path}/cut.jsonl.gz",
            f"--output={out}", "--runner=DirectRunner"]
    assert main.main(argv) == 0
    first = {name: comparable_rows(pq.read_table(out / name)) for name in OUTPUT_SCHEMAS}
    [dead] = first["dead_letter"]
    assert dead["payload"] == f"{tmp_path}/cut.jsonl.gz"
    assert dead["error"].startswith("unreadable input file: truncated gzip file")
    read = int(dead["error"].rsplit("(read ", 1)[1].split()[0])
    assert 0 < read < len(rest)
    ids = {row["transaction_id"] for row in first["transactions"]}
    assert ids == {json.loads(line)["transaction_id"] for line in good + rest[:read]}

    monkeypatch.setattr("realtime_ai.transforms.parse.parse_transaction", _fail_parsing)
    with caplog.at_level(logging.ERROR), pytest.raises(Exception, match="injected failure"):
        main.main(argv)
    assert {name: comparable_rows(pq.read_table(out / name))
            for name in OUTPUT_SCHEMAS} == first
    assert f"the datasets under {out} are those of the previous run, unchanged" in caplog.text
    assert not list((out / ".in-progress").rglob("*"))  # the failed run's files are gone


def test_a_run_killed_mid_write_leaves_readers_the_previous_run(tmp_path):
    out = tmp_path / "out"
    previous = {}
    for name, schema in OUTPUT_SCHEMAS.items():  # a previous complete run, one row each
        (out / name).mkdir(parents=True)
        row = {field.name: None for field in schema}
        row[schema.names[0]] = PREVIOUS_RUN_PREFIX + name
        previous[name] = pa.Table.from_pylist([row], schema=schema)
        pq.write_table(previous[name], out / name / "part-00000-of-00001.parquet")
    before = set(out.rglob("*"))
    run = subprocess.Popen(
        [sys.executable, "-m", "realtime_ai.pipelines.main", "--runner=DirectRunner",
         f"--transactions={SAMPLES}/transactions.jsonl", f"--metrics={SAMPLES}/metrics.jsonl",
         f"--output={out}"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not [path for path in out.rglob("*.parquet") if path not in before]:
            assert run.poll() is None and time.monotonic() < deadline, "no write to catch"
            time.sleep(0.01)
        os.killpg(run.pid, signal.SIGKILL)  # mid-write: a Parquet file is being written
    finally:
        run.wait()
    for name in OUTPUT_SCHEMAS:
        expected = comparable_rows(previous[name])
        assert _readers_see(out / name) == (expected, expected), name
    left = [path for path in out.rglob("*") if path not in before and not path.is_dir()]
    assert left and all(out / ".in-progress" in path.parents for path in left)


def test_an_output_that_is_a_file_or_cannot_be_written_is_an_error_before_any_work(
        tmp_path, capsys):
    # Before: a traceback from deep inside Beam.
    (tmp_path / "a-file").write_text("")
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    outputs = [tmp_path / "a-file", tmp_path / "a-file" / "run1"]
    if os.geteuid() != 0:  # root writes anywhere
        outputs.append(read_only / "run1")
    for output in outputs:
        argv = [f"--transactions={SAMPLES}/transactions.jsonl", f"--output={output}"]
        assert main.main(argv) == 2
        error = capsys.readouterr().err
        assert error.startswith((f"error: --output={output} is a file, not a folder",
                                 f"error: --output={output} is not a folder the outputs can be "
                                 "written to: ")), error
        assert len(error.splitlines()) == 1


def test_an_input_that_is_a_folder_is_an_error_before_any_work(tmp_path, capsys):
    # Before: a traceback (IsADirectoryError) once the job was running.
    argv = [f"--transactions={SAMPLES}", f"--output={tmp_path / 'out'}"]
    assert main.main(argv) == 2
    assert capsys.readouterr().err == (
        f"error: --transactions={SAMPLES} is a folder: give a glob of its files, "
        f"e.g. --transactions={SAMPLES}/*\n")
    assert not (tmp_path / "out").exists()
