"""Per-customer history in Beam state: each transaction gets features from its customer's past."""
from __future__ import annotations

import functools

import apache_beam as beam

from realtime_ai.records import Transaction
from realtime_ai.transforms.features import CustomerProfile, transaction_order
from realtime_ai.transforms.ordering import KeyedSequence, OrderedByKey
from realtime_ai.transforms.outputs import late_dead_letter


def _customer_sequence(history_size: int) -> KeyedSequence:
    return KeyedSequence(
        restore=functools.partial(CustomerProfile.restore, history_size),
        advance=CustomerProfile.advance,
        save=CustomerProfile.saved,
        order_key=transaction_order,
    )


class AddCustomerFeatures(beam.PTransform):
    """PCollection[Transaction] -> (PCollection[FeaturedTransaction], late dead letters), per
    customer in event-time order, keeping the last `history_size` transactions and lifetime
    aggregates in state (forgotten after `state_ttl_seconds` idle)."""

    def __init__(self, history_size: int, streaming: bool, allowed_lateness_seconds: float,
                 state_ttl_seconds: float):
        super().__init__()
        self._history_size = history_size
        self._ordering = (streaming, allowed_lateness_seconds, state_ttl_seconds)

    def expand(self, transactions):
        ordered = (
            transactions
            | "KeyByCustomer" >> beam.Map(lambda tx: (tx.customer_id, tx)).with_output_types(
                tuple[str, Transaction])
            | "CustomerHistory" >> OrderedByKey(
                _customer_sequence(self._history_size), *self._ordering)
        )
        lateness = self._ordering[1]
        late = ordered.late | "LateTransactions" >> beam.MapTuple(
            lambda tx, behind: late_dead_letter("transactions", tx, behind, lateness))
        return ordered.outputs, late
