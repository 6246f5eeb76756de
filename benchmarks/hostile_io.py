"""Hostile input files and outputs against the main command, counted: records tried, lost,
tracebacks, hangs, and what readers of the outputs saw after runs killed mid-write.

1. One batch run over a good file beside damaged ones (gzip cut at 10%, 50% and 90%, gzip
   with bytes flipped mid-stream, an empty .gz, bzip2 / xz / zstd cut short, a corrupt
   Parquet file), each file a disjoint slice of samples/transactions.jsonl. A record is
   accounted for when it is a row of transactions/, a dead letter of its own, or among the
   records a file's dead letter says were not read; lost = tried - accounted.
2. Bad inputs and outputs that must be a one-line `error: ...` with exit 2: a folder as
   input, an output that is a file or on an unknown filesystem.
3. `kill -9` of the main command re-run over the samples, once its first Parquet file is
   being written and then a little later each time: after each, pyarrow.dataset and DuckDB
   ('NAME/**/*.parquet') must read exactly the previous run's rows in every dataset.

    python benchmarks/hostile_io.py [--kills 8]
"""
from __future__ import annotations

import argparse
import bz2
import gzip
import json
import lzma
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import zstandard

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
DATASETS = ("transactions", "metrics", "alerts", "insights", "dead_letter")
RUN_TIMEOUT_SECONDS = 900
SLICE = 200


def _main(argv: list[str]) -> subprocess.CompletedProcess | None:
    """The main command's result, or None when it hung past the timeout."""
    try:
        return subprocess.run([sys.executable, "-m", "realtime_ai.pipelines.main", *argv],
                              cwd=REPO, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        return None


def _damaged_files(folder: pathlib.Path, lines: list[str]) -> dict[str, int]:
    """Writes the good and damaged files; their records by file name."""
    def text(index: int) -> bytes:
        return ("\n".join(lines[index * SLICE:(index + 1) * SLICE]) + "\n").encode()

    whole_gz = gzip.compress(text(1))
    flipped = bytearray(gzip.compress(text(4)))
    for offset in range(len(flipped) // 2, len(flipped) // 2 + 16):
        flipped[offset] ^= 0xFF
    files = {
        "good.jsonl": text(0),
        "cut10.jsonl.gz": whole_gz[:len(whole_gz) // 10],
        "cut50.jsonl.gz": gzip.compress(text(2))[:len(whole_gz) // 2],
        "cut90.jsonl.gz": gzip.compress(text(3))[:len(whole_gz) * 9 // 10],
        "flipped.jsonl.gz": bytes(flipped),
        "empty.jsonl.gz": b"",
        "cut.jsonl.bz2": bz2.compress(text(5))[:-40],
        "cut.jsonl.xz": lzma.compress(text(6))[:-40],
        "cut.jsonl.zst": zstandard.ZstdCompressor().compress(text(7))[:-40],
        "corrupt.parquet": b"PAR1" + b"\0" * 64 + b"PAR1",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: 0 if name in ("empty.jsonl.gz", "corrupt.parquet") else SLICE
            for name in files}


def damaged_inputs(work: pathlib.Path) -> dict:
    lines = [line for line in (SAMPLES / "transactions.jsonl").read_text().splitlines() if line]
    inputs = work / "in"
    inputs.mkdir()
    counts = _damaged_files(inputs, lines)
    out = work / "damaged-out"
    ran = _main([f"--transactions={inputs}/*", f"--output={out}", "--runner=DirectRunner"])
    if ran is None:
        return {"runs": 1, "hangs": 1}
    rows = pq.read_table(out / "transactions").num_rows
    dead = pq.read_table(out / "dead_letter").to_pylist()
    unread = 0
    files_dead_lettered = 0
    for row in dead:
        name = pathlib.Path(row["payload"]).name
        if row["error"].startswith("unreadable input file") and name in counts:
            files_dead_lettered += 1
            unread += counts[name] - int(row["error"].rsplit("(read ", 1)[1].split()[0])
    record_dead = len(dead) - files_dead_lettered
    tried = sum(counts.values())
    return {"runs": 1, "exit": ran.returncode, "files": len(counts),
            "files_dead_lettered": files_dead_lettered, "records_tried": tried,
            "rows": rows, "record_dead_letters": record_dead, "records_unread_reported": unread,
            "records_lost": tried - rows - record_dead - unread,
            "tracebacks": ran.stderr.count("Traceback"), "hangs": 0}


def bad_options(work: pathlib.Path) -> dict:
    (work / "a-file").write_text("")
    cases = [
        [f"--transactions={SAMPLES}", f"--output={work}/o1"],
        [f"--transactions={SAMPLES}/transactions.jsonl", f"--output={work}/a-file"],
        [f"--transactions={SAMPLES}/transactions.jsonl", f"--output={work}/a-file/run"],
        [f"--transactions={SAMPLES}/transactions.jsonl", "--output=nosuchfs://bucket/run"],
    ]
    results = [_main(argv) for argv in cases]
    done = [r for r in results if r is not None]
    return {"runs": len(cases), "hangs": len(results) - len(done),
            "exit_2_one_line_error": sum(r.returncode == 2 and r.stderr.startswith("error: ")
                                         and len(r.stderr.splitlines()) == 1 for r in done),
            "tracebacks": sum(r.stderr.count("Traceback") for r in done)}


def _readers_see(folder: pathlib.Path) -> tuple[int, int] | str:
    try:
        by_pyarrow = ds.dataset(folder, format="parquet").to_table().num_rows
        by_duckdb = duckdb.execute(
            f"select count(*) from read_parquet('{folder}/**/*.parquet')").fetchone()[0]
    except Exception as error:  # noqa: BLE001 - a reader failing is what we count
        return f"{type(error).__name__}: {str(error)[:120]}"
    return by_pyarrow, by_duckdb


def _unfinished(out: pathlib.Path) -> list[pathlib.Path]:
    return [path for path in out.rglob("*.parquet") if ".in-progress" in path.parts]


def killed_runs(work: pathlib.Path, kills: int) -> dict:
    out = work / "killed-out"
    argv = [f"--transactions={SAMPLES}/transactions.jsonl",
            f"--metrics={SAMPLES}/metrics.jsonl", f"--output={out}", "--runner=DirectRunner"]
    first = _main(argv)
    if first is None or first.returncode != 0:
        return {"error": "the first run did not succeed"}
    previous = {name: _readers_see(out / name) for name in DATASETS}
    bad_reads, moments = [], []
    for index in range(kills):
        # killed when its first Parquet file is being written, then later and later
        delay = 0.25 * index
        run = subprocess.Popen([sys.executable, "-m", "realtime_ai.pipelines.main", *argv],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        while not _unfinished(out) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        still_running = run.poll() is None
        if still_running:
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        unfinished = _unfinished(out)
        moments.append({"after_first_write_s": delay, "was_running": still_running,
                        "unfinished_parquet_files_left": len(unfinished)})
        for path in unfinished:  # so that each kill counts its own
            path.unlink()
        seen = {name: _readers_see(out / name) for name in DATASETS}
        if seen != previous and still_running:
            bad_reads.append({"after_first_write_s": delay, "seen": seen})
        previous = seen  # a run that finished before its kill replaced the outputs whole
    return {"rows_seen": previous, "kills": moments, "partial_or_failed_reads": bad_reads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hostile-io-") as folder:
        work = pathlib.Path(folder)
        report = {"damaged_input_files": damaged_inputs(work),
                  "bad_inputs_and_outputs": bad_options(work),
                  "killed_mid_write": killed_runs(work, args.kills)}
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
