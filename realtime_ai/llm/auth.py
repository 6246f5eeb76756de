"""Microsoft Entra ID bearer tokens for Azure OpenAI / Azure AI Foundry (`--llm_auth=azure`).

Each worker signs in on its own with azure-identity's `DefaultAzureCredential` (a managed
identity, workload identity, environment variables or a developer's `az login`): nothing
secret travels with the pipeline. Tokens last about an hour; one is fetched again
REFRESH_MARGIN_SECONDS before it expires, so no request carries an expired token, and only one
fetch runs at a time however many requests are waiting. Pure: no Beam.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

AUTH_KEY = "key"
AUTH_AZURE = "azure"
AUTH_METHODS = (AUTH_KEY, AUTH_AZURE)
AZURE_SCOPE = "https://cognitiveservices.azure.com/.default"
REFRESH_MARGIN_SECONDS = 300.0


def default_credential() -> Any:
    """azure-identity's DefaultAzureCredential (imported here: most jobs never need it)."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


class SignInFailed(Exception):
    """No token: the credential found no identity, or the token service failed."""


class BearerTokens:
    """An async token provider for the model transport (asked before every
    request): the credential's current token, fetched again before it expires.

    `make_credential` is called once, on first use on the worker; the credential's
    `get_token` (blocking: it may call the metadata service) runs off the event loop.
    """

    def __init__(self, scope: str = AZURE_SCOPE,
                 make_credential: Callable[[], Any] | None = None,
                 clock: Callable[[], float] = time.time):
        self._scope = scope
        self._make_credential = make_credential or default_credential
        self._clock = clock
        self._credential = None
        self._token = None  # azure.core.credentials.AccessToken: .token, .expires_on
        self._lock: asyncio.Lock | None = None
        self.fetches = 0

    def _fresh(self) -> bool:
        return (self._token is not None
                and self._token.expires_on - self._clock() > REFRESH_MARGIN_SECONDS)

    @property
    def current(self) -> str | None:
        """The token in use (for redaction from error messages), if any."""
        return self._token.token if self._token is not None else None

    async def __call__(self) -> str:
        if not self._fresh():
            if self._lock is None:  # made on the loop that uses it
                self._lock = asyncio.Lock()
            async with self._lock:
                if not self._fresh():  # another request may have fetched it meanwhile
                    self._token = await self._fetch()
                    self.fetches += 1
        return self._token.token

    async def _fetch(self):
        try:
            if self._credential is None:
                self._credential = self._make_credential()
            return await asyncio.to_thread(self._credential.get_token, self._scope)
        except Exception as error:  # azure-identity raises many kinds; all mean "no token"
            raise SignInFailed(f"Azure sign-in failed: {type(error).__name__}: "
                               f"{str(error).splitlines()[0] if str(error) else ''}") from None
