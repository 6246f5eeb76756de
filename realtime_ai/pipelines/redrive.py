"""Dead letters through the pipeline again: `python -m realtime_ai.pipelines.redrive --help`.

    python -m realtime_ai.pipelines.redrive --dead_letter=out/run1/dead_letter \\
        --output=out/run1-redrive --llm_base_url=...   (and the main command's model options)

Model failures go back in at the step that failed, with the features and history, the
detector's score or the dashboard window they failed with (core/replay.py), so the model is
asked the same question as before; dead letters of the parser whose payload is now a valid
record (fixed by hand) go through every step. Rows, alerts and new dead letters are added to
--output beside what is there (files named redrive-TIME-*), in batch.

Idempotent: an event whose row under --output is already complete (an escalated transaction
with its analysis, an anomaly with its explanation, an insight) is not sent again, an event
dead-lettered several times goes once, and alert ids are deterministic (the same event, the
same alert_id). With --memo, an answer the model gave once is not paid for again either.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
import uuid

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from realtime_ai.core import replay
from realtime_ai.core.records import DATASET_KEYS
from realtime_ai.io.parquet import dataset_exists, dataset_path, read_dataset
from realtime_ai.pipelines import main as main_command
from realtime_ai.pipelines.options import (
    InvalidOptions,
    RealtimeAiOptions,
    options_parser,
    parse_options,
)

DEAD_LETTER_COLUMNS = ("source", "payload", "error")
# Columns of the outputs that say whether an event's row is complete: the event's key and
# what the model answered.
ANSWER_COLUMNS = {
    "transactions": [*DATASET_KEYS["transactions"], "escalated", "analysis"],
    "metrics": [*DATASET_KEYS["metrics"], "is_anomaly", "analysis"],
    "insights": [*DATASET_KEYS["insights"]],
}
PROG = "python -m realtime_ai.pipelines.redrive"
DESCRIPTION = ("Sends dead letters of earlier runs through the pipeline again: model failures "
               "and records fixed by hand. Idempotent: events already answered under --output "
               "are not sent again.")


def _add_dead_letter_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dead_letter", default=None,
        help="The dead_letter/ folder (local or gs://) of a run's --output. Required. "
             "Example: --dead_letter=out/run1/dead_letter")


def read_dead_letters(folder: str | None) -> list[dict]:
    """The dead letters under `folder`, or InvalidOptions saying what is wrong with it."""
    if not folder:
        raise InvalidOptions("--dead_letter is required: the dead_letter/ folder of a run, "
                             "e.g. --dead_letter=out/run1/dead_letter")
    if not FileSystems.exists(folder):
        raise InvalidOptions(f"--dead_letter={folder} does not exist")
    if not dataset_exists(folder):
        raise InvalidOptions(f"--dead_letter={folder} holds no files: give the dead_letter/ "
                             "folder of a run's --output")
    try:
        table = read_dataset(folder)
    except (OSError, pa.ArrowException) as error:
        raise InvalidOptions(f"--dead_letter={folder} is not a Parquet dataset: "
                             f"{str(error).splitlines()[0]}") from None
    missing = [name for name in DEAD_LETTER_COLUMNS if name not in table.column_names]
    if missing:
        raise InvalidOptions(f"--dead_letter={folder} is not a dead_letter dataset: no "
                             f"column {', '.join(missing)}")
    return table.to_pylist()


def answered_events(output: str) -> set[tuple]:
    """Events whose row under `output` is already complete (see replay.answered_events)."""
    rows = {}
    for name, columns in ANSWER_COLUMNS.items():
        path = dataset_path(output, name)
        rows[name] = (read_dataset(path).select(columns).to_pylist()
                      if dataset_exists(path) else [])
    return replay.answered_events(rows["transactions"], rows["metrics"], rows["insights"])


def plan(dead_letter: str | None, argv: list[str]) -> replay.RedrivePlan:
    """What to send again; InvalidOptions for options or folders a user must fix."""
    options = parse_options(argv, require_input=False)
    opts = options.view_as(RealtimeAiOptions)
    if opts.transactions or opts.metrics:
        raise InvalidOptions("the redrive reads only --dead_letter: drop --transactions and "
                             "--metrics")
    if options.view_as(StandardOptions).streaming:
        raise InvalidOptions("the redrive runs in batch: drop --streaming")
    return replay.plan_redrive(read_dead_letters(dead_letter), answered_events(opts.output))


def report(plan_made: replay.RedrivePlan) -> str:
    inputs = plan_made.inputs
    return (f"Redrive: {len(inputs)} event(s) sent again ("
            f"{len(inputs.featured)} transaction and {len(inputs.scored)} anomaly model "
            f"failures, {len(inputs.windows)} insights, {len(inputs.transaction_lines)} "
            f"transactions and {len(inputs.metric_lines)} metric values fixed by hand); "
            f"{plan_made.already_answered} already answered under --output; "
            f"{plan_made.not_replayable} not replayable (payload still invalid, or written "
            f"before dead letters kept their record)")


def _file_prefix() -> str:
    """Files of this redrive's own, beside those of the run and of earlier redrives."""
    return f"redrive-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "-h" in args or "--help" in args:
        parser = options_parser(prog=PROG, description=DESCRIPTION, epilog=main_command.HELP_EPILOG)
        _add_dead_letter_option(parser)
        parser.print_help()
        return 0
    own = argparse.ArgumentParser(add_help=False)
    _add_dead_letter_option(own)
    known, rest = own.parse_known_args(args)
    try:
        plan_made = plan(known.dead_letter, rest)
        result = None
        if len(plan_made.inputs):
            result = main_command.run(rest, plan_made.inputs, file_prefix=_file_prefix())
    except InvalidOptions as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report(plan_made))
    if result is not None:
        opts = PipelineOptions(rest).view_as(RealtimeAiOptions)
        print(main_command.summary(opts.output, result, with_shadow=bool(opts.shadow_fast_model)))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
