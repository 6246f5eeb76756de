"""The one place that decides whether a failed model request is worth retrying. Pure."""
from __future__ import annotations

import asyncio
import dataclasses
import json

from realtime_ai.llm.auth import SignInFailed
from realtime_ai.llm.lazy_openai import openai
from realtime_ai.llm.limits import CircuitOpen
from realtime_ai.llm.tasks import InvalidAnswer

# Statuses that say "not now" rather than "never": timeout, conflict, too early.
RETRIABLE_STATUSES = frozenset({408, 409, 425})


# What kind of trouble: it decides who else must slow down (rate limiter, circuit breaker).
INVALID_ANSWER = "invalid_answer"  # the endpoint works; the model answered badly
RATE_LIMITED = "rate_limited"  # 429: slow down
ENDPOINT = "endpoint"  # 5xx, timeouts, lost connections: the endpoint is in trouble
CIRCUIT_OPEN = "circuit_open"  # we stopped calling a failing endpoint for a while: fail fast
REQUEST = "request"  # the request itself is wrong (4xx): never retried
SIGN_IN = "sign_in"  # no Entra ID token (--llm_auth=azure): the token service may recover


@dataclasses.dataclass(frozen=True)
class Failure:
    retriable: bool
    reason: str
    retry_after: float | None = None  # seconds the server asked us to wait
    kind: str = REQUEST

    @property
    def summary(self) -> str:
        """The reason without an answer's details: few distinct values, fit for a column."""
        return "invalid answer" if self.kind == INVALID_ANSWER else self.reason


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


def _causes(error: BaseException) -> list[BaseException]:
    """The error and the chain of errors behind it."""
    chain: list[BaseException] = []
    while error is not None and all(error is not seen for seen in chain):
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def classify(error: BaseException) -> Failure:
    """Retriable: rate limits, server errors, timeouts, lost connections, invalid answers, a
    failed sign-in. Permanent: the request itself is wrong (bad request, auth, unknown model),
    and an open circuit: every endpoint of the tier is known to be failing, so waiting out its
    cool-down per event would only hold the event up (the caller degrades or dead-letters it
    at once)."""
    if isinstance(error, InvalidAnswer):
        return Failure(True, f"invalid answer: {error}", kind=INVALID_ANSWER)
    if isinstance(error, json.JSONDecodeError):
        return Failure(True, "response body is not JSON", kind=INVALID_ANSWER)
    if isinstance(error, SignInFailed):
        return Failure(True, str(error), kind=SIGN_IN)
    if isinstance(error, CircuitOpen):
        return Failure(False, "circuit open", error.retry_after, kind=CIRCUIT_OPEN)
    # The openai client's own aiohttp transport reports a failed connect (refused, no such host)
    # as a connect *timeout*, with the socket's error behind it.
    causes = _causes(error)
    if any(isinstance(cause, ConnectionRefusedError) for cause in causes):
        return Failure(True, "connection refused", kind=ENDPOINT)
    socket_errors = [cause for cause in causes
                     if isinstance(cause, OSError) and not isinstance(cause, TimeoutError)]
    if isinstance(error, openai.APITimeoutError) and socket_errors:
        return Failure(True, f"connection failed: {type(socket_errors[-1]).__name__}",
                       kind=ENDPOINT)
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
