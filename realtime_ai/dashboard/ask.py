"""Questions about the live data, answered with streamed tokens by the deep model.

The answer comes from the latest window's data (LiveBoard.question_data) and the top 3
playbook entries retrieved for the question (llm/retrieval.py). The same question within
`cache_ttl_seconds` is answered from the cache: no call, no cost. Without an endpoint the
embedded local rules answer (not an LLM, and labelled so).
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import openai

from realtime_ai.llm import base, local_model, tasks
from realtime_ai.llm.base import LlmConfig
from realtime_ai.llm.cache import LruTtlCache
from realtime_ai.llm.client import PLACEHOLDER_KEY, backoff_seconds
from realtime_ai.llm.failures import classify
from realtime_ai.llm.retrieval import Playbook

CONTEXT_ENTRIES = 3
QUESTIONS_CACHED = 1000
MAX_QUESTION_CHARS = 500
_TOKEN = re.compile(r"\S+\s*")


def cache_key(question: str) -> str:
    """Questions differing only in case and spacing are the same question."""
    return " ".join(question.lower().split())


class QuestionAnswerer:
    def __init__(self, config: LlmConfig, playbook: Playbook):
        self._config = config
        self._playbook = playbook
        self._cache: LruTtlCache[str] = LruTtlCache(QUESTIONS_CACHED, config.cache_ttl_seconds)
        self._client: openai.AsyncOpenAI | None = None
        self._rng = random.Random()
        self.model = (base.LOCAL_MODEL_LABEL if config.backend == "local"
                      else config.deep_model)

    async def answer(self, question: str, live_data: Mapping[str, Any]
                     ) -> AsyncIterator[dict]:
        """Server-sent event bodies: {"token"} as they come, then {"done", "cached",
        "model"}, or {"error"} when the model could not answer (nothing is cached then)."""
        key = cache_key(question)
        cached = self._cache.get(key)
        if cached is not None:
            yield {"token": cached}
            yield {"done": True, "cached": True, "model": self.model}
            return
        data = {**live_data, "context": self._playbook.relevant(
            question, kind=None, k=CONTEXT_ENTRIES)}
        parts = []
        try:
            async for token in self._tokens(question, data):
                parts.append(token)
                yield {"token": token}
        except (openai.OpenAIError, asyncio.TimeoutError, json.JSONDecodeError) as error:
            yield {"error": classify(error).reason}
            return
        self._cache.put(key, "".join(parts))
        yield {"done": True, "cached": False, "model": self.model}

    async def _tokens(self, question: str, data: Mapping[str, Any]) -> AsyncIterator[str]:
        if self._config.backend == "local":
            for token in _TOKEN.findall(local_model.answer_question(question, data)):
                yield token
            return
        messages = tasks.question_messages(question, data)
        attempts = self._config.max_retries + 1
        for attempt in range(attempts):
            try:
                stream = await self._openai().chat.completions.create(
                    model=self._config.deep_model, messages=messages, stream=True,
                    temperature=0)
            except openai.OpenAIError as error:
                failure = classify(error)
                if not failure.retriable or attempt + 1 == attempts:
                    raise
                await asyncio.sleep(backoff_seconds(attempt, failure.retry_after, self._rng))
                continue
            # Once tokens have gone out, a broken stream is not retried: the user saw them.
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
            return

    def _openai(self) -> openai.AsyncOpenAI:
        if self._client is None:  # created on the event loop that uses it
            self._client = openai.AsyncOpenAI(
                api_key=os.environ.get(self._config.api_key_env) or PLACEHOLDER_KEY,
                base_url=self._config.base_url, timeout=self._config.timeout_seconds,
                max_retries=0)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
