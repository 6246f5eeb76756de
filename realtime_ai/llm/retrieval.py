"""Retrieval of the playbook entries relevant to an event (BM25 from `bm25s`). Pure: no Beam.

The playbook holds fraud entries (context for the deep analysis of a risky payment) and
runbooks (context for explaining a metric anomaly), each {id, title, text, kind}. An entry
is returned only when it is relevant enough (MIN_RELEVANCE): no context beats wrong context.
"""
from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

import bm25s
from bm25s.stopwords import STOPWORDS_EN

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
