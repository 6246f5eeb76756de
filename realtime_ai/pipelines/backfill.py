"""Reprocess history with the same pipeline: `python -m realtime_ai.pipelines.backfill --help`.

    python -m realtime_ai.pipelines.backfill --transactions_root=gs://bucket/transactions \\
        --metrics_root=gs://bucket/metrics --from=2026-01-01 --to=2026-01-31 \\
        --output=gs://bucket/backfill [any main-command option, e.g. --runner=DataflowRunner]

Input layout: one folder per day under each root, named `YYYY-MM-DD` or `dt=YYYY-MM-DD`,
holding JSON lines (optionally .gz) or Parquet files; days without a folder are skipped.
Outputs go to `OUTPUT/FROM_TO/` (e.g. `backfill/2026-01-01_2026-01-31/alerts/`): a run over
the same range that succeeds replaces that folder's datasets, never adds to them. Alerts are
written to files only; they are published when --alerts_topic is given, as in the main
command.
"""
from __future__ import annotations

import argparse
import logging
import sys
from datetime import date, timedelta

from apache_beam.io.filesystems import FileSystems

from realtime_ai.pipelines import main as main_command
from realtime_ai.pipelines.options import InvalidOptions

DAY_FOLDER_FORMS = ("{day}", "dt={day}")  # the dated layouts we read, per root
MAX_DAYS = 3660


def days_between(first: date, last: date) -> list[date]:
    """Every day from `first` to `last`, both included; InvalidOptions when inverted."""
    if last < first:
        raise InvalidOptions(f"--to={last} is before --from={first}")
    if (last - first).days >= MAX_DAYS:
        raise InvalidOptions(f"--from={first} --to={last} spans more than {MAX_DAYS} days")
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


def day_globs(root: str, days: list[date], has_files) -> list[str]:
    """The globs of the day folders under `root` that hold files (`has_files(glob)`)."""
    globs = []
    for day in days:
        for form in DAY_FOLDER_FORMS:
            pattern = FileSystems.join(root, form.format(day=day.isoformat()), "*")
            if has_files(pattern):
                globs.append(pattern)
    return globs


def range_folder(output: str, first: date, last: date) -> str:
    return FileSystems.join(output, f"{first.isoformat()}_{last.isoformat()}")


def _has_files(pattern: str) -> bool:
    try:
        return bool(FileSystems.match([pattern])[0].metadata_list)
    except (OSError, ValueError):  # no such folder on this filesystem
        return False


def _parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text}") from None


class _Parser(argparse.ArgumentParser):
    # A bad or missing argument is one `error: ...` line, as in the main command.
    def error(self, message):
        raise InvalidOptions(message.removeprefix("argument "))


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m realtime_ai.pipelines.backfill",
        description="Reprocess dated event folders with the realtime-ai pipeline; other "
                    "options are passed to the main command (see its --help).")
    parser.add_argument("--transactions_root", help="folder of YYYY-MM-DD/ (or dt=YYYY-MM-DD/) "
                        "transaction folders, local or gs://")
    parser.add_argument("--metrics_root", help="the same for metric records")
    parser.add_argument("--from", dest="first", required=True, type=_parse_day,
                        help="first day, YYYY-MM-DD")
    parser.add_argument("--to", dest="last", required=True, type=_parse_day,
                        help="last day, YYYY-MM-DD (included)")
    parser.add_argument("--output", required=True,
                        help="the range's datasets go to OUTPUT/FROM_TO/")
    return parser


def backfill_argv(argv: list[str]) -> tuple[list[str], str]:
    """The main command's arguments for a backfill command line, and the output folder."""
    args, passed_on = _parser().parse_known_args(argv)
    if not args.transactions_root and not args.metrics_root:
        raise InvalidOptions("nothing to read: give --transactions_root, --metrics_root or both")
    days = days_between(args.first, args.last)
    main_argv = []
    for name, root in (("transactions", args.transactions_root),
                       ("metrics", args.metrics_root)):
        if not root:
            continue
        globs = day_globs(root, days, _has_files)
        if not globs:
            raise InvalidOptions(f"no day folder with files under --{name}_root={root} from "
                                 f"{args.first} to {args.last} (expected ROOT/YYYY-MM-DD/ or "
                                 "ROOT/dt=YYYY-MM-DD/)")
        print(f"{name}: {len(globs)} day folder(s) of {len(days)} day(s): "
              f"{globs[0]} ... {globs[-1]}", flush=True)
        main_argv.append(f"--{name}={','.join(globs)}")
    output = range_folder(args.output, args.first, args.last)
    return [*main_argv, f"--output={output}", *passed_on], output


def main(argv: list[str] | None = None) -> int:
    try:
        main_argv, output = backfill_argv(sys.argv[1:] if argv is None else argv)
    except InvalidOptions as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"writing {output}/ (replacing what an earlier run of this range wrote, once this "
          "run succeeds)", flush=True)
    return main_command.main(main_argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
