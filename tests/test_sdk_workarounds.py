"""The SDK workarounds: what the state cache weighs a key's state at; DoFns inspected once;
a bundle's state writes sent together."""
import inspect
import time
import weakref

import apache_beam as beam
from apache_beam import coders
from apache_beam.coders.coders import GlobalWindowCoder
from apache_beam.runners.worker import bundle_processor, statecache, statesampler
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    SetStateSpec,
)
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.counters import CounterFactory

from realtime_ai.core.features import customer_sequence
from realtime_ai.core.keyed import (
    KeyedStep,
    KeyState,
    OrderingSettings,
    encode_state,
    to_micros,
)
from realtime_ai.core.parsing import parse_transaction
from realtime_ai.pipelines.main import build_pipeline
from realtime_ai.pipelines.options import parse_options
from realtime_ai.transforms import sdk_workarounds
from tests.test_degraded_mode import SAMPLES


def _customer_states():
    step = KeyedStep(customer_sequence(50), OrderingSettings.of_seconds(3600, 86400, 86400))
    states: dict[str, KeyState] = {}
    with open(SAMPLES / "transactions.jsonl") as fh:
        for line in fh:
            tx = parse_transaction(line, 100_000)
            state = states.setdefault(tx.customer_id, KeyState())
            step.offer(state, to_micros(tx.event_time), tx)
    for state in states.values():
        step.release(state, 10**18)
        encode_state(state)
    return list(states.values())


def test_a_key_state_is_weighed_by_its_encoding_not_by_walking_it():
    state = KeyState(saved={"history": list(range(100_000))})
    state.encoded_size = 1000
    assert sdk_workarounds._state_cache_weight([state]) == 64 + 6 * 1000


def test_the_weight_stays_close_to_beams_own_sizing():
    states = _customer_states()[:50]
    ours = sum(sdk_workarounds._state_cache_weight([state]) for state in states)
    beams = sum(statecache.get_deep_size([state]) for state in states)
    assert 0.8 < ours / beams < 1.5


def test_other_values_and_unencoded_states_are_still_walked():
    assert sdk_workarounds._state_cache_weight([b"x" * 10_000]) > 10_000
    assert sdk_workarounds._state_cache_weight([KeyState(saved=list(range(1000)))]) > 8000


def test_building_and_translating_the_job_inspects_each_dofn_once(monkeypatch):
    monkeypatch.setattr(sdk_workarounds, "_dofn_specs", weakref.WeakKeyDictionary())
    inspected: dict[int, int] = {}
    inspect_specs = sdk_workarounds._inspect_dofn_specs

    def counted(dofn):
        inspected[id(dofn)] = inspected.get(id(dofn), 0) + 1
        return inspect_specs(dofn)

    monkeypatch.setattr(sdk_workarounds, "_inspect_dofn_specs", counted)
    signatures = [0]
    signature = inspect.signature

    def counted_signature(*args, **kwargs):
        signatures[0] += 1
        return signature(*args, **kwargs)

    monkeypatch.setattr(inspect, "signature", counted_signature)
    pipeline = beam.Pipeline(options=parse_options([
        f"--transactions={SAMPLES / 'transactions.jsonl'}",
        f"--metrics={SAMPLES / 'metrics.jsonl'}", "--output=unused", "--runner=DirectRunner"]))
    build_pipeline(pipeline, pipeline.options)
    translated = pipeline.to_runner_api()
    pardos = sum(transform.spec.urn == "beam:transform:pardo:v1"
                 for transform in translated.components.transforms.values())
    assert set(inspected.values()) == {1}
    # 205 a ParDo when Beam inspected a DoFn's ~30 methods each time it asked; 55 now
    assert signatures[0] / pardos < 100, (signatures[0], pardos)


class _RecordingStateHandler:
    """Logs the state requests sent and the waits for their answers, in order."""

    def __init__(self):
        self.log: list[str] = []

    def clear(self, state_key):
        return self._sent(f"clear {state_key.bag_user_state.user_state_id}")

    def extend(self, state_key, coder, elements):
        return self._sent(f"append {state_key.bag_user_state.user_state_id} {list(elements)}")

    def _sent(self, request: str):
        self.log.append(request)
        log = self.log

        class Answer:
            def get(self):
                log.append(f"wait for {request}")
        return Answer()


def test_a_bundles_state_writes_are_all_sent_before_any_answer_is_awaited():
    sdk_workarounds.pipelined_state_commits()
    handler = _RecordingStateHandler()
    context = bundle_processor.FnApiUserStateContext(
        handler, "step", coders.StrUtf8Coder(), GlobalWindowCoder())
    cell = ReadModifyWriteStateSpec("cell", coders.VarIntCoder())
    for value, key in enumerate(("a", "b")):
        context.get_state(cell, key, GlobalWindow()).write(value)
    context.get_state(BagStateSpec("bag", coders.VarIntCoder()), "a", GlobalWindow()).add(7)
    context.get_state(cell, "c", GlobalWindow())  # not written: nothing to send
    context.commit()
    sent = ["clear cell", "append cell [0]", "clear cell", "append cell [1]", "append bag [7]"]
    assert handler.log == sent + [f"wait for {request}" for request in sent]


def test_state_of_other_kinds_is_committed_as_beam_does(monkeypatch):
    # Beam's set state compacts itself (a read) on a coin toss as it is added to: never here.
    monkeypatch.setattr(bundle_processor.random, "random", lambda: 0.0)
    sdk_workarounds.pipelined_state_commits()
    handler = _RecordingStateHandler()
    context = bundle_processor.FnApiUserStateContext(
        handler, "step", coders.StrUtf8Coder(), GlobalWindowCoder())
    context.get_state(SetStateSpec("set", coders.VarIntCoder()), "a", GlobalWindow()).add(3)
    context.commit()
    assert handler.log == ["append set [3]", "wait for append set [3]"]


def test_a_bundle_that_ran_a_second_ends_without_waiting_out_the_samplers_sleep(monkeypatch):
    # Beam's sampler sleeps up to 200 ms between samples by then, and the bundle's end joins
    # it: about 100 ms a bundle on average, 500 ms over these five (under 150 ms about three
    # times in a thousand). With the workaround each join waits at most 10 ms.
    # Beam's default restored after the test (monkeypatch notes the value it replaces).
    monkeypatch.setattr(statesampler.StateSampler.__init__, "__defaults__",
                        statesampler.StateSampler.__init__.__defaults__)
    sdk_workarounds.prompt_bundle_ends()
    joins = 0.0
    for bundle in range(5):
        sampler = statesampler.StateSampler(f"bundle-{bundle}", CounterFactory())
        sampler.start()
        time.sleep(1.0)
        started = time.monotonic()
        sampler.stop_if_still_running()
        joins += time.monotonic() - started
    assert joins < 0.15
