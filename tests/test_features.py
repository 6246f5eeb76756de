"""Pure tests of per-customer history and features."""
import math
from datetime import datetime, timedelta, timezone

import pytest

from realtime_ai.core.features import CustomerProfile
from realtime_ai.core.parsing import MAX_AMOUNT
from realtime_ai.core.records import Transaction

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)


def tx(i, amount=20.0, minutes=0.0, country="DE", category="groceries"):
    return Transaction(
        transaction_id=f"tx-{i}", customer_id="c1", amount=amount, currency="EUR",
        merchant="m", merchant_category=category, country=country, channel="pos",
        event_time=T0 + timedelta(minutes=minutes))


def test_first_transaction_has_neutral_features():
    features = CustomerProfile(10).features(tx(1))
    assert features.history_count == 0
    assert features.amount_zscore == 0.0
    assert features.velocity_1h == 0
    assert features.seconds_since_last is None
    assert features.new_country is False and features.new_merchant_category is False


def test_amount_spike_has_large_zscore_against_own_history():
    profile = CustomerProfile(50)
    for i in range(20):
        profile.advance(tx(i, amount=20.0 + (i % 5), minutes=i * 600))
    spike = profile.features(tx(99, amount=600.0, minutes=20 * 600))
    normal = profile.features(tx(98, amount=22.0, minutes=20 * 600))
    assert spike.amount_zscore > 20
    assert abs(normal.amount_zscore) < 1
    assert spike.history_count == 20
    assert spike.mean_amount == pytest.approx(22.0)


def test_velocity_counts_only_the_previous_hour():
    profile = CustomerProfile(50)
    for i, minutes in enumerate([0, 100, 130, 140, 150]):
        profile.advance(tx(i, amount=1.0, minutes=minutes))
    features = profile.features(tx(9, amount=1.0, minutes=160))
    assert features.velocity_1h == 4  # 100..150, not 0
    assert features.amount_1h == pytest.approx(4.0)
    assert features.seconds_since_last == 600.0


def test_new_country_and_category_against_kept_history():
    profile = CustomerProfile(3)
    profile.advance(tx(1, country="FR", category="crypto"))
    for i in range(2, 5):
        profile.advance(tx(i, minutes=i))
    features = profile.features(tx(9, country="FR", category="crypto", minutes=10))
    # FR/crypto fell out of the 3 kept transactions, so they count as new again
    assert features.new_country and features.new_merchant_category
    assert features.last_country == "DE"


def test_state_is_bounded_and_round_trips():
    profile = CustomerProfile(5)
    for i in range(100):
        profile.advance(tx(i, amount=float(i), minutes=i))
    saved = profile.saved()
    assert len(saved[3]) == 5
    restored = CustomerProfile.restore(5, saved)
    nxt = tx(200, amount=7.0, minutes=500)
    assert restored.features(nxt) == profile.features(nxt)


def test_constant_amounts_do_not_explode_zscore():
    profile = CustomerProfile(50)
    for i in range(10):
        profile.advance(tx(i, amount=10.0, minutes=i * 60))
    assert profile.features(tx(11, amount=10.5, minutes=700)).amount_zscore == pytest.approx(0.5)


def test_amounts_up_to_the_parse_limit_keep_every_statistic_finite():
    profile = CustomerProfile(50)
    for i in range(30):  # the widest spread there can be, several within each hour
        profile.advance(tx(i, amount=MAX_AMOUNT if i % 2 else 0.0, minutes=i * 10))
    features = profile.features(tx(99, amount=MAX_AMOUNT, minutes=300))
    numbers = [features.mean_amount, features.std_amount, features.amount_zscore,
               features.amount_1h]
    assert all(math.isfinite(n) for n in numbers), numbers
    assert features.amount_1h == pytest.approx(3 * MAX_AMOUNT)


def test_the_last_hour_takes_in_a_payment_exactly_an_hour_before_and_not_one_microsecond_more():
    profile = CustomerProfile(10)
    profile.advance(tx(1, amount=5.0, minutes=-60 - 1e-6 / 60))  # 1 h and 1 us before
    profile.advance(tx(2, amount=7.0, minutes=-60))  # exactly 1 h before
    profile.advance(tx(3, amount=11.0, minutes=0))  # the same moment
    features = profile.features(tx(4, amount=1.0, minutes=0))
    assert (features.velocity_1h, features.amount_1h) == (2, 18.0)
