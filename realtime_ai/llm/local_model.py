"""The embedded local model: deterministic rules over features and statistics. NOT an LLM.

It answers every task with the same JSON shapes as a real model, so the pipeline runs offline
with no key (its rows say LOCAL_MODEL_LABEL in the model column), and our OpenAI-compatible
test server answers with it. Pure: no Beam, and no model client (the openai package costs a
worker ~700 modules to import).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from realtime_ai.llm import base, tasks
from realtime_ai.llm.base import LlmBackend, LlmPermanentError, LlmResult, Spend

RISKY_CATEGORIES = frozenset({"electronics", "jewelry", "gift_cards", "crypto", "money_transfer"})
IMPOSSIBLE_TRAVEL_SECONDS = 4 * 3600
CARD_TESTING_MAX_AMOUNT = 10.0

PATTERN_ACTIONS = {
    "card_testing": "Block the card, decline further small online authorisations, contact "
                    "the customer.",
    "impossible_travel": "Hold the transaction and step-up authenticate the customer; check "
                         "for a cloned card.",
    "amount_spike": "Hold the payment and confirm it with the customer before release.",
    "new_merchant_category": "Step-up authenticate and review the merchant; watch for resale "
                             "goods fraud.",
    "none": "No action beyond monitoring.",
}


def _signals(tx: Mapping[str, Any], features: Mapping[str, Any]) -> dict[str, float]:
    """Evidence strength per fraud pattern, each in [0, 1]."""
    amount = float(tx["amount"])
    history = int(features["history_count"])
    velocity = int(features["velocity_1h"])
    since_last = features["seconds_since_last"]
    zscore = float(features["amount_zscore"])
    signals = {}
    online = tx["channel"] == "online"
    if amount <= CARD_TESTING_MAX_AMOUNT and velocity >= 1:
        signals["card_testing"] = min(1.0, 0.45 + 0.2 * velocity) * (1.0 if online else 0.7)
    elif amount <= CARD_TESTING_MAX_AMOUNT and online and features["new_merchant_category"]:
        signals["card_testing"] = 0.5  # a tiny first purchase somewhere new: a probe?
    if features["new_country"] and features["last_country"] not in (None, tx["country"]):
        fast = since_last is not None and since_last < IMPOSSIBLE_TRAVEL_SECONDS
        signals["impossible_travel"] = 0.92 if fast else 0.35
    if history >= 5 and zscore >= 3.0:
        signals["amount_spike"] = min(0.97, 0.5 + 0.06 * (zscore - 3.0))
    if features["new_merchant_category"]:
        risky = tx["merchant_category"] in RISKY_CATEGORIES
        pricey = amount > 2.0 * float(features["mean_amount"])
        signals["new_merchant_category"] = (0.6 + 0.25 * pricey) if risky else 0.15
    return signals


def _combine(signals: Mapping[str, float]) -> float:
    remaining = 1.0
    for strength in signals.values():
        remaining *= 1.0 - strength
    return round(1.0 - remaining, 4)


def transaction_risk(data: Mapping[str, Any]) -> dict:
    signals = _signals(data["transaction"], data["features"])
    if not signals:
        return {"risk_score": 0.02, "reason": "consistent with the customer's history"}
    evidence = ", ".join(f"{name.replace('_', ' ')} ({strength:.2f})"
                         for name, strength in sorted(signals.items(), key=lambda s: -s[1]))
    return {"risk_score": _combine(signals), "reason": f"evidence: {evidence}"[:300]}


def transaction_analysis(data: Mapping[str, Any]) -> dict:
    signals = _signals(data["transaction"], data["features"])
    pattern = max(sorted(signals), key=signals.get) if signals else "none"
    risk = float(data["fast_assessment"]["risk_score"])
    severity = "critical" if risk >= 0.95 else "high" if risk >= 0.85 else "medium"
    entries = data.get("playbook") or []
    cited = [e["id"] for e in entries if pattern.split("_")[0] in (e["title"] + e["text"]).lower()]
    tx = data["transaction"]
    return {
        "summary": (f"{tx['transaction_id']}: {tx['amount']} {tx['currency']} at "
                    f"{tx['merchant']} ({tx['merchant_category']}, {tx['country']}) looks like "
                    f"{pattern.replace('_', ' ')}; fast model: {data['fast_assessment']['reason']}"
                    )[:600],
        "fraud_pattern": pattern,
        "severity": severity,
        "recommended_action": PATTERN_ACTIONS.get(pattern, PATTERN_ACTIONS["none"]),
        "playbook_ids": (cited or [e["id"] for e in entries[:1]])[:3],
    }


_CAUSES = (
    ("latency", ["upstream dependency slowdown", "resource saturation", "GC or lock contention"]),
    ("error", ["faulty deploy", "dependency outage", "bad input from a client"]),
    ("cpu", ["runaway query or job", "traffic surge", "noisy neighbour"]),
    ("connection", ["connection leak", "traffic surge", "pool misconfiguration"]),
    ("queue", ["consumer stalled", "producer burst", "downstream backpressure"]),
    ("request", ["traffic surge or drop", "load balancer change", "client retry storm"]),
)


# Values just before a flagged one that decide spike or level shift: a shift when most of
# them are already at least half as far from the rolling mean, on the same side.
_SHAPE_VALUES = 5


def _shape(data: Mapping[str, Any]) -> str:
    value, mean = float(data["value"]), float(data["rolling_mean"])
    before = [float(v) for v in data.get("recent_values", [])[-_SHAPE_VALUES - 1:-1]]
    if not before:
        return "an outlier"
    distance = value - mean
    shifted = sum(1 for v in before
                  if (v - mean) * distance > 0 and abs(v - mean) >= abs(distance) / 2)
    return "a level shift" if 2 * shifted > len(before) else "a spike"


def metric_anomaly(data: Mapping[str, Any]) -> dict:
    z = abs(float(data["z_score"]))
    score = float(data["anomaly_score"])
    if score >= 0.99 and z >= 8:
        severity = "critical"
    elif z >= 5 or score >= 0.97:
        severity = "high"
    elif z >= 3 or score >= 0.8:
        severity = "medium"
    else:
        severity = "low"
    name = str(data["metric"]).lower()
    causes = next((c for key, c in _CAUSES if key in name),
                  ["change in workload", "infrastructure fault", "instrumentation error"])
    direction = "above" if float(data["value"]) >= float(data["rolling_mean"]) else "below"
    return {
        "is_real_anomaly": z >= 3 or score >= 0.9,
        "possible_causes": list(causes),
        "recommended_action": (f"Check {data['metric']}: {data['value']:.4g} is {direction} its "
                               f"recent mean {data['rolling_mean']:.4g}, {_shape(data)}; "
                               "correlate with deploys and dependent services."),
        "severity": severity,
    }


def dashboard_insight(data: Mapping[str, Any]) -> dict:
    if "transactions" in data:
        return _payments_insight(data["transactions"])
    metrics = data["metrics"]
    if not metrics:
        return {"insight": "No metrics arrived in this window.", "priority": "low"}
    worst = max(metrics, key=lambda m: (m["max_anomaly_score"], m["anomalies"], m["metric"]))
    if worst["anomalies"]:
        priority = "high" if worst["max_anomaly_score"] >= 0.9 else "medium"
        text = (f"{worst['metric']} had {worst['anomalies']} anomalous value(s), peaking at "
                f"{worst['max']:.4g} against a window mean of {worst['mean']:.4g}: investigate "
                "it first.")
    else:
        priority = "low"
        text = (f"All {len(metrics)} metrics within normal ranges; {worst['metric']} "
                f"averaged {worst['mean']:.4g} (max {worst['max']:.4g}).")
    return {"insight": text, "priority": priority}


BURST_ESCALATIONS = 3  # high-risk payments in one window that make its insight high priority


def _payments_insight(payments: Mapping[str, Any]) -> dict:
    share, escalations = float(payments["high_risk_share"]), int(payments["escalations"])
    if not escalations:
        return {"insight": f"{payments['count']} payment(s), none rated high risk.",
                "priority": "low"}
    factors = payments.get("risk_factors") or {}
    common = max(sorted(factors), key=factors.get) if factors else None
    because = f" (most common risk factor: {common}, {factors[common]})" if common else ""
    return {"insight": (f"{escalations} of {payments['count']} payments ({share:.0%}) rated high "
                        f"risk{because}: review their alerts first."),
            "priority": "high" if escalations >= BURST_ESCALATIONS else "medium"}


SEVERITY_RANK = {name: rank for rank, name in enumerate(tasks.SEVERITIES, start=1)}


def answer_question(question: str, data: Mapping[str, Any]) -> str:
    """A free-text answer from the live data (tasks.question_messages), by rules: what the
    latest window and the most recent alerts say, and the playbook entries retrieved."""
    parts = [f"On \"{question[:120]}\":"]
    insights = data.get("insights") or []
    if insights:
        ranked = sorted(insights, key=lambda i: (i.get("priority") != "high",
                                                  i.get("priority") != "medium"))
        parts.append(f"in the window ending {data.get('window_end')}, {len(insights)} "
                     f"dashboard insight(s); first: {ranked[0].get('insight')}")
    else:
        parts.append("no dashboard insight has arrived yet.")
    alerts = data.get("recent_alerts") or []
    if alerts:
        worst = max(alerts, key=lambda a: SEVERITY_RANK.get(a.get("severity"), 0))
        parts.append(f"{len(alerts)} recent alert(s), the most severe ({worst.get('severity')}):"
                     f" {worst.get('summary')}")
    context = data.get("context") or []
    if context:
        parts.append("See playbook: " + "; ".join(f"{e.get('id')} {e.get('title')}"
                                                  for e in context) + ".")
    return " ".join(parts)



def transaction_risk_packed(data: Mapping[str, Any]) -> dict:
    return {"results": [{"transaction_id": item["transaction"]["transaction_id"],
                         **transaction_risk(item)} for item in data["transactions"]]}


ANSWERS: dict[str, Callable[[Mapping[str, Any]], dict]] = {
    base.TRANSACTION_RISK: transaction_risk,
    base.TRANSACTION_RISK_PACKED: transaction_risk_packed,
    base.TRANSACTION_ANALYSIS: transaction_analysis,
    base.METRIC_ANOMALY: metric_anomaly,
    base.DASHBOARD_INSIGHT: dashboard_insight,
}


def answer(task: str, data: Mapping[str, Any]) -> dict:
    return ANSWERS[task](data)


class LocalBackend:
    """The rules as a model backend (base.LlmBackend), accounted like a remote model.

    `result` answers on the caller's thread: the pipeline asks it directly, since a trip
    through the event loop (a future, a wake-up of the loop's thread, a callback) costs more
    than the answer itself.
    """

    def result(self, task: str, data: Mapping[str, Any]) -> LlmResult:
        messages = tasks.build_messages(task, data)
        content = answer(task, data)
        # no call is made: 0 ms keeps local runs byte-for-byte reproducible
        return LlmResult(answer=content, model=base.LOCAL_MODEL_LABEL, latency_ms=0.0, spent=(
            Spend(base.LOCAL_MODEL_LABEL, 0.0, tasks.estimate_tokens(messages),
                  tasks.estimate_tokens(json.dumps(content))),))

    async def complete(self, task: str, data: Mapping[str, Any], tier: str) -> LlmResult:
        return self.result(task, data)

    async def aclose(self) -> None:
        return None


class DegradingBackend:
    """Wraps a model backend (--on_model_failure=degrade): an event the model cannot answer
    (its retries spent, its circuit open, or a request it refuses) is answered by the rules,
    labelled as degraded with the reason, and keeps the cost of the requests that failed.
    Nothing the rules can read goes without an answer."""

    def __init__(self, inner: LlmBackend):
        self._inner = inner

    async def complete(self, task: str, data: Mapping[str, Any], tier: str) -> LlmResult:
        try:
            return await self._inner.complete(task, data, tier)
        except LlmPermanentError as error:
            return LlmResult(answer=answer(task, data), model=base.degraded_label(error.reason),
                             latency_ms=error.latency_ms, spent=error.spent,
                             degraded=error.reason)

    async def aclose(self) -> None:
        await self._inner.aclose()
