"""Retrieval of the context relevant to an event (BM25 from `bm25s`). Pure: no Beam.

The playbook holds fraud entries (context for the deep analysis of a risky payment) and
runbooks (context for explaining a metric anomaly), each {id, title, text, kind}. Past alerts
(`PastAlerts`, --past_alerts) are an earlier run's transaction alerts, context for the deep
analysis too. An entry is returned only when it is relevant enough (MIN_RELEVANCE): no
context beats wrong context.
"""
from __future__ import annotations

import heapq
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from importlib import resources
from typing import Any

import bm25s
import numpy as np
from bm25s.stopwords import STOPWORDS_EN

# bm25s sets its own logger to DEBUG when imported: each index built printed "DEBUG:bm25s:
# Building index from tokens" into the command's output.
logging.getLogger("bm25s").setLevel(logging.WARNING)

FRAUD = "fraud"
RUNBOOK = "runbook"
KINDS = (FRAUD, RUNBOOK)
# The least BM25 score of a returned entry: one distinctive word of the query in the entry
# ("bitcoin": 1.4); words many entries share ("payment", "customer") stay below 1.0.
MIN_RELEVANCE = 1.2
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(STOPWORDS_EN)


def words(text: str) -> list[str]:
    """Lower-case words without stop words, plural "s" dropped ("cards" finds "card")."""
    found = []
    for word in _WORD.findall(text.lower()):
        if word in _STOPWORDS:
            continue
        if len(word) > 4 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        found.append(word)
    return found


class Playbook:
    """Entries {id, title, text, kind (default "fraud")}, ranked by BM25 over title and text."""

    def __init__(self, entries: list[dict]):
        for entry in entries:
            missing = {"id", "title", "text"} - set(entry)
            if missing:
                raise ValueError(f"playbook entry {entry.get('id')!r} lacks {sorted(missing)}")
            if entry.get("kind", FRAUD) not in KINDS:
                raise ValueError(f"playbook entry {entry['id']!r}: kind {entry['kind']!r} is "
                                 f"not one of {list(KINDS)}")
        self.entries = [{"id": str(e["id"]), "title": e["title"], "text": e["text"],
                         "kind": e.get("kind", FRAUD)} for e in entries]
        self._index = bm25s.BM25()
        if self.entries:
            self._index.index([words(e["title"] + " " + e["text"]) for e in self.entries],
                              show_progress=False)

    def relevant(self, query: str, kind: str | None = FRAUD, k: int = 3) -> list[dict]:
        """Up to `k` entries of `kind` (None: of any kind) scoring at least MIN_RELEVANCE for
        `query`, best first; none when nothing is relevant."""
        query_words = words(query)
        if not query_words or not self.entries:
            return []
        scores = self._index.get_scores(query_words)
        ranked = sorted(
            (i for i, entry in enumerate(self.entries)
             if kind in (None, entry["kind"]) and scores[i] >= MIN_RELEVANCE),
            key=lambda i: (-scores[i], self.entries[i]["id"]))
        return [{name: self.entries[i][name] for name in ("id", "title", "text")}
                for i in ranked[:k]]


# Past alerts kept per worker, the most recent, whatever the dataset's size: indexing them
# peaks at ~12 KB an alert with 600-character summaries (their limit), ~4 KB with 25 words
# (117 and 42 MB for 10,000; a query then takes ~5 ms).
MAX_PAST_ALERTS = 10_000
PAST_ALERT_COLUMNS = ("alert_id", "kind", "subject", "customer_id", "severity", "event_time",
                      "summary")
# an alerts dataset written before alerts had a customer_id is still read (no customer)
REQUIRED_PAST_ALERT_COLUMNS = tuple(c for c in PAST_ALERT_COLUMNS if c != "customer_id")
TRANSACTION_ALERT = "transaction"


