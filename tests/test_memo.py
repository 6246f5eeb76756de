"""Answers remembered by event (llm/memo.py): across runs, per prompt version and model."""
import asyncio
import dataclasses
import json

import pytest

from realtime_ai.llm import base, memo, tasks
from realtime_ai.llm.base import LlmConfig, LlmPermanentError, LlmResult, Spend
from realtime_ai.pipelines.options import InvalidOptions, RealtimeAiOptions, validate
from tests.conftest import redis_on_own_port

RISK_DATA = {"transaction": {"transaction_id": "tx-1", "timestamp": "2026-01-05T12:00:00Z",
                             "amount": 12.5},
             "features": {"velocity_1h": 0}}


class _CountingBackend:
    """Answers from a prompt (or, with `prompt_version=None`, like the local rules model)."""

    def __init__(self, prompt_version="from-a-prompt", fail=False):
        self.calls = 0
        self._prompt_version = prompt_version
        self._fail = fail

    async def complete(self, task, data, tier):
        self.calls += 1
        if self._fail:
            raise LlmPermanentError("endpoint down")
        return LlmResult(answer={"risk_score": 0.5, "reason": f"call {self.calls}"},
                         model="fast-m", latency_ms=12.0, spent=(Spend("fast-m", 12.0, 30, 9),),
                         prompt_version=self._prompt_version)

    async def aclose(self):
        pass


def _ask(location, inner, data=RISK_DATA, fast_model="fast-m"):
    """One run's backend (a new MemoBackend: nothing shared in memory) answering once."""
    backend = memo.MemoBackend(inner, LlmConfig(memo=str(location), fast_model=fast_model))

    async def ask():
        try:
            return await backend.complete(base.TRANSACTION_RISK, data, base.FAST)
        finally:
            await backend.aclose()

    return asyncio.run(ask())


def test_a_later_run_gets_the_answer_without_a_call(tmp_path):
    first_inner, later_inner = _CountingBackend(), _CountingBackend()
    first = _ask(tmp_path, first_inner)
    # the same event with other features (e.g. a range re-run without its history): still it
    later = _ask(tmp_path, later_inner, {**RISK_DATA, "features": {"velocity_1h": 3}})
    assert first_inner.calls == 1 and later_inner.calls == 0
    assert later.answer == first.answer and later.latency_ms == first.latency_ms
    assert later.prompt_version == first.prompt_version and later.model == first.model
    assert later.remembered and later.cached and not first.remembered
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].suffix == ".json"  # no temporary file left behind
    assert tasks.PROMPT_VERSIONS[base.TRANSACTION_RISK] in files[0].parts


def test_another_prompt_version_model_or_event_is_asked_again(tmp_path, monkeypatch):
    _ask(tmp_path, _CountingBackend())
    other_event = {**RISK_DATA, "transaction": {**RISK_DATA["transaction"],
                                                "transaction_id": "tx-2"}}
    for inner, data, model in [(_CountingBackend(), other_event, "fast-m"),
                               (_CountingBackend(), RISK_DATA, "fast-other")]:
        _ask(tmp_path, inner, data, model)
        assert inner.calls == 1
    monkeypatch.setitem(tasks.PROMPT_VERSIONS, base.TRANSACTION_RISK, "newprmpt")
    inner = _CountingBackend()
    _ask(tmp_path, inner)
    assert inner.calls == 1


def test_failures_and_answers_without_a_prompt_are_not_remembered(tmp_path):
    with pytest.raises(LlmPermanentError):
        _ask(tmp_path, _CountingBackend(fail=True))
    _ask(tmp_path, _CountingBackend(prompt_version=None))  # e.g. the local rules
    inner = _CountingBackend()
    _ask(tmp_path, inner)
    assert inner.calls == 1


def test_an_unreadable_entry_or_memo_only_costs_a_call(tmp_path):
    _ask(tmp_path, _CountingBackend())
    (entry,) = [p for p in tmp_path.rglob("*.json")]
    entry.write_text("{not json")
    inner = _CountingBackend()
    assert _ask(tmp_path, inner).answer["reason"] == "call 1" and inner.calls == 1
    assert json.loads(entry.read_text())["answer"]["reason"] == "call 1"  # written again
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    inner = _CountingBackend()
    assert _ask(blocked / "memo", inner).answer and inner.calls == 1


def test_event_ids_name_the_event_of_each_task():
    assert memo.event_id(base.TRANSACTION_ANALYSIS, RISK_DATA) == "tx-1|2026-01-05T12:00:00Z"
    assert memo.event_id(base.METRIC_ANOMALY, {"metric": "cpu", "timestamp": "t",
                                               "value": 1.5}) == "cpu|t|1.5"
    assert memo.event_id(base.DASHBOARD_INSIGHT, {"dashboard_id": "d", "window_start": "a",
                                                  "window_end": "b"}) == "d|a|b"


@pytest.mark.parametrize("location, problem", [
    ("http://host/memo", "redis://HOST:PORT/N or a folder"),
    ("FILE", "is a file, not a folder"),
])
def test_a_bad_memo_location_is_a_one_line_error(tmp_path, location, problem):
    (tmp_path / "f").write_text("")
    location = location.replace("FILE", str(tmp_path / "f"))
    options = RealtimeAiOptions([f"--memo={location}", "--output=out",
                                 f"--transactions={tmp_path / 'f'}"])
    with pytest.raises(InvalidOptions, match=problem):
        validate(options)


def test_result_round_trips_through_the_memo_encoding():
    result = LlmResult(answer={"a": [1]}, model="m", latency_ms=1.5, fell_back=True,
                       prompt_version="abcd1234", endpoint="http://a/v1",
                       spent=(Spend("m", 1.5, 10, 2),))
    assert memo._decode(memo._encode(result)) == dataclasses.replace(result, spent=())


@pytest.fixture(scope="module")
def redis_url():
    yield from redis_on_own_port("6397")


@pytest.mark.integration
def test_redis_remembers_answers_with_no_expiry(redis_url):
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    first_inner, later_inner = _CountingBackend(), _CountingBackend()
    first = _ask(redis_url, first_inner)
    later = _ask(redis_url, later_inner)
    assert first_inner.calls == 1 and later_inner.calls == 0
    assert later.answer == first.answer and later.remembered
    (key,) = redis.Redis.from_url(redis_url).keys(memo.REDIS_KEY_PREFIX + "*")
    assert redis.Redis.from_url(redis_url).ttl(key) == -1  # kept until deleted
