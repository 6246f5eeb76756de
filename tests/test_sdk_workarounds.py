"""The SDK worker workarounds: what the state cache weighs a key's state at."""
from apache_beam.runners.worker import statecache

from realtime_ai.core.features import customer_sequence
from realtime_ai.core.keyed import (
    KeyedStep,
    KeyState,
    OrderingSettings,
    encode_state,
    to_micros,
)
from realtime_ai.core.parsing import parse_transaction
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
