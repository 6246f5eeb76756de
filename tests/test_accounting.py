"""Cost, latency percentiles and the end-of-run report from counters: pure, no Beam."""
from realtime_ai.llm import accounting

PRICES = {"gpt-4o-mini": {"input": 0.15, "output": 0.60}}


def test_cost_is_estimated_from_the_price_table_and_unknown_models_are_unpriced():
    assert accounting.cost_micro_usd(PRICES, "gpt-4o-mini", 1000, 100) == 210
    assert accounting.cost_micro_usd(PRICES, "my-vllm-model", 1000, 100) is None
    assert accounting.load_prices()["gpt-4o-mini"] == PRICES["gpt-4o-mini"]


def test_latency_goes_to_the_first_bucket_that_holds_it():
    assert accounting.latency_bucket(0.4) == 5
    assert accounting.latency_bucket(200) == 200
    assert accounting.latency_bucket(201) == 400
    assert accounting.latency_bucket(10**7) == accounting.LATENCY_BUCKETS_MS[-1]


def test_percentiles_are_the_bounds_of_the_buckets_they_fall_in():
    # 90 calls under 200 ms, 8 under 800 ms, 2 under 6.4 s
    assert accounting.percentiles({200: 90, 800: 8, 6400: 2}) == {50: 200, 95: 800, 99: 6400}


def test_the_report_sums_what_the_counters_say():
    counters = {"llm_answers": 98, "llm_cache_hits": 7, "llm_degraded": 4, "llm_requests": 115,
                "llm_failed_requests": 12, "llm_fallbacks": 3,
                "llm_transaction_risk_dead_lettered": 2, "llm_metric_explanation_dead_lettered": 1,
                "llm_transaction_risk_answered": 100,
                "llm_input_tokens:gpt-4o-mini": 20_000, "llm_output_tokens:gpt-4o-mini": 3_000,
                "llm_cost_micro_usd:gpt-4o-mini": 4_800,
                "llm_input_tokens:my-vllm-model": 500, "llm_output_tokens:my-vllm-model": 50,
                "llm_latency_ms_le:200": 90, "llm_latency_ms_le:800": 8,
                "llm_latency_ms_le:6400": 2, "llm_request_latency_ms_le:100": 115}
    assert accounting.summary_lines(counters) == [
        "Model calls: 98 events answered by the model, 7 from cache, 4 degraded to the local "
        "rules, 3 dead-lettered; 115 requests (12 failed, timed out or cut), 3 deep calls over "
        "budget answered by the fast model",
        "  gpt-4o-mini: 20000 input + 3000 output tokens, ~$0.0048",
        "  my-vllm-model: 500 input + 50 output tokens, unpriced",
        "  latency per event, all its attempts: P50 <= 200 ms, P95 <= 800 ms, P99 <= 6400 ms",
        "  latency per request: P50 <= 100 ms, P95 <= 100 ms, P99 <= 100 ms"]


def test_a_runner_that_reports_no_counters_is_not_reported_as_zero_calls():
    assert accounting.summary_lines({}) == ["Model calls: no counters reported by the runner"]


def test_the_shadow_models_calls_are_in_the_totals_and_marked():
    counters = {"llm_answers": 10, "llm_requests": 12, "llm_shadow_requests": 2,
                "llm_shadow_answered": 1, "llm_shadow_failed": 1,
                "llm_input_tokens:m": 900, "llm_output_tokens:m": 90,
                "llm_input_tokens:m (shadow)": 180, "llm_output_tokens:m (shadow)": 18}
    lines = accounting.summary_lines(counters)
    assert "12 requests" in lines[0]
    assert ("  of those requests 2 to the shadow model: 1 transactions answered (0 from "
            "cache), 1 not (see shadow/)") in lines
    assert "  m (shadow): 180 input + 18 output tokens, unpriced" in lines
