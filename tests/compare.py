"""Comparing output datasets of two runs of the pipeline."""
import json

# Columns that legitimately differ between runs: streaming partition columns, model latency.
VARYING_COLUMNS = ("date", "hour", "llm_latency_ms")


def comparable_rows(table) -> list[dict]:
    """A table's rows without the varying columns, in a canonical order."""
    rows = [{k: v for k, v in row.items() if k not in VARYING_COLUMNS}
            for row in table.to_pylist()]
    return sorted(rows, key=lambda row: json.dumps(row, sort_keys=True, default=str))
