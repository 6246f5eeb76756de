"""Pure tests of the keyed, event-time-ordered step and its saved state (no Beam)."""
import json
import random

import pytest

from realtime_ai.core.features import CustomerProfile, customer_sequence
from realtime_ai.core.keyed import (
    KeyedStep,
    KeyState,
    OrderingSettings,
    SeenIds,
    decode_state,
    encode_state,
)
from tests.test_ordering import Rec, _tx, running_trace

SECOND = 1_000_000
END = 10**18  # a watermark past every record


def _step(lateness=10, ttl=1000, horizon=100):
    return KeyedStep(running_trace(), OrderingSettings.of_seconds(lateness, ttl, horizon))


def _entries(values):
    return [(v * SECOND, Rec(f"id-{v}", v)) for v in values]


def _stream(step, arrivals, watermarks):
    """Streaming as a runner would drive it: each arrival offered, then the timer fired at
    every watermark that passes the earliest waiting record; the state round-trips through
    its encoding between steps, as it does between bundles."""
    state, outputs, late = KeyState(), [], []
    for (micros, record), watermark in zip(arrivals, watermarks, strict=True):
        offer = step.offer(state, micros, record)
        if offer.output is not None:
            outputs.append(offer.output)
        if offer.late_seconds is not None:
            late.append(record.value)
        state = decode_state(encode_state(state))
        while state.flush_at is not None and state.flush_at <= watermark:
            outputs += [output for _, output in step.release(state, state.flush_at)]
            state = decode_state(encode_state(state))
    return outputs, late


def test_batch_run_sorts_and_drops_duplicates():
    processed = _step().run_sorted(_entries([3, 1, 2, 3, 1]))
    assert [output for _, output in processed.outputs] == [(1,), (1, 2), (1, 2, 3)]
    assert [micros for micros, _ in processed.outputs] == [SECOND, 2 * SECOND, 3 * SECOND]
    assert processed.duplicates == 2


@pytest.mark.parametrize("seed", range(5))
def test_streaming_with_shuffled_redelivered_arrivals_equals_batch(seed):
    rng = random.Random(seed)
    values = list(range(50))
    arrivals = _entries(values + rng.sample(values, 10))
    rng.shuffle(arrivals)
    # after each arrival the watermark is just behind the earliest record still to come
    watermarks = [min(micros for micros, _ in arrivals[i + 1:]) - 1
                  for i in range(len(arrivals) - 1)] + [END]
    outputs, late = _stream(_step(lateness=100, horizon=100), arrivals, watermarks)
    assert late == []
    assert outputs == [output for _, output in _step().run_sorted(arrivals).outputs]


def test_a_record_behind_the_frontier_is_used_within_the_lateness_and_late_beyond():
    step = _step(lateness=10)
    outputs, late = _stream(step, _entries([100, 95, 20]), [END] * 3)
    assert outputs == [(100,), (100, 95)]
    assert late == [20]


def test_redelivery_is_recognised_within_the_horizon_only():
    step = _step(lateness=10, horizon=100)
    arrivals = _entries([5, 50, 200, 5, 200])  # 5 again once it is 195 s behind: forgotten
    outputs, late = _stream(step, arrivals, [END] * len(arrivals))
    assert outputs == [(5,), (5, 50), (5, 50, 200)]
    assert late == [5]  # not processed twice: too late, so dead-lettered with the reason


def test_ids_are_forgotten_beyond_the_horizon_so_state_stays_bounded():
    step = _step(lateness=10, ttl=10**6, horizon=100)
    state = KeyState()
    for value in range(1000):
        step.offer(state, value * SECOND, Rec(f"id-{value}", value))
        step.release(state, value * SECOND)
    assert len(state.seen) <= 102


@pytest.mark.parametrize("seed", range(3))
def test_seen_ids_forget_the_oldest_pairs_up_to_the_first_new_enough(seed):
    # Insertion is nearly in event-time order: an older id after a newer one stays until
    # the newer one goes. Compared with a plain list of the pairs kept in insertion order.
    rng = random.Random(seed)
    seen, kept = SeenIds(), []
    for step in range(3000):
        micros = step * 10 + rng.randint(-30, 30)
        id_hash = rng.getrandbits(63)
        seen.add(id_hash, micros)
        kept.append((id_hash, micros))
        if rng.random() < 0.3:
            cutoff = micros - rng.randint(0, 400)
            seen.forget_before(cutoff)
            while kept and kept[0][1] < cutoff:
                kept.pop(0)
        assert len(seen) == len(kept)
    assert all(id_hash in seen for id_hash, _ in kept)
    assert seen == SeenIds(b"".join(id_hash.to_bytes(8, "little") + micros.to_bytes(
        8, "little", signed=True) for id_hash, micros in kept))
    assert SeenIds(seen.packed()) == seen


