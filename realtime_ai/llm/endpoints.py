"""Several model endpoints per tier: each request goes to the least-loaded healthy one. No Beam.

An endpoint is healthy while its own circuit breaker lets calls through. One that fails
(refused connections, 5xx, timeouts) POOLED_FAILURE_LIMIT times in a row is taken out and
probed again after a cooldown (limits.CircuitBreaker); the others carry its load meanwhile,
and the request that failed is retried on one of them. Among healthy endpoints a request goes
to the one with the fewest requests in flight (a slow endpoint holds more, so it gets fewer),
ties to the one that has had the fewest requests. Tiers naming the same URL share its
Endpoint: one view of its load and health.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from realtime_ai.llm.limits import CircuitBreaker, CircuitOpen

# With one endpoint there is nowhere else to go: its breaker keeps limits.py's default.
POOLED_FAILURE_LIMIT = 3


@dataclasses.dataclass
class Endpoint:
    """One base URL (None: OpenAI's own), its breaker, load and counters."""

    base_url: str | None
    breaker: CircuitBreaker
    client: Any = None  # its transport.ChatCompletions, made on the loop that uses it
    in_flight: int = 0
    requests: int = 0
    answers: int = 0
    failures: int = 0  # endpoint failures: 5xx, timeouts, lost connections

    @property
    def label(self) -> str:
        return self.base_url or "https://api.openai.com/v1"


def make_pools(urls_by_tier: dict[str, tuple[str | None, ...]],
               probe_timeout_seconds: float = 60.0) -> dict[str, EndpointPool]:
    """A pool per tier; a URL named by several tiers is one Endpoint in all of them."""
    every = {url for urls in urls_by_tier.values() for url in urls}
    limit = {} if len(every) == 1 else {"failure_limit": POOLED_FAILURE_LIMIT}
    shared = {url: Endpoint(url, CircuitBreaker(probe_timeout_seconds=probe_timeout_seconds,
                                                **limit))
              for url in sorted(every, key=str)}
    return {tier: EndpointPool([shared[url] for url in urls])
            for tier, urls in urls_by_tier.items()}


class EndpointPool:
    def __init__(self, endpoints: list[Endpoint]):
        self.endpoints = endpoints

    def pick(self) -> Endpoint:
        """The least-loaded endpoint whose breaker lets a call through, or CircuitOpen with
        the shortest wait when none does."""
        soonest: CircuitOpen | None = None
        for endpoint in sorted(self.endpoints, key=lambda e: (e.in_flight, e.requests)):
            try:
                endpoint.breaker.before_call()
            except CircuitOpen as error:
                if soonest is None or error.retry_after < soonest.retry_after:
                    soonest = error
                continue
            return endpoint
        raise soonest
