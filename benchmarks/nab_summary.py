"""After `make nab`: alerts per 10,000 values in the pipeline's metrics/ output.

    python benchmarks/nab_summary.py out/nab/metrics
"""
import sys

import pyarrow.parquet as pq

table = pq.read_table(sys.argv[1], columns=["is_anomaly"])
flagged = sum(table.column("is_anomaly").to_pylist())
print(f"alerts per 10,000 values: {10_000 * flagged / table.num_rows:.2f} "
      f"({flagged} of {table.num_rows} values flagged)")
