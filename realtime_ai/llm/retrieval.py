"""Retrieval of the most relevant playbook entries for an event (BM25). Pure: no Beam."""
from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

_WORD = re.compile(r"[a-z0-9]+")
BM25_K1 = 1.2
BM25_B = 0.75


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("_", " "))


class Playbook:
    """Entries {id, title, text} ranked by BM25 over title and text."""

    def __init__(self, entries: list[dict]):
        for entry in entries:
            missing = {"id", "title", "text"} - set(entry)
            if missing:
                raise ValueError(f"playbook entry {entry.get('id')!r} lacks {sorted(missing)}")
        self.entries = [dict(e, id=str(e["id"])) for e in entries]
        self._docs = [Counter(_words(e["title"] + " " + e["text"])) for e in self.entries]
        self._lengths = [sum(doc.values()) for doc in self._docs]
        self._mean_length = sum(self._lengths) / max(1, len(self._lengths))
        frequency = Counter(word for doc in self._docs for word in doc)
        n = len(self._docs)
        self._idf = {w: math.log(1 + (n - f + 0.5) / (f + 0.5)) for w, f in frequency.items()}

    def _score(self, index: int, query: list[str]) -> float:
        doc, length = self._docs[index], self._lengths[index]
        score = 0.0
        for word in query:
            tf = doc.get(word, 0)
            if tf:
                norm = tf + BM25_K1 * (1 - BM25_B + BM25_B * length / self._mean_length)
                score += self._idf[word] * tf * (BM25_K1 + 1) / norm
        return score

    def top_k(self, query: str, k: int = 3) -> list[dict]:
        words = _words(query)
        ranked = sorted(range(len(self.entries)),
                        key=lambda i: (-self._score(i, words), self.entries[i]["id"]))
        return [self.entries[i] for i in ranked[:k]]


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
    """A retrieval query from transaction_risk data: what is unusual about the event."""
    tx, features = data["transaction"], data["features"]
    words = [tx["merchant_category"], tx["channel"]]
    if features["velocity_1h"] >= 2:
        words += ["velocity", "small", "burst", "card", "testing"]
    if features["new_country"]:
        words += ["new", "country", "travel"]
    if features["amount_zscore"] >= 3:
        words += ["amount", "spike", "standard", "deviations"]
    if features["new_merchant_category"]:
        words += ["first", "new", "merchant", "category"]
    return " ".join(words)
