"""--llm_rpm/--llm_tpm for the whole job: one Redis bucket shared by the workers, or each
worker's share of the budget, split by the worker count the runner's options give."""
import asyncio
import logging
import threading
import time

import pytest

from realtime_ai.llm import base, budgets, runner
from realtime_ai.llm.base import LlmConfig
from realtime_ai.llm.client import EXPECTED_ANSWER_TOKENS, make_backend
from realtime_ai.llm.limits import PACE_SHARE
from realtime_ai.pipelines.options import (
    BudgetWorkers,
    InvalidOptions,
    RealtimeAiOptions,
    parse_options,
)
from tests.conftest import redis_on_own_port

INSIGHT = {"dashboard_id": "d", "window_start": "a", "window_end": "b", "metrics": []}


@pytest.fixture(scope="module")
def redis_url():
    yield from redis_on_own_port("6398")


def _insights(backend, count: int) -> list:
    """`count` distinct requests at once (distinct: the response cache answers none)."""
    return [runner.submit(backend.complete(base.DASHBOARD_INSIGHT,
                                           {**INSIGHT, "dashboard_id": f"d{i}"}, base.FAST))
            for i in range(count)]


@pytest.mark.integration
def test_workers_sharing_a_redis_bucket_stay_within_the_job_budget(llm_server, redis_url):
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    config = LlmConfig(backend="openai", base_url=llm_server.base_url, cache_url=redis_url,
                       requests_per_minute=1200, budget_workers=1)  # 19.4 requests/s paced
    answers: list = []

    def worker(first: int) -> None:
        """A worker of its own: thread, event loop, model client and Redis client."""
        async def run():
            backend = make_backend(config)
            try:
                return await asyncio.gather(*(
                    backend.complete(base.DASHBOARD_INSIGHT,
                                     {**INSIGHT, "dashboard_id": f"d{first + i}"}, base.FAST)
                    for i in range(30)))
            finally:
                await backend.aclose()

        answers.extend(asyncio.run(run()))

    workers = [threading.Thread(target=worker, args=(30 * n,)) for n in range(3)]
    started = time.monotonic()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(30)
    elapsed = time.monotonic() - started
    assert len(answers) == llm_server.stats["requests"] == 90
    # beyond the bucket's one second of burst, at the budget's pace (each worker alone paced
    # at the whole budget: three times as fast)
    paced = 20 * PACE_SHARE
    rate = (90 - paced * budgets.BUCKET_SECONDS) / elapsed
    assert 0.5 * paced < rate < 1.1 * paced


@pytest.mark.integration
def test_answer_usage_corrects_the_tokens_reserved(llm_server, redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    # refills about one token a second: the level shows what the request cost
    config = LlmConfig(backend="openai", base_url=llm_server.base_url, cache_url=redis_url,
                       tokens_per_minute=60)
    backend = make_backend(config)
    _insights(backend, 1)[0].result(10)
    runner.submit(backend.aclose()).result(10)
    used = llm_server.stats["prompt_tokens"] + llm_server.stats["completion_tokens"]
    (key,) = client.keys(budgets.REDIS_KEY_PREFIX + "*:tokens")
    level = float(client.hget(key, "level"))
    reserved = used + EXPECTED_ANSWER_TOKENS  # about what was estimated: far from used
    assert abs(level - (1 - used)) < 3 and abs(level - (1 - reserved)) > 20


def test_without_redis_each_worker_paces_at_its_share():
    budget = budgets.JobBudget(requests_per_minute=2400, tokens_per_minute=None, workers=4)

    async def run():
        started = time.monotonic()
        for _ in range(11):
            await budget.acquire(tokens=10)
        return time.monotonic() - started

    # 600 a minute: 10 requests a second, the first at once
    assert runner.submit(run()).result(10) == pytest.approx(1.0 / PACE_SHARE, rel=0.15)


def test_without_redis_answer_usage_moves_the_next_turn():
    budget = budgets.JobBudget(requests_per_minute=None, tokens_per_minute=60_000)  # 1000/s

    async def run(used: int) -> float:
        await budget.acquire(tokens=100)
        await budget.settle(reserved=100, used=used)
        started = time.monotonic()
        await budget.acquire(tokens=100)
        return time.monotonic() - started

    # 600 tokens used where 100 were reserved: the next turn 0.6 s after the first, not 0.1
    assert runner.submit(run(600)).result(10) == pytest.approx(0.6 / PACE_SHARE, abs=0.08)
    time.sleep(0.2)
    assert runner.submit(run(0)).result(10) < 0.02  # what was not used is given back


def test_redis_down_falls_back_to_the_share_and_says_so_once(llm_server, caplog):
    config = LlmConfig(backend="openai", base_url=llm_server.base_url,
                       cache_url="redis://127.0.0.1:1/0", requests_per_minute=2400,
                       budget_workers=4)
    backend = make_backend(config)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger=budgets.__name__):
        results = [future.result(20) for future in _insights(backend, 11)]
    elapsed = time.monotonic() - started
    runner.submit(backend.aclose()).result(10)
    assert all(result.answer["insight"] for result in results)  # scoring went on
    assert elapsed > 0.9 / PACE_SHARE  # at the share: 10 a second, not 40
    outages = [r for r in caplog.records if "rate budget in Redis" in r.getMessage()]
    assert len(outages) == 1


