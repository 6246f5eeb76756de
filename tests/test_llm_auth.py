"""--llm_auth=azure: Entra ID bearer tokens, refreshed before they expire, checked by our server."""
import asyncio
import collections
import time

import pytest

from realtime_ai.llm import auth, base, runner, server
from realtime_ai.llm.base import LlmConfig, LlmPermanentError
from realtime_ai.llm.client import OpenAiBackend

AccessToken = collections.namedtuple("AccessToken", "token expires_on")
DATA = {"dashboard_id": "d", "window_start": "a", "window_end": "b", "metrics": []}


class FakeCredential:
    """Stands in for DefaultAzureCredential: token-1, token-2, ... each valid `lifetime` s."""

    def __init__(self, lifetime: float, clock=time.time):
        self.scopes = []
        self._lifetime = lifetime
        self._clock = clock

    def get_token(self, scope):
        self.scopes.append(scope)
        return AccessToken(f"token-{len(self.scopes)}", self._clock() + self._lifetime)


def test_a_token_is_fetched_again_before_it_expires_and_once_for_concurrent_requests():
    now = [1000.0]
    credential = FakeCredential(3600, clock=lambda: now[0])
    tokens = auth.BearerTokens("scope/.default", lambda: credential, clock=lambda: now[0])

    async def ask(count):
        return await asyncio.gather(*(tokens() for _ in range(count)))

    async def over_time():
        assert set(await ask(20)) == {"token-1"} and tokens.fetches == 1
        now[0] += 3600 - auth.REFRESH_MARGIN_SECONDS - 1  # still fresh enough
        assert await ask(1) == ["token-1"]
        now[0] += 2  # within the margin: fetched again before it expires
        assert await ask(5) == ["token-2"] * 5

    asyncio.run(over_time())
    assert credential.scopes == ["scope/.default"] * 2


def _backend(handle, **config):
    return OpenAiBackend(LlmConfig(backend="openai", base_url=handle.base_url, auth="azure",
                                   auth_scope="https://cognitiveservices.azure.com/.default",
                                   **config))


def _ask(backend):
    try:
        return runner.submit(backend.complete(base.DASHBOARD_INSIGHT, DATA, base.FAST)).result(30)
    finally:
        runner.submit(backend.aclose()).result(5)


@pytest.mark.integration
def test_requests_carry_the_current_bearer_token_and_the_server_checks_it(monkeypatch):
    credential = FakeCredential(auth.REFRESH_MARGIN_SECONDS + 1.0)  # due again in 1 s
    monkeypatch.setattr(auth, "default_credential", lambda: credential)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    handle = server.start_in_thread(port=0, bearer_tokens=frozenset({"token-1"}))
    try:
        backend = _backend(handle)

        async def twice():
            first = await backend.complete(base.DASHBOARD_INSIGHT, DATA, base.FAST)
            await asyncio.sleep(1.2)  # token-1 is now within the margin
            handle.settings.bearer_tokens = frozenset({"token-2"})  # as if token-1 expired
            return first, await backend.complete(base.DASHBOARD_INSIGHT, DATA, base.DEEP)

        try:
            first, second = runner.submit(twice()).result(30)
        finally:
            runner.submit(backend.aclose()).result(5)
        assert first.answer["priority"] == "low" and second.requests == 1
        assert credential.scopes == ["https://cognitiveservices.azure.com/.default"] * 2
        assert handle.stats["status_200"] == 2 and handle.stats["status_401"] == 0
        handle.settings.bearer_tokens = frozenset({"someone-elses"})  # a token it refuses
        with pytest.raises(LlmPermanentError, match="HTTP 401") as refused:
            _ask(_backend(handle, max_retries=0))
        assert "token-" not in str(refused.value)
    finally:
        handle.stop()


@pytest.mark.integration
def test_no_azure_identity_is_a_clear_dead_letter_reason(monkeypatch):
    class NoIdentity:
        def get_token(self, scope):
            raise RuntimeError("DefaultAzureCredential failed to retrieve a token\nmore")

    monkeypatch.setattr(auth, "default_credential", NoIdentity)
    handle = server.start_in_thread(port=0, bearer_tokens=frozenset({"token-1"}))
    try:
        with pytest.raises(LlmPermanentError, match="Azure sign-in failed: RuntimeError: "
                                                    "DefaultAzureCredential failed"):
            _ask(_backend(handle, max_retries=1))
        assert handle.stats["requests"] == 0
    finally:
        handle.stop()