class PastAlerts:
    """Transaction alerts of an earlier run, {alert_id, kind, subject, customer_id, severity,
    event_time, summary} (metric alerts are left out), ranked by BM25 over their summary and
    severity; the MAX_PAST_ALERTS most recent are kept (`alerts` may be a generator: no more
    than that is held while reading).

    The customer's own earlier alert scores MIN_RELEVANCE more: it is context by itself
    (BM25 over a customer id word would not do: the more alerts a customer has, the less
    such a word weighs), and the text ranks it among the customer's others."""

    def __init__(self, alerts: Iterable[Mapping[str, Any]], max_alerts: int = MAX_PAST_ALERTS):
        kept = heapq.nlargest(
            max_alerts, (a for a in alerts if a["kind"] == TRANSACTION_ALERT),
            key=lambda a: (a["event_time"], a["alert_id"]))
        self._alerts = [{name: alert[name] for name in PAST_ALERT_COLUMNS} for alert in kept]
        self._by_customer: dict[str, list[int]] = {}
        for i, alert in enumerate(self._alerts):
            if alert["customer_id"]:
                self._by_customer.setdefault(alert["customer_id"], []).append(i)
        self._index = bm25s.BM25()
        if self._alerts:
            self._index.index([words(f"{a['summary']} {a['severity']}") for a in self._alerts],
                              show_progress=False)

    def __len__(self) -> int:
        return len(self._alerts)

    def relevant(self, query: str, customer_id: str, before: datetime, subject: str,
                 k: int = 3) -> list[dict]:
        """Up to `k` alerts raised before `before` on other transactions than `subject` (a
        re-run must not be shown its own earlier alert) that score at least MIN_RELEVANCE for
        `query` and the customer: the customer's own first, then best first."""
        query_words = words(query)
        if not self._alerts:
            return []
        own = self._by_customer.get(customer_id, [])
        text_scores = (self._index.get_scores(query_words) if query_words
                       else np.zeros(len(self._alerts)))
        scores = {int(i): float(text_scores[i])
                  for i in np.flatnonzero(text_scores >= MIN_RELEVANCE)}
        for i in own:
            scores[i] = float(text_scores[i]) + MIN_RELEVANCE
        ranked = sorted(
            (i for i in scores
             if self._alerts[i]["event_time"] < before and self._alerts[i]["subject"] != subject),
            key=lambda i: (self._alerts[i]["customer_id"] != customer_id, -scores[i],
                           self._alerts[i]["alert_id"]))
        return [{"alert_id": a["alert_id"], "same_customer": a["customer_id"] == customer_id,
                 "severity": a["severity"], "event_time": a["event_time"].isoformat(),
                 "summary": a["summary"]}
                for a in (self._alerts[i] for i in ranked[:k])]


def load_playbook(text: str | None = None) -> Playbook:
    """The playbook from JSON text ([{id, title, text}, ...]), or the one in the package."""
    if text is None:
        text = resources.files("realtime_ai.llm").joinpath("data/playbook.json").read_text()
    return Playbook(json.loads(text))


class RefreshingPlaybook:
    """The playbook a job is using, re-read while it runs (the article's "streaming RAG").

    `read_text()` returns the playbook's JSON (None: the packaged playbook); it is read
    again once the version in use is `refresh_seconds` old. A failed re-read (file being
    replaced, invalid JSON) keeps the version in use and is counted in `failed_reloads`.
    """

    def __init__(self, read_text: Callable[[], str | None], refresh_seconds: float,
                 clock: Callable[[], float] = time.monotonic):
        self._read_text = read_text
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._playbook: Playbook | None = None
        self._loaded_at = 0.0
        self.failed_reloads = 0

    def current(self) -> Playbook:
        now = self._clock()
        if self._playbook is None:
            self._playbook, self._loaded_at = load_playbook(self._read_text()), now
        elif now - self._loaded_at >= self._refresh_seconds:
            self._loaded_at = now
            try:
                self._playbook = load_playbook(self._read_text())
            except (OSError, ValueError, TypeError, KeyError) as error:
                self.failed_reloads += 1
                logging.getLogger(__name__).warning(
                    "keeping the playbook in use: re-reading it failed: %s", error)
        return self._playbook


def query_for(data: Mapping[str, Any]) -> str:
    """A fraud-playbook query from transaction_risk data: the payment's own text and what is
    unusual about it."""
    tx, features = data["transaction"], data["features"]
    terms = [tx["merchant"], tx["merchant_category"], tx["channel"]]
    if features["velocity_1h"] >= 2:
        terms += ["velocity", "small", "burst", "card", "testing"]
    if features["new_country"]:
        terms += ["new", "country", "travel"]
    if features["amount_zscore"] >= 3:
        terms += ["amount", "spike", "standard", "deviations"]
    if features["new_merchant_category"]:
        terms += ["first", "new", "merchant", "category"]
    return " ".join(str(term) for term in terms)


def query_for_metric(metric: str, metadata: Mapping[str, str]) -> str:
    """A runbook query for an anomaly: the metric's name and its service."""
    return f"{metric} {metadata.get('service', '')}"
