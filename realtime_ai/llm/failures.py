"""The one place that decides whether a failed model request is worth retrying. Pure."""
from __future__ import annotations

import asyncio
import dataclasses
import json

import openai

from realtime_ai.llm.auth import SignInFailed
from realtime_ai.llm.limits import CircuitOpen
from realtime_ai.llm.tasks import InvalidAnswer

# Statuses that say "not now" rather than "never": timeout, conflict, too early.
RETRIABLE_STATUSES = frozenset({408, 409, 425})


# What kind of trouble: it decides who else must slow down (rate limiter, circuit breaker).
INVALID_ANSWER = "invalid_answer"  # the endpoint works; the model answered badly
RATE_LIMITED = "rate_limited"  # 429: slow down
ENDPOINT = "endpoint"  # 5xx, timeouts, lost connections: the endpoint is in trouble
CIRCUIT_OPEN = "circuit_open"  # we stopped calling a failing endpoint for a while
REQUEST = "request"  # the request itself is wrong (4xx): never retried
SIGN_IN = "sign_in"  # no Entra ID token (--llm_auth=azure): the token service may recover


@dataclasses.dataclass(frozen=True)
class Failure:
    retriable: bool
    reason: str
    retry_after: float | None = None  # seconds the server asked us to wait
    kind: str = REQUEST


def _retry_after(error: openai.APIStatusError) -> float | None:
    headers = error.response.headers if error.response is not None else {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue  # an HTTP date: fall back to our own backoff
    return None


def classify(error: BaseException) -> Failure:
    """Retriable: rate limits, server errors, timeouts, lost connections, invalid answers,
    an open circuit, a failed sign-in. Permanent: the request itself is wrong (bad request,
    auth, unknown model)."""
    if isinstance(error, InvalidAnswer):
        return Failure(True, f"invalid answer: {error}", kind=INVALID_ANSWER)
    if isinstance(error, json.JSONDecodeError):
        return Failure(True, "response body is not JSON", kind=INVALID_ANSWER)
    if isinstance(error, SignInFailed):
        return Failure(True, str(error), kind=SIGN_IN)
    if isinstance(error, CircuitOpen):
        return Failure(True, str(error), error.retry_after, kind=CIRCUIT_OPEN)
    if isinstance(error, openai.APITimeoutError | asyncio.TimeoutError | TimeoutError):
        return Failure(True, "request timed out", kind=ENDPOINT)
    if isinstance(error, openai.APIConnectionError):
        return Failure(True, f"connection failed: {type(error).__name__}", kind=ENDPOINT)
    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        reason = f"HTTP {status} {type(error).__name__}"
        if status == 429:
            return Failure(True, reason, _retry_after(error), kind=RATE_LIMITED)
        if status in RETRIABLE_STATUSES or status >= 500:
            return Failure(True, reason, _retry_after(error), kind=ENDPOINT)
        return Failure(False, reason)
    if isinstance(error, openai.OpenAIError):
        return Failure(False, f"{type(error).__name__}")
    raise TypeError(f"not a model request failure: {type(error).__name__}") from error
