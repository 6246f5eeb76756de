"""python -m realtime_ai.samples generate --out DIR [--seed 7] ... (see --help)."""
from __future__ import annotations

import argparse
import gzip
import json
import pathlib
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from realtime_ai.samples.generate import generate, parse_start

FORMATS = ("jsonl", "jsonl.gz", "parquet")


def _write(rows: list[dict], path: pathlib.Path, fmt: str) -> None:
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
        return
    text = "".join(json.dumps(row, sort_keys=False) + "\n" for row in rows)
    if fmt == "jsonl.gz":
        # mtime=0 keeps the bytes identical across runs
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as fh:
            fh.write(text.encode())
    else:
        path.write_text(text)


def _write_stream(rows: list[dict], out: pathlib.Path, name: str, fmt: str,
                  shards: int) -> None:
    if shards == 1:
        _write(rows, out / f"{name}.{fmt}", fmt)
        return
    for shard in range(shards):
        _write(rows[shard::shards], out / f"{name}-{shard:03d}-of-{shards:03d}.{fmt}", fmt)


def generate_command(args: argparse.Namespace) -> None:
    samples = generate(args.seed, args.customers, parse_start(args.start), args.hours,
                       args.metrics_hours)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _write_stream(samples.transactions, out, "transactions", args.format, args.shards)
    _write_stream(samples.metrics, out, "metrics", args.format, args.shards)
    _write(samples.transaction_labels, out / "transactions_labels.jsonl", "jsonl")
    _write(samples.metric_labels, out / "metrics_labels.jsonl", "jsonl")
    print(f"wrote {len(samples.transactions)} transactions "
          f"({len(samples.transaction_labels)} labelled fraud) and {len(samples.metrics)} "
          f"metric values ({len(samples.metric_labels)} labelled anomalies) to {out}/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m realtime_ai.samples",
                                     description="Sample events for realtime-ai.")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="write seeded sample events and their labels")
    gen.add_argument("--out", required=True, help="output folder, e.g. samples/")
    gen.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    gen.add_argument("--customers", type=int, default=200, help="customers (default 200)")
    gen.add_argument("--hours", type=int, default=48, help="hours of transactions (default 48)")
    gen.add_argument("--metrics-hours", type=float, default=3.0,
                     help="hours of metrics, one value per metric every 10 s (default 3)")
    gen.add_argument("--start", default="2026-01-05T00:00:00Z",
                     help="first moment, ISO-8601 (default 2026-01-05T00:00:00Z)")
    gen.add_argument("--format", choices=FORMATS, default="jsonl",
                     help="jsonl (default), jsonl.gz or parquet")
    gen.add_argument("--shards", type=int, default=1,
                     help="split each stream over this many files (default 1)")
    gen.set_defaults(run=generate_command)
    args = parser.parse_args(argv)
    if getattr(args, "shards", 1) < 1:
        parser.error("--shards must be at least 1")
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