def _split(*argv: str) -> BudgetWorkers:
    options = parse_options(["--metrics=samples/metrics.jsonl", "--output=/tmp/budget-split",
                             "--llm_rpm=600", *argv])
    return options.view_as(RealtimeAiOptions).budget_workers()


@pytest.mark.parametrize("argv, count", [
    ((), 1),
    (("--direct_num_workers=4",), 1),  # threads of one process share one client
    (("--direct_num_workers=4", "--direct_running_mode=multi_processing"), 4),
    (("--runner=PrismRunner",), 1),
    (("--runner=FlinkRunner", "--parallelism=3"), 3),
    (("--runner=FlinkRunner", "--sdk_worker_parallelism=2"), 2),
    (("--runner=DataflowRunner", "--max_num_workers=5", "--num_workers=2",
      "--machine_type=n1-standard-4"), 20),
    (("--runner=DataflowRunner", "--num_workers=3", "--machine_type=n2-custom-8-30720"), 24),
    (("--runner=DataflowRunner", "--max_num_workers=3",
      "--experiments=no_use_multiple_sdk_containers"), 3),
    (("--runner=DataflowRunner", "--max_num_workers=3"), 3),  # batch: n1-standard-1
    (("--runner=DataflowRunner", "--max_num_workers=3", "--streaming"), 12),
    (("--runner=FlinkRunner", "--parallelism=3", "--llm_budget_workers=7"), 7),
])
def test_budget_split_by_the_workers_the_runner_reports(argv, count):
    assert _split(*argv).count == count


def test_dataflow_without_a_worker_count_is_an_error_only_with_budgets():
    with pytest.raises(InvalidOptions, match="--max_num_workers or --llm_budget_workers"):
        _split("--runner=DataflowRunner", "--cache_url=redis://10.0.0.5:6379/0")
    unbudgeted = parse_options(["--metrics=samples/metrics.jsonl",
                                "--output=/tmp/budget-split", "--runner=DataflowRunner"])
    assert unbudgeted.view_as(RealtimeAiOptions).llm_config().budget_workers == 1


def test_split_reaches_the_workers_and_is_told():
    options = parse_options(["--metrics=samples/metrics.jsonl", "--output=/tmp/budget-split",
                             "--llm_rpm=600", "--llm_tpm=90000", "--runner=FlinkRunner",
                             "--parallelism=3"]).view_as(RealtimeAiOptions)
    assert options.llm_config().budget_workers == 3
    assert "200 requests/min and 30000 tokens/min for each of 3" in options.rate_budget_plan()
