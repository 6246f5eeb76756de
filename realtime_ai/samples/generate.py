"""Seeded, realistic sample events with labelled fraud patterns and metric anomalies. Pure.

Customers have a home country and currency, a personal spending level (lognormal), a few
usual merchant categories and a daily rhythm. Some customers, after at least
MIN_NORMAL_BEFORE_FRAUD normal transactions, suffer one fraud pattern: a card-testing burst,
impossible travel, an amount spike, or a first purchase in a risky category. Normal customers
also travel (many hours apart) and try new everyday categories, so the detector must tell
the difference. Metrics have seasonality, noise and labelled spikes, level shifts and drops.
"""
from __future__ import annotations

import dataclasses
import math
import random
from datetime import datetime, timedelta, timezone

COUNTRIES = {"DE": "EUR", "FR": "EUR", "GB": "GBP", "US": "USD", "NL": "EUR", "ES": "EUR",
             "IT": "EUR", "PL": "PLN", "SE": "SEK"}
FAR_COUNTRIES = ["BR", "NG", "TH", "ID", "VN", "PH", "MX", "ZA"]
EVERYDAY_CATEGORIES = ["groceries", "restaurants", "fuel", "transport", "pharmacy", "clothing",
                       "utilities", "entertainment", "bookstores", "home_garden"]
RISKY_CATEGORIES = ["electronics", "jewelry", "gift_cards", "crypto"]
PATTERNS = ("card_testing", "impossible_travel", "amount_spike", "new_merchant_category")
# Transactions per hour of day (local rhythm, applied in UTC for simplicity): few at night.
HOURLY_WEIGHT = [0.1, 0.05, 0.05, 0.05, 0.1, 0.3, 0.8, 1.2, 1.4, 1.3, 1.3, 1.5,
                 1.8, 1.6, 1.3, 1.2, 1.3, 1.6, 1.9, 1.8, 1.4, 1.0, 0.6, 0.3]
MIN_NORMAL_BEFORE_FRAUD = 10
FRAUD_CUSTOMER_SHARE = 0.22
TRAVELLER_SHARE = 0.1
FLIGHT = timedelta(hours=8)

METRICS = [
    # name, dashboard, host, service, base level, daily/30-min amplitude, noise
    ("api.latency_ms", "checkout", "api-1", "checkout-api", 120.0, 25.0, 6.0),
    ("api.error_rate", "checkout", "api-1", "checkout-api", 0.5, 0.15, 0.05),
    ("api.requests_per_s", "checkout", "api-1", "checkout-api", 850.0, 200.0, 25.0),
    ("db.cpu_pct", "payments-db", "db-1", "payments-db", 45.0, 12.0, 2.0),
    ("db.connections", "payments-db", "db-1", "payments-db", 180.0, 30.0, 5.0),
    ("queue.depth", "ingest", "mq-1", "ingest-queue", 300.0, 80.0, 15.0),
]
METRIC_STEP_SECONDS = 10
SEASON_SECONDS = 1800.0
ANOMALY_KINDS = ("spike", "level_shift", "drop")
LEVEL_SHIFT_STEPS = 30
# Where a metric's incidents fall, as shares of its series (never in the first 20%).
ANOMALY_SHARES = (0.45, 0.65, 0.85)


@dataclasses.dataclass(frozen=True)
class SampleSet:
    transactions: list[dict]
    transaction_labels: list[dict]
    metrics: list[dict]
    metric_labels: list[dict]


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _random_times(rng: random.Random, start: datetime, hours: int, count: int) -> list[datetime]:
    weights = [HOURLY_WEIGHT[h % 24] for h in range(hours)]
    picked = rng.choices(range(hours), weights=weights, k=count)
    return sorted(start + timedelta(hours=h, seconds=rng.randrange(3600)) for h in picked)


