"""Past alerts as context (--past_alerts): an earlier run's alerts, retrieved for the deep
analysis of a risky transaction: the same customer's first, unrelated ones never."""
import functools
from datetime import datetime, timedelta, timezone

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from realtime_ai.core.records import (
    ALERTS_SCHEMA,
    FeaturedTransaction,
    Transaction,
    TransactionFeatures,
)
from realtime_ai.io.parquet import dataset_rows
from realtime_ai.llm import base, local_model, retrieval, tasks
from realtime_ai.llm.base import LlmConfig
from realtime_ai.transforms.enrich_transactions import EnrichTransactions
from realtime_ai.transforms.playbook_context import WorkerPastAlerts

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
SAME_CUSTOMER = "c1 was tested with small online payments at an arcade: card testing"
UNRELATED = "a 9000 EUR jewellery purchase far above the usual spend: amount spike"


def _alert(number: int, customer: str | None, summary: str, hours_before: float = 24.0,
           kind: str = "transaction", subject: str | None = None) -> dict:
    return {"alert_id": f"tra-{number}", "kind": kind, "subject": subject or f"old-{number}",
            "severity": "high", "event_time": T0 - timedelta(hours=hours_before),
            "summary": summary, "customer_id": customer}


def _alerts() -> list[dict]:
    # alerts of other customers and patterns around them, as a real dataset has
    filler = [_alert(100 + i, f"other-{i}", f"tx-{i}: {10 + i} USD at shop-{i} (groceries) "
                     "looks like new merchant category")
              for i in range(12)]
    return [*filler,
            _alert(1, "c1", SAME_CUSTOMER),
            _alert(2, "c9", UNRELATED),
            _alert(3, "c1", "c1 again, raised after the payment asked about", hours_before=-1),
            _alert(4, "c1", "the payment asked about itself, in an earlier run",
                   subject="tx-travel"),
            _alert(5, None, "api.latency_ms=900: c1 nothing to do with it", kind="metric")]


def _travel() -> FeaturedTransaction:
    """An hour after a purchase in Germany, one in Brazil: impossible travel (risk 0.92)."""
    tx = Transaction("tx-travel", "c1", 40.0, "EUR", "Cafe Uno", "restaurants", "BR",
                     "in_store", T0)
    features = TransactionFeatures(
        history_count=12, mean_amount=38.0, std_amount=6.0, amount_zscore=0.33, velocity_1h=0,
        amount_1h=0.0, seconds_since_last=3600.0, new_country=True,
        new_merchant_category=False, last_country="DE")
    return FeaturedTransaction(tx, features, ())


def test_the_same_customers_alert_is_found_and_an_unrelated_one_is_not():
    past = retrieval.PastAlerts(_alerts())
    found = past.relevant("Cafe Uno restaurants in_store new country travel", "c1", T0,
                          "tx-travel")
    assert [(a["alert_id"], a["same_customer"]) for a in found] == [("tra-1", True)]
    assert found[0]["summary"] == SAME_CUSTOMER
    # another customer's alert of the same pattern is found too, after the customer's own
    pattern = past.relevant("jewellery amount spike", "c1", T0, "tx-travel")
    assert [a["alert_id"] for a in pattern] == ["tra-1", "tra-2"]
    assert past.relevant("Cafe Uno restaurants", "nobody", T0, "tx-x") == []


def test_only_the_most_recent_alerts_are_kept():
    alerts = [_alert(i, f"c{i}", f"alert {i}", hours_before=100 - i) for i in range(50)]
    past = retrieval.PastAlerts(iter(alerts), max_alerts=10)
    assert len(past) == 10
    assert past.relevant("alert", "c45", T0, "x")[0]["alert_id"] == "tra-45"
    assert not any(a["same_customer"] for a in past.relevant("alert", "c5", T0, "x"))


def test_an_alerts_dataset_without_customer_id_is_still_read(tmp_path):
    table = pa.Table.from_pylist(_alerts(), schema=ALERTS_SCHEMA).drop_columns(["customer_id"])
    (tmp_path / "alerts").mkdir()
    pq.write_table(table, tmp_path / "alerts" / "part-0.parquet")
    rows = list(dataset_rows(str(tmp_path / "alerts"), retrieval.PAST_ALERT_COLUMNS,
                             retrieval.REQUIRED_PAST_ALERT_COLUMNS))
    assert len(rows) == len(_alerts()) and {row["customer_id"] for row in rows} == {None}


SEEN: list[dict] = []  # the deep analysis data the local model was asked with


def _seen_analysis(data):
    SEEN.append(data)
    return local_model.transaction_analysis(data)


def test_the_deep_prompt_holds_the_customers_past_alert(tmp_path, monkeypatch):
    (tmp_path / "alerts").mkdir()
    pq.write_table(pa.Table.from_pylist(_alerts(), schema=ALERTS_SCHEMA),
                   tmp_path / "alerts" / "part-0.parquet")
    past = WorkerPastAlerts(str(tmp_path / "alerts"), functools.partial(
        dataset_rows, columns=retrieval.PAST_ALERT_COLUMNS))
    monkeypatch.setitem(local_model.ANSWERS, base.TRANSACTION_ANALYSIS, _seen_analysis)
    SEEN.clear()
    with TestPipeline() as p:
        _rows, alerts, _dead, _scored = p | beam.Create([_travel()]) | EnrichTransactions(
            LlmConfig(backend="local"), 0.8, past_alerts=past)
        assert_that(alerts | beam.Map(lambda a: (a["subject"], a["customer_id"])),
                    equal_to([("tx-travel", "c1")]))
    assert len(SEEN) == 1
    assert [a["alert_id"] for a in SEEN[0]["past_alerts"]] == ["tra-1"]
    prompt = tasks.build_messages(base.TRANSACTION_ANALYSIS, SEEN[0])[1]["content"]
    assert SAME_CUSTOMER[:60] in prompt and UNRELATED[:40] not in prompt
