"""What a batch run costs per event: records cross the job's shuffles as plain values.

Beam's FastPrimitivesCoder pickles anything that is not a plain value (lists, tuples, dicts,
text, numbers): a record pickled at a GroupByKey or a Flatten costs several times the CPU
of the rest of its trip (benchmarks/pipeline_cost.py measures the whole)."""
import collections
import gc
import itertools
import pathlib
import pickle

import pytest
from apache_beam.transforms.window import FixedWindows, GlobalWindows

from realtime_ai.pipelines.main import run

SAMPLES = pathlib.Path(__file__).resolve().parents[1] / "samples"
TRANSACTIONS, METRICS = 1000, 3000
DEFAULT_GC_THRESHOLD = (700, 10, 10)  # CPython's
# What one event may still carry across a shuffle: Beam samples the encoded size of a few
# elements of each output (fewer and fewer as more pass), and alerts and dead letters are
# joined from both streams.
PER_EVENT_TYPES = {"Transaction", "MetricRecord", "ScoredMetric", "FeaturedTransaction",
                   "datetime", "dict"}


def _head(name: str, lines: int, folder: pathlib.Path) -> str:
    path = folder / name
    with open(SAMPLES / name) as source:
        path.write_text("".join(itertools.islice(source, lines)))
    return str(path)


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory):
    """A main run on the first lines of samples/: (what was pickled by type, the garbage
    collector's thresholds after it, from CPython's defaults before, how many times a value
    was put in a fixed window, and in the global window)."""
    tmp_path = tmp_path_factory.mktemp("cost")
    pickled: collections.Counter = collections.Counter()
    dumps = pickle.dumps
    fixed_window_assignments, global_window_assignments = [0], [0]
    assign, assign_global = FixedWindows.assign, GlobalWindows.assign

    def counted(obj, *args, **kwargs):
        pickled[type(obj).__name__] += 1
        return dumps(obj, *args, **kwargs)

    def counted_assign(self, context):
        fixed_window_assignments[0] += 1
        return assign(self, context)

    def counted_assign_global(self, context):
        global_window_assignments[0] += 1
        return assign_global(self, context)

    saved_threshold = gc.get_threshold()
    gc.set_threshold(*DEFAULT_GC_THRESHOLD)
    # Beam's PickleCoder takes pickle.dumps when the worker builds its coders: in this
    # process on the DirectRunner.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pickle, "dumps", counted)
        patch.setattr(FixedWindows, "assign", counted_assign)
        patch.setattr(GlobalWindows, "assign", counted_assign_global)
        patch.delenv("OPENAI_API_KEY", raising=False)
        try:
            run([f"--transactions={_head('transactions.jsonl', TRANSACTIONS, tmp_path)}",
                 f"--metrics={_head('metrics.jsonl', METRICS, tmp_path)}",
                 f"--output={tmp_path / 'out'}", "--runner=DirectRunner"])
            threshold = gc.get_threshold()
        finally:
            gc.set_threshold(*saved_threshold)
    return pickled, threshold, fixed_window_assignments[0], global_window_assignments[0]


def test_a_batch_run_pickles_no_event_on_its_way(batch_run):
    pickled, _, _, _ = batch_run
    per_event = sum(pickled[name] for name in PER_EVENT_TYPES) / (TRANSACTIONS + METRICS)
    # 4.4 before records crossed the shuffles plain and rows were no longer flattened
    assert per_event < 0.5, pickled.most_common(8)


def test_a_batch_worker_runs_full_garbage_collections_rarely(batch_run):
    _, threshold, _, _ = batch_run
    assert threshold[2] >= 1000, threshold


def test_a_batch_run_finds_a_values_insight_window_as_it_lists_it(batch_run):
    # Beam's WindowInto costs ~30 us a value (FixedWindows.assign, its context, the window
    # argument bound afresh): the insight step keys values by window as it lists them for
    # the grouping (dashboard_insights.py); lists and groups are windowed, a few per window.
    # Windowed one by one, the values alone would take one each (5,229 in all, 1.31 a record).
    _, _, assignments, _ = batch_run
    assert assignments < TRANSACTIONS + METRICS, assignments


def test_a_batch_run_never_pickles_a_group_whole(batch_run):
    # Beam measures the size of a few outputs of every step, the first of each bundle among
    # them, with the output's coder: a key's group under FastPrimitivesCoder was pickled
    # whole for it (0.55 s of a 160k-record run); GroupedValuesCoder sizes it from one value.
    pickled, _, _, _ = batch_run
    assert not pickled["chain"] and not pickled["GroupedValues"], pickled.most_common(8)


def test_a_batch_run_puts_no_record_in_the_global_window_again(batch_run):
    # Once when it is read; then only the lists of the groupings are (a few per key or
    # window). A step that emits a TimestampedValue has Beam assign its window afresh
    # (GlobalWindows.assign makes a GlobalWindow, which parses its end from a proto constant
    # each time): the ordering step's outputs, and each dashboard's summary moved back to the
    # global window, took one each (10,742 assignments for these 4,000 records; 7,294 since).
    _, _, _, assignments = batch_run
    assert assignments < 2 * (TRANSACTIONS + METRICS), assignments