def _customer_transactions(rng, index, start, hours, fraud_pattern):
    home = rng.choice(sorted(COUNTRIES))
    spend_mu = rng.gauss(3.3, 0.5)  # log of the typical amount (~27)
    usual = rng.sample(EVERYDAY_CATEGORIES, 4)
    merchants = {c: [f"{c}-{rng.randrange(1000):03d}" for _ in range(3)] for c in usual}
    per_day = rng.uniform(4.0, 9.0)
    times = _random_times(rng, start, hours, max(MIN_NORMAL_BEFORE_FRAUD + 4,
                                                 round(per_day * hours / 24)))
    traveller = fraud_pattern is None and rng.random() < TRAVELLER_SHARE
    abroad_from = times[len(times) * 2 // 3] + timedelta(hours=10) if traveller else None
    abroad = rng.choice([c for c in sorted(COUNTRIES) if c != home])
    if abroad_from:  # no purchases during the flight
        times = [t for t in times if not abroad_from - FLIGHT <= t < abroad_from]
    rows = []
    for moment in times:
        category = rng.choice(usual) if rng.random() > 0.04 else rng.choice(EVERYDAY_CATEGORIES)
        merchant = rng.choice(merchants.get(category) or [f"{category}-{rng.randrange(1000):03d}"])
        country = abroad if abroad_from and moment >= abroad_from else home
        rows.append({"customer": index, "moment": moment, "amount": rng.lognormvariate(
            spend_mu, 0.6), "category": category, "merchant": merchant, "country": country,
            "channel": rng.choice(["pos", "pos", "online", "mobile"]), "pattern": None})
    if fraud_pattern:
        rows += _fraud(rng, rows, fraud_pattern, spend_mu, usual, home)
    for row in rows:
        row["currency"] = COUNTRIES.get(row["country"], "USD")
    return rows


def _fraud(rng, normal, pattern, spend_mu, usual, home):
    anchor = normal[rng.randrange(MIN_NORMAL_BEFORE_FRAUD, len(normal) - 1)]
    base = dict(anchor, pattern=pattern)
    if pattern == "card_testing":
        moment = anchor["moment"] + timedelta(minutes=rng.uniform(5, 50))
        burst = []
        for _ in range(rng.randint(4, 10)):
            moment += timedelta(seconds=rng.uniform(15, 90))
            burst.append(dict(base, moment=moment, amount=rng.uniform(0.5, 5.0),
                              category="digital_goods", merchant=f"digital-{rng.randrange(99):02d}",
                              channel="online"))
        return burst
    if pattern == "impossible_travel":
        return [dict(base, moment=anchor["moment"] + timedelta(minutes=rng.uniform(30, 90)),
                     country=rng.choice(FAR_COUNTRIES), channel="pos",
                     amount=rng.lognormvariate(spend_mu, 0.6) * 1.5)]
    if pattern == "amount_spike":
        return [dict(base, moment=anchor["moment"] + timedelta(minutes=rng.uniform(20, 120)),
                     amount=math.exp(spend_mu) * rng.uniform(10, 30), category=usual[0],
                     country=home)]
    category = rng.choice(RISKY_CATEGORIES)
    return [dict(base, moment=anchor["moment"] + timedelta(minutes=rng.uniform(20, 120)),
                 amount=math.exp(spend_mu) * rng.uniform(3, 8), category=category,
                 merchant=f"{category}-{rng.randrange(1000):03d}", country=home,
                 channel="online")]


def transactions(rng: random.Random, customers: int, start: datetime, hours: int):
    frauds = set(rng.sample(range(customers), round(customers * FRAUD_CUSTOMER_SHARE)))
    rows = []
    for index in range(customers):
        pattern = PATTERNS[index % len(PATTERNS)] if index in frauds else None
        rows += _customer_transactions(rng, index, start, hours, pattern)
    rows.sort(key=lambda r: (r["moment"], r["customer"]))
    events, labels = [], []
    for number, row in enumerate(rows):
        tx_id = f"tx-{number:06d}"
        events.append({
            "transaction_id": tx_id, "customer_id": f"cust-{row['customer']:04d}",
            "amount": round(row["amount"], 2), "currency": row["currency"],
            "merchant": row["merchant"], "merchant_category": row["category"],
            "country": row["country"], "channel": row["channel"],
            "timestamp": _iso(row["moment"]),
        })
        if row["pattern"]:
            labels.append({"transaction_id": tx_id, "pattern": row["pattern"]})
    return events, labels


def metrics(rng: random.Random, start: datetime, hours: float):
    steps = int(hours * 3600 / METRIC_STEP_SECONDS)
    events, labels = [], []
    for name, dashboard, host, service, level, amplitude, noise in METRICS:
        anomalies = {}
        # incidents are sparse: one per kind, spread over the later part of the series
        for kind, share in zip(ANOMALY_KINDS, rng.sample(ANOMALY_SHARES, 3), strict=True):
            at = min(int(steps * (share + rng.uniform(-0.03, 0.03))), steps - LEVEL_SHIFT_STEPS)
            length = LEVEL_SHIFT_STEPS if kind == "level_shift" else 1
            anomalies.update({at + k: kind for k in range(length)})
        for step in range(steps):
            moment = start + timedelta(seconds=step * METRIC_STEP_SECONDS)
            season = amplitude * math.sin(2 * math.pi * step * METRIC_STEP_SECONDS / SEASON_SECONDS)
            value = level + season + rng.gauss(0, noise)
            kind = anomalies.get(step)
            if kind == "spike":
                value += 12 * noise + amplitude
            elif kind == "level_shift":
                value += 8 * noise + amplitude
            elif kind == "drop":
                value -= 12 * noise + amplitude
            if kind and step - 1 not in anomalies:
                labels.append({"metric": name, "timestamp": _iso(moment), "kind": kind})
            events.append({"metric": name, "value": round(max(value, 0.0), 4),
                           "timestamp": _iso(moment),
                           "metadata": {"dashboard_id": dashboard, "host": host,
                                        "service": service}})
    events.sort(key=lambda e: (e["timestamp"], e["metric"]))
    labels.sort(key=lambda e: (e["timestamp"], e["metric"]))
    return events, labels


def generate(seed: int, customers: int, start: datetime, hours: int,
             metric_hours: float) -> SampleSet:
    tx, tx_labels = transactions(random.Random(seed), customers, start, hours)
    metric_events, metric_labels = metrics(random.Random(seed + 1), start, metric_hours)
    return SampleSet(tx, tx_labels, metric_events, metric_labels)


def parse_start(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)
