"""Workarounds for the Python SDK worker itself (every runner runs it), each with its reason.

Called from the `setup` of the DoFns that need them, so they take effect in worker processes
on any runner (Dataflow, Flink, Prism, the DirectRunner's embedded worker); from where the
pipeline is built, one for the launcher (`remembered_dofn_specs`) and `prompt_bundle_ends`
for the runners whose worker runs in the launcher's process.
"""
from __future__ import annotations

import gc
import threading
import weakref

import objsize
from apache_beam.runners.worker import bundle_processor, statecache, statesampler
from apache_beam.transforms import userstate

from realtime_ai.core.keyed import KeyState

_lock = threading.Lock()
_applied = False
_commits_pipelined = False


def _deep_size_without_module_walk(*objs) -> int:
    # Beam's own sizing, less objsize's default `exclude_modules_globals`: that collects the
    # globals of every loaded module on each call (1.3 ms with the ~2,500 modules a worker
    # loads). Beam's filter already skips modules, classes and functions, so plain state
    # values measure the same.
    return objsize.get_deep_size(
        *objs, get_size_func=statecache._size_func,
        get_referents_func=statecache._get_referents_func,
        filter_func=statecache._filter_func, exclude_modules_globals=False)


# Bytes a KeyState holds in memory per byte of its encoding, by Beam's own sizing on the
# samples' keys: 6.0 for customers, 4.8 for metrics.
KEY_STATE_BYTES_PER_ENCODED_BYTE = 6
_LIST_BYTES = 64


def _state_cache_weight(*objs) -> int:
    # The cache holds a state cell as the list of its values; a KeyState cell (our only one in
    # streaming) is weighed by the length of its latest encoding or decoding. Beam puts a
    # written value in the cache before encoding it, so that is the previous write's length:
    # close enough, as a key's state grows a record at a time.
    weight = 0
    for obj in objs:
        if type(obj) is not list or not all(
                type(item) is KeyState and item.encoded_size for item in obj):
            return _deep_size_without_module_walk(*objs)
        weight += _LIST_BYTES + sum(KEY_STATE_BYTES_PER_ENCODED_BYTE * item.encoded_size
                                    for item in obj)
    return weight


def cheap_state_cache_sizing() -> None:
    """Makes the SDK worker's state cache weigh a key's state in microseconds, other values in
    ~0.1 ms instead of ~1.3 ms.

    Beam sizes every value it puts in its user-state cache (each state write at the end of a
    bundle, each read that misses). With the default sizing that was half the CPU of this
    pipeline in streaming (several cache puts per key per bundle at 1.3 ms each); without the
    module walk it was still a quarter of the per-customer step on Flink (py-spy at 330
    events/s: objsize walking each KeyState, its history and its seen ids).
    """
    global _applied
    with _lock:
        if not _applied:
            statecache.get_deep_size = _state_cache_weight
            _applied = True


def _commit_requests(state) -> list | None:
    """Sends what Beam's commit of `state` sends (a bag's clear, then its additions; a
    read-modify-write cell is such a bag), without waiting for the answers: their futures.
    None for any other kind of state, committed as Beam does."""
    bag = (state._underlying_bag_state
           if type(state) is bundle_processor.ReadModifyWriteRuntimeState else state)
    if type(bag) is not bundle_processor.SynchronousBagRuntimeState:
        return None
    futures = []
    if bag._cleared:
        futures.append(bag._state_handler.clear(bag._state_key))
    if bag._added_elements:
        futures.append(bag._state_handler.extend(
            bag._state_key, bag._value_coder.get_impl(), bag._added_elements))
    return futures


def _pipelined_commit(context) -> None:
    pending = []
    for state in context._all_states.values():
        futures = _commit_requests(state)
        if futures is None:
            state.commit()
        else:
            pending.extend(futures)
    for future in pending:
        future.get()


