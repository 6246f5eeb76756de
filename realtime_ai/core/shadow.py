"""The shadow model (--shadow_fast_model): which transactions it is asked about, the row
comparing its answer with the fast model's, and the end-of-run summary. Pure: no Beam.

The sample is chosen from the transaction id alone (a hash, not Python's per-process `hash`),
so a batch run, a streaming run and a replay of the same events compare the same ones.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from realtime_ai.core.records import FeaturedTransaction
from realtime_ai.core.rows import is_high_risk
from realtime_ai.llm.base import LlmPermanentError, LlmResult

_SAMPLE_SALT = b"realtime-ai shadow sample\0"
_HASH_RANGE = 2 ** 64


def in_sample(event_id: str, share: float) -> bool:
    """Whether the event is in the shadow sample of `share` (0..1): the same answer in every
    process, run and runner; a larger share keeps every event of a smaller one."""
    digest = hashlib.sha256(_SAMPLE_SALT + event_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") < share * _HASH_RANGE


def shadow_row(featured: FeaturedTransaction, primary: LlmResult,
               shadow: LlmResult | LlmPermanentError, shadow_model: str,
               threshold: float) -> dict:
    """One row of the shadow/ dataset (records.SHADOW_SCHEMA). `shadow` is the shadow
    model's answer, or why it gave none (`shadow_model` names it then)."""
    tx = featured.transaction
    primary_risk = float(primary.answer["risk_score"])
    row = {
        "transaction_id": tx.transaction_id,
        "customer_id": tx.customer_id,
        "event_time": tx.event_time,
        "primary_model": primary.model,
        "primary_risk": primary_risk,
        "primary_escalates": is_high_risk(primary, threshold),
        "shadow_model": shadow_model,
        "shadow_risk": None,
        "shadow_escalates": None,
        "risk_difference": None,
        "compared": False,
        "escalation_agrees": None,
        "failure": None,
        "prompt_version": primary.prompt_version,
        "primary_latency_ms": primary.latency_ms,
        "shadow_latency_ms": shadow.latency_ms,
    }
    if isinstance(shadow, LlmPermanentError):
        row["failure"] = f"shadow model failed: {shadow.reason}"
        return row
    shadow_risk = float(shadow.answer["risk_score"])
    row.update(shadow_model=shadow.model, shadow_risk=shadow_risk,
               shadow_escalates=is_high_risk(shadow, threshold),
               risk_difference=round(shadow_risk - primary_risk, 6),
               prompt_version=primary.prompt_version or shadow.prompt_version)
    if primary.degraded:
        row["failure"] = f"fast model degraded to the local rules: {primary.degraded}"
        return row
    row.update(compared=True,
               escalation_agrees=row["primary_escalates"] == row["shadow_escalates"])
    return row


@dataclasses.dataclass(frozen=True)
class ShadowSummary:
    """What the shadow/ rows of a run say, over the transactions both models answered."""

    sampled: int  # rows: transactions the shadow model was asked about
    compared: int  # of those, answered by both models
    escalations_agreed: int  # of those compared, escalated by both or by neither
    mean_abs_risk_difference: float | None  # None: nothing compared
    primary_escalated: int  # of those compared
    shadow_escalated: int

    @property
    def agreement(self) -> float | None:
        return self.escalations_agreed / self.compared if self.compared else None

    def line(self) -> str:
        head = f"Shadow model: {self.sampled} transactions sampled, {self.compared} compared"
        if not self.compared:
            return head + " (no transaction answered by both models)"
        return (f"{head}; escalation agreement {self.agreement:.1%} "
                f"({self.escalations_agreed}/{self.compared}; escalated by the fast model "
                f"{self.primary_escalated}, by the shadow {self.shadow_escalated}); mean "
                f"|risk difference| {self.mean_abs_risk_difference:.4f}")


def summarise(rows: Iterable[Mapping[str, Any]]) -> ShadowSummary:
    """The summary of shadow/ rows (only their compared, escalation and risk columns are
    read)."""
    sampled = compared = agreed = primary_escalated = shadow_escalated = 0
    total_difference = 0.0
    for row in rows:
        sampled += 1
        if not row["compared"]:
            continue
        compared += 1
        agreed += bool(row["escalation_agrees"])
        primary_escalated += bool(row["primary_escalates"])
        shadow_escalated += bool(row["shadow_escalates"])
        total_difference += abs(row["risk_difference"])
    return ShadowSummary(sampled, compared, agreed,
                         total_difference / compared if compared else None,
                         primary_escalated, shadow_escalated)


SUMMARY_COLUMNS = ("compared", "escalation_agrees", "primary_escalates", "shadow_escalates",
                   "risk_difference")
