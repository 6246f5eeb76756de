"""Client-side flow control for one endpoint: rate budgets and a circuit breaker. No Beam.

`RateLimiter` paces requests so a worker sits just under its requests-per-minute and
tokens-per-minute budgets (its share of the job's: budgets.py) instead of bouncing off a
provider's limits: requests leave at the budgeted rate (no bursts, so a provider's sliding
minute never overflows), a 429 pauses everyone for its Retry-After and lowers the pace,
successes restore it gradually, and an answer's usage corrects the tokens its request
reserved.

`CircuitBreaker` stops hammering an endpoint that keeps failing: after `failure_limit`
consecutive failures it opens; calls then fail fast until a cool-down passes, when one probe
is let through; any answer to it (a 429 or a 4xx too: the endpoint is up) closes the circuit,
its failure re-opens it for twice as long, and a probe that never reports back (cancelled)
gives way to another after `probe_timeout_seconds`: the circuit never stays open for good.
"""
from __future__ import annotations

import asyncio
import time

# Pace at this share of the budget: timing jitter must not push a sliding minute over it.
PACE_SHARE = 0.97
BACKOFF_FACTOR = 0.85  # pace multiplier after a 429
RECOVERY_STEP = 0.01  # pace regained per success, as a share of the budget
MIN_PACE = 0.1


class RateLimiter:
    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None):
        self._rpm = requests_per_minute
        self._tpm = tokens_per_minute
        self._pace = 1.0  # share of the budgets currently used
        self._next_request_at = 0.0
        self._next_tokens_at = 0.0
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    @property
    def pace(self) -> float:
        return self._pace

    async def acquire(self, tokens: int) -> None:
        """Wait for this request's turn: one request slot and `tokens` of token budget."""
        if not self._rpm and not self._tpm:
            return
        async with self._lock:
            now = time.monotonic()
            start = max(now, self._paused_until, self._next_request_at, self._next_tokens_at)
            if self._rpm:
                self._next_request_at = start + 60.0 / (self._rpm * PACE_SHARE * self._pace)
            if self._tpm:
                self._next_tokens_at = start + 60.0 * tokens / (
                    self._tpm * PACE_SHARE * self._pace)
        if start > now:
            await asyncio.sleep(start - now)

    def settle(self, reserved: int, used: int) -> None:
        """An answer used `used` tokens where `reserved` were paced for: the difference
        moves the next request's turn (later for more, earlier for fewer)."""
        if self._tpm:
            self._next_tokens_at += 60.0 * (used - reserved) / (
                self._tpm * PACE_SHARE * self._pace)

    async def wait_out_pause(self) -> None:
        """Sleep until a 429's Retry-After has passed."""
        wait = self._paused_until - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    def rate_limited(self, retry_after: float | None) -> None:
        """A 429: everyone waits for Retry-After, and the pace drops."""
        self._pace = max(MIN_PACE, self._pace * BACKOFF_FACTOR)
        if retry_after:
            self._paused_until = max(self._paused_until, time.monotonic() + retry_after)

    def succeeded(self) -> None:
        self._pace = min(1.0, self._pace + RECOVERY_STEP)


class CircuitOpen(Exception):
    """The endpoint is failing: calls fail fast until the next probe."""

    def __init__(self, retry_after: float):
        super().__init__(f"circuit open: endpoint failing, next probe in {retry_after:.1f}s")
        self.retry_after = retry_after


class CircuitBreaker:
    def __init__(self, failure_limit: int = 20, cooldown_seconds: float = 2.0,
                 max_cooldown_seconds: float = 60.0, probe_timeout_seconds: float = 60.0):
        self._failure_limit = failure_limit
        self._base_cooldown = cooldown_seconds
        self._max_cooldown = max_cooldown_seconds
        self._probe_timeout = probe_timeout_seconds
        self._cooldown = cooldown_seconds
        self._failures = 0
        self._open_until: float | None = None
        self._probe_started: float | None = None  # when the probe in flight was let through
        self.opened = 0  # times the circuit opened, for metrics

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    def before_call(self) -> None:
        """Raise CircuitOpen unless the call may go (closed, or the one probe when due)."""
        if self._open_until is None:
            return
        now = time.monotonic()
        wait = self._open_until - now
        if self._probe_started is not None:
            probe_due = self._probe_started + self._probe_timeout - now
            if probe_due > 0:
                raise CircuitOpen(max(wait, 0.1))
        elif wait > 0:
            raise CircuitOpen(wait)
        self._probe_started = now

    def succeeded(self) -> None:
        """The endpoint answered: any HTTP answer but a 5xx or a timeout."""
        self._failures = 0
        self._open_until = None
        self._probe_started = None
        self._cooldown = self._base_cooldown

    def failed(self) -> None:
        """An endpoint failure (5xx, timeout, connection): not a 4xx or an invalid answer."""
        self._failures += 1
        if self._probe_started is not None:
            self._probe_started = None
            self._cooldown = min(self._max_cooldown, self._cooldown * 2)
            self._open_until = time.monotonic() + self._cooldown
        elif self._failures >= self._failure_limit and self._open_until is None:
            self.opened += 1
            self._open_until = time.monotonic() + self._cooldown