def pipelined_state_commits() -> None:
    """Makes the SDK worker send a bundle's state writes for all its keys before waiting for
    the runner's answers, not one key's write and its answer after another.

    Beam (2.77) commits a stateful step's bundle key by key, waiting for each key's last
    state request to be answered before sending the next key's. The per-customer step writes
    the cell of every customer it saw or released in a bundle (a hundred or more at 330
    events/s), so each of its bundles waited that many round trips to the runner in a row:
    on Flink each is a hop to the TaskManager and back, and under load each wait for an
    answer is a wake-up of the bundle thread behind the worker's other threads. The requests
    are the same and in the same order on the one state stream (a runner answers them in
    that order, as it does the clear and the append Beam sends for one key without waiting);
    the bundle still ends only once every one is answered."""
    global _commits_pipelined
    with _lock:
        if not _commits_pipelined:
            bundle_processor.FnApiUserStateContext.commit = _pipelined_commit
            _commits_pipelined = True


# Longest sleep of Beam's state sampler thread between two samples, in ms (Beam's: 200).
STATE_SAMPLING_PERIOD_MS = 10


def prompt_bundle_ends() -> None:
    """Makes a bundle end when its work is done, not up to 200 ms later.

    Beam (2.77) times a bundle's steps with a sampler thread started for the bundle, which
    sleeps between samples, each sleep 1.2 times the last, from 2 ms up to 200 ms; the bundle
    ends by joining that thread, so it waits out the sleep in progress: about a tenth of the
    bundle's length on average, up to 200 ms once a bundle runs a second. Every stage on every
    runner pays it, one stage after another: with this, the DirectRunner's `make run` took
    5.6-6.7 s against 7.2-8.0 s (three runs each, alternating). Samplers made afterwards sleep
    at most STATE_SAMPLING_PERIOD_MS (a hundred wake-ups a second of a running bundle,
    microseconds each); each step's measured time is as before, in finer steps. A worker makes
    a sampler with each stage's bundle processor, before it loads the stage's DoFns, and
    reuses it: those made before the first call keep Beam's period. On Flink at 330 events/s
    (one run, the period drawn at random per processor), the worker with the longer bundles
    waited 70 ms a bundle for the join with Beam's period, 15 ms with this."""
    init = statesampler.StateSampler.__init__
    if init.__defaults__ == (statesampler.DEFAULT_SAMPLING_PERIOD_MS,):
        init.__defaults__ = (STATE_SAMPLING_PERIOD_MS,)


# Young (generation 1) collections between two full ones; CPython's default is 10.
FULL_COLLECTION_EVERY = 1000


def rarer_full_collections() -> None:
    """Makes the cyclic garbage collector's full collections 100 times rarer in this worker.

    A batch worker holds every record of a grouping at once (the runner's buffers, a key's
    group), millions of long-lived objects that each full collection walks again: at 160k
    records 35 full collections took 4.1 s of the job's 66 s of CPU; with this, one took
    0.14 s, for the same peak memory (reference counting frees almost everything; young
    collections still free new cycles). Only ever raises the setting."""
    young, middle, full = gc.get_threshold()
    if full < FULL_COLLECTION_EVERY:
        gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


_dofn_specs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_inspect_dofn_specs = userstate.get_dofn_specs


def _remembered_dofn_specs(dofn) -> tuple[set, set]:
    try:
        specs = _dofn_specs.get(dofn)
        if specs is None:
            specs = _dofn_specs[dofn] = _inspect_dofn_specs(dofn)
    except TypeError:  # neither hashable nor weakly referable: inspected every time
        specs = _inspect_dofn_specs(dofn)
    return set(specs[0]), set(specs[1])


def remembered_dofn_specs() -> None:
    """Makes Beam inspect each DoFn's methods for state and timers once, not at every ask.

    `userstate.get_dofn_specs` takes the signature of every method of a DoFn (about 30 each,
    from `dir`), and Beam asks it of the same DoFn about eight times as it builds, translates
    and runs a pipeline: 1.1-1.5 s of the 10-12 s of CPU of a 20,000-record batch run of this
    job, before it reads a record. A DoFn's methods do not change once it is applied."""
    userstate.get_dofn_specs = _remembered_dofn_specs
