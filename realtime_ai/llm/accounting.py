"""What model calls cost and how long they took: prices, latency buckets, percentiles. No Beam.

Beam counters carry the numbers from the workers (see transforms/ask_model.py); latency
goes into fixed buckets so percentiles can be estimated from counters on any runner.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources

# Upper bounds (ms) of the latency buckets; a percentile is reported as its bucket's bound.
LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600,
                      51200, 102400)
PERCENTILES = (50, 95, 99)
# After a model's name in the tokens and cost counters of a shadow model's calls
# (--shadow_fast_model): counted in the totals, told apart from the same model's own calls.
SHADOW_MARK = " (shadow)"


def load_prices() -> dict[str, dict[str, float]]:
    text = resources.files("realtime_ai.llm").joinpath("data/prices.json").read_text()
    return {model: price for model, price in json.loads(text).items()
            if not model.startswith("_")}


def cost_micro_usd(prices: Mapping[str, Mapping[str, float]], model: str, input_tokens: int,
                   output_tokens: int) -> int | None:
    """Estimated cost in millionths of a dollar, or None for a model without a price."""
    price = prices.get(model)
    if price is None:
        return None
    return round(input_tokens * price["input"] + output_tokens * price["output"])


def latency_bucket(latency_ms: float) -> int:
    for bound in LATENCY_BUCKETS_MS:
        if latency_ms <= bound:
            return bound
    return LATENCY_BUCKETS_MS[-1]


def percentiles(bucket_counts: Mapping[int, int]) -> dict[int, int]:
    """P50/P95/P99 as bucket upper bounds, from {bucket bound: count}."""
    total = sum(bucket_counts.values())
    result = {}
    for p in PERCENTILES:
        needed, running = total * p / 100.0, 0
        for bound in sorted(bucket_counts):
            running += bucket_counts[bound]
            if running >= needed:
                result[p] = bound
                break
    return result


def summary_lines(counters: Mapping[str, int]) -> list[str]:
    """A short report of the model calls from the pipeline's `realtime_ai` counters."""
    if not counters:
        # e.g. a Flink job cancelled by --max_run_seconds: its job server drops the metrics
        return ["Model calls: no counters reported by the runner"]
    dead = sum(v for k, v in counters.items() if k.endswith("_dead_lettered")
               and k.startswith("llm_"))
    lines = [f"Model calls: {counters.get('llm_answers', 0)} events answered by the model, "
             f"{counters.get('llm_cache_hits', 0)} from cache, "
             f"{counters.get('llm_degraded', 0)} degraded to the local rules, "
             f"{dead} dead-lettered; {counters.get('llm_requests', 0)} requests "
             f"({counters.get('llm_failed_requests', 0)} failed, timed out or cut), "
             f"{counters.get('llm_fallbacks', 0)} deep calls over budget answered by the fast "
             "model"]
    if counters.get("llm_routed_to_fast"):
        lines.append(f"  {counters['llm_routed_to_fast']} deep requests sent straight to the "
                     "fast model (the deep model's recent p95 over --latency_budget_ms)")
    if counters.get("llm_shadow_answered") or counters.get("llm_shadow_failed"):
        lines.append(f"  of those requests {counters.get('llm_shadow_requests', 0)} to the "
                     f"shadow model: {counters.get('llm_shadow_answered', 0)} transactions "
                     f"answered ({counters.get('llm_shadow_cache_hits', 0)} from cache), "
                     f"{counters.get('llm_shadow_failed', 0)} not (see shadow/)")
    if counters.get("llm_memo_hits"):
        lines.append(f"  {counters['llm_memo_hits']} of those from cache remembered from "
                     "earlier runs (--memo)")
    models = sorted({k.split(":", 1)[1] for k in counters if k.startswith("llm_input_tokens:")})
    for model in models:
        cost = counters.get(f"llm_cost_micro_usd:{model}")
        priced = f"~${cost / 1e6:.4f}" if cost is not None else "unpriced"
        lines.append(f"  {model}: {counters.get(f'llm_input_tokens:{model}', 0)} input + "
                     f"{counters.get(f'llm_output_tokens:{model}', 0)} output tokens, {priced}")
    by_endpoint = {k.split(":", 1)[1]: v for k, v in counters.items()
                   if k.startswith("llm_answers_by_endpoint:")}
    if len(by_endpoint) > 1:
        total = sum(by_endpoint.values())
        lines.append("  endpoints: " + ", ".join(
            f"{url} {count} ({count / total:.0%})" for url, count in sorted(by_endpoint.items())))
    for prefix, what in (("llm_latency_ms_le:", "latency per event, all its attempts"),
                         ("llm_request_latency_ms_le:", "latency per request")):
        buckets = {int(k.split(":", 1)[1]): v for k, v in counters.items()
                   if k.startswith(prefix)}
        if buckets:
            p = percentiles(buckets)
            lines.append(f"  {what}: " + ", ".join(f"P{q} <= {p[q]} ms" for q in PERCENTILES))
    return lines
