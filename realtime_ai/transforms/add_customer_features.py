"""Per-customer history in Beam state: each transaction gets features from its customer's past."""
from __future__ import annotations

import apache_beam as beam

from realtime_ai.core.features import customer_sequence
from realtime_ai.core.keyed import KeyedStep, OrderingSettings
from realtime_ai.core.records import FeaturedTransaction, Transaction
from realtime_ai.transforms.keyed_in_order import InEventTimeOrder


def _customer(tx) -> str:
    return tx.customer_id


@beam.typehints.with_input_types(Transaction)
class AddCustomerFeatures(InEventTimeOrder):
    """PCollection[Transaction] -> Ordered(outputs=FeaturedTransaction, dead_letter), per
    customer in event-time order, once per transaction_id, keeping the last `history_size`
    transactions and lifetime aggregates in state (forgotten after the state TTL idle)."""

    def __init__(self, history_size: int, settings: OrderingSettings):
        super().__init__("transactions", _customer,
                         KeyedStep(customer_sequence(history_size), settings),
                         FeaturedTransaction)
