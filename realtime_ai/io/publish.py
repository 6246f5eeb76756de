"""A batch run's outputs replace the previous ones only once it has written all of them.

The run writes its datasets into a staging folder of its own, `<output>/.in-progress/run-
<UTC time>-<id>/<name>/`, on the outputs' filesystem and outside every dataset folder. A last
step, which waits for every dataset's files, then replaces each dataset under the output by
the run's, one dataset at a time: it moves the new files in (over files of the same name) and
deletes the previous run's other files. A run that fails or is stopped before that step leaves
the previous outputs as they were; `discard_staging` removes what it wrote.

The step runs inside the job, so it also runs where the command does not wait for the job
(a Dataflow template); a retried step finds the files it already moved and goes on.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import AsList

from realtime_ai.io.parquet import dataset_files, dataset_path, make_folder, work_path


def new_staging_folder(output_dir: str) -> str:
    """A folder of one run's own under `output_dir`, outside every dataset folder."""
    run = f"run-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    return work_path(output_dir, run)


def _relative(path: str, folder: str) -> str:
    if not path.startswith(folder.rstrip("/") + "/"):
        raise ValueError(f"{path} is not under {folder}")  # never delete what we cannot place
    return path[len(folder.rstrip("/")) + 1:]


def replace_dataset(staged: str, final: str, written: list[str], replace: bool = True) -> None:
    """Move the files `written` under the `staged` dataset folder into the `final` one, then
    (`replace`) delete every other file of `final`."""
    targets = [FileSystems.join(final, _relative(path, staged)) for path in written]
    moves = []
    for path, target in zip(written, targets, strict=True):
        if FileSystems.exists(path):
            moves.append((path, target))
        elif not FileSystems.exists(target):  # else a retried step has moved it already
            raise FileNotFoundError(f"{path}, written by this run, is gone: not publishing")
    for folder in sorted({target.rsplit("/", 1)[0] for _, target in moves}):
        make_folder(folder)
    if moves:
        FileSystems.rename([path for path, _ in moves], [target for _, target in moves])
    if not replace:
        return
    kept = {_relative(target, final) for target in targets}
    stale = [path for path in dataset_files(final) if _relative(path, final) not in kept]
    if stale:
        FileSystems.delete(stale)


def publish_datasets(staging: str, output_dir: str, written: dict[str, list[str]],
                     replace: bool = True) -> None:
    """Replace each dataset under `output_dir` by the one the run wrote under `staging`, or
    (not `replace`: a redrive) add the run's files to it."""
    for name, paths in written.items():
        replace_dataset(dataset_path(staging, name), dataset_path(output_dir, name), paths,
                        replace)
    discard_staging(staging)


def discard_staging(staging: str) -> bool:
    """Remove a run's staging folder; whether it was there (the run had not published)."""
    files = dataset_files(staging)
    if files:
        FileSystems.delete(files)
    folder_left = FileSystems.exists(staging)  # local folders; object stores have none
    if folder_left:
        FileSystems.delete([staging])
    return bool(files) or folder_left


@beam.typehints.with_input_types(str)  # each dataset's PCollection of paths
class PublishDatasets(beam.PTransform):
    """{name: PCollection[path of a file written under `staging`]} -> nothing: once every
    dataset is written, each replaces the dataset of that name under `output_dir` (or, not
    `replace`, is added to it)."""

    def __init__(self, staging: str, output_dir: str, replace: bool = True):
        super().__init__()
        self._staging = staging
        self._output_dir = output_dir
        self._replace = replace

    def expand(self, written: dict):
        staging, output_dir, replace = self._staging, self._output_dir, self._replace
        names = sorted(written)
        return (
            next(iter(written.values())).pipeline
            | "Once" >> beam.Create([None])
            | "ReplaceDatasets" >> beam.Map(
                lambda _, *paths: publish_datasets(staging, output_dir,
                                                   dict(zip(names, paths, strict=True)),
                                                   replace),
                *[AsList(written[name]) for name in names])
        )