def test_idle_key_starts_afresh_after_the_ttl():
    processed = _step(lateness=0, ttl=100, horizon=0).run_sorted(_entries([0, 10, 500, 510]))
    assert [output for _, output in processed.outputs] == [(0,), (0, 10), (500,), (500, 510)]


def test_state_is_plain_versioned_json():
    step = KeyedStep(customer_sequence(5), OrderingSettings.of_seconds(10, 1000, 100))
    state = KeyState()
    for i in range(3):
        step.offer(state, i * SECOND, _tx(i, minutes=i))
    step.release(state, 1 * SECOND)
    encoded = encode_state(state)
    assert encoded.startswith(b"[2,")  # format version first
    restored = decode_state(encoded)
    assert restored.frontier == state.frontier and restored.waiting == state.waiting
    profile = CustomerProfile.restore(5, restored.saved)
    assert profile.recent == state.live.recent


# State written by format version 1 (a customer with one transaction processed and one
# waiting): it must stay readable, or a savepoint / Dataflow update would lose every history.
VERSION_1_STATE = (
    b'[1,[1,10.0,0.0,[["tx-000",10.0,"m","groceries","DE","pos",1767614400000000]]],'
    b'1767614400000000,1767614460000000,[[1767614460000000,["tx-001","c1",10.0,"EUR","m",'
    b'"groceries","DE","pos",1767614460000000]]],'
    b'"H4N9vy/u9B8AcGnMokcGAILAgGwHkCeIAPf8z6JHBgA="]')


def test_state_written_by_format_version_1_is_restored():
    state = decode_state(VERSION_1_STATE)
    step = KeyedStep(customer_sequence(5), OrderingSettings.of_seconds(10, 10**6, 100))
    outputs = step.release(state, state.flush_at)
    featured = outputs[0][1]
    assert featured.transaction.transaction_id == "tx-001"
    assert featured.features.history_count == 1 and featured.features.mean_amount == 10.0
    assert step.offer(state, state.frontier, featured.transaction).duplicate


def test_a_busy_key_is_released_a_step_at_a_time_not_per_timestamp():
    step = KeyedStep(running_trace(), OrderingSettings.of_seconds(10, 1000, 100,
                                                                  release_step=1.0))
    state = KeyState()
    timers = [step.offer(state, micros, record).set_timer
              for micros, record in [(100_000, Rec("a", 1)), (500_000, Rec("b", 2)),
                                     (900_000, Rec("c", 3)), (1_200_000, Rec("d", 4))]]
    assert timers == [SECOND, None, None, None]  # one timer for the first second
    outputs = step.release(state, SECOND)
    assert [output for _, output in outputs] == [(1,), (1, 2), (1, 2, 3)]
    assert [micros for micros, _ in outputs] == [100_000, 500_000, 900_000]
    assert state.flush_at == 2 * SECOND  # "d" waits for the next step


def test_a_day_of_ids_stays_small():
    step = _step(lateness=10, ttl=10**6, horizon=86400)
    state = KeyState()
    for i in range(8640):  # a metric every 10 s for a day
        step.offer(state, i * 10 * SECOND, Rec(f"2026-01-05T00:00:{i:05d}Z|{i}.5", i))
        step.release(state, i * 10 * SECOND)
    encoded = encode_state(state)
    assert len(encoded) < 250_000  # 16 bytes an id, not the ids' text
    assert decode_state(encoded).seen == state.seen
    # the ids are the bytes after the JSON, copied, not re-encoded at every write
    head, _, ids = encoded.partition(b"\n")
    assert json.loads(head)[0] == 2 and len(ids) == 16 * len(state.seen)


def test_unknown_state_version_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="format 99 is not one this code reads"):
        decode_state(b"[99]")


def test_expiry_timer_looks_again_until_the_key_has_been_idle_for_the_ttl():
    step = _step(lateness=0, ttl=100, horizon=0)
    state = KeyState()
    step.offer(state, 10 * SECOND, Rec("a", 10))
    assert step.expiry_check(state, 50 * SECOND) == 150 * SECOND  # waiting: not idle
    step.release(state, END)
    # armed at the first release (110 s); the key moved on to 60 s since
    step.offer(state, 60 * SECOND, Rec("b", 60))
    step.release(state, END)
    assert step.expiry_check(state, 110 * SECOND) == 160 * SECOND
    assert step.expiry_check(state, 160 * SECOND) is None


def test_the_encoded_size_is_remembered_for_the_runners_cache():
    state = KeyState()
    _step().offer(state, SECOND, Rec("a", 1))
    assert state.encoded_size is None
    data = encode_state(state)
    assert state.encoded_size == len(data)
    assert decode_state(data).encoded_size == len(data)
    assert state.copy().encoded_size == len(data)
