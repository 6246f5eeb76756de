"""Chat completion requests to one OpenAI-compatible endpoint, over one aiohttp session. No Beam.

The pipeline sends a ready JSON body and reads the raw answer; the OpenAI SDK's generic `post`
did the same through its request builder and an httpx layer over this very aiohttp transport,
at 3-4x the CPU a request (1.41 ms against 0.41 ms, benchmarks/llm_throughput.py), in the job's
one process, where every other step waits on the same GIL. What the SDK sent is kept: the same
headers (key or Entra ID token as bearer, organization and project from the environment),
the body encoded as its httpx does, the proxy and CA bundle from the environment, redirects
followed. Failures are raised as the SDK's own exception types (status classes by HTTP status,
connection errors with their cause), so `failures.classify` reads them as it reads the SDK's.
"""
from __future__ import annotations

import json
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import certifi
import httpx2
import yarl
from aiohttp.helpers import get_env_proxy_for_url

from realtime_ai.llm.lazy_openai import openai

# The SDK's exception class (by name) for each HTTP status it names; other 4xx are
# APIStatusError.
_STATUS_ERRORS: Mapping[int, str] = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    409: "ConflictError",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
}
USER_AGENT = "realtime-ai"


def status_error(status: int, headers: Mapping[str, str], body: bytes,
                 request: httpx2.Request) -> openai.APIStatusError:
    """The SDK's exception for a non-2xx answer (its `retry-after` headers kept)."""
    error_class = getattr(openai, "InternalServerError" if status >= 500
                          else _STATUS_ERRORS.get(status, "APIStatusError"))
    response = httpx2.Response(status, headers=dict(headers), content=body, request=request)
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    detail = parsed.get("error", parsed) if isinstance(parsed, dict) else None
    return error_class(f"Error code: {status}", response=response, body=detail)


def _ssl_context() -> ssl.SSLContext:
    """The CA bundle the SDK's httpx used: SSL_CERT_FILE / SSL_CERT_DIR when set, else
    certifi's."""
    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if cafile or capath:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    return ssl.create_default_context(cafile=certifi.where())


class ChatCompletions:
    """POSTs to `{base_url}/chat/completions` with up to `connections` kept-alive connections.
    Made on the event loop that uses it (aiohttp binds its session to that loop)."""

    def __init__(self, base_url: str, credential: Callable[[], Awaitable[str]] | str,
                 connections: int):
        self.url = yarl.URL(base_url.rstrip("/") + "/chat/completions")
        self._credential = credential
        self._headers = {"Accept": "application/json", "Content-Type": "application/json",
                         "User-Agent": USER_AGENT}
        for header, variable in (("OpenAI-Organization", "OPENAI_ORG_ID"),
                                 ("OpenAI-Project", "OPENAI_PROJECT_ID")):
            if os.environ.get(variable):
                self._headers[header] = os.environ[variable]
        # The environment's proxy, looked up once: aiohttp's trust_env looks it up, and reads
        # ~/.netrc, in a thread of its own for every request (two thread hops a request).
        try:
            self._proxy, self._proxy_auth = get_env_proxy_for_url(self.url)
        except LookupError:
            self._proxy = self._proxy_auth = None
        # No timeout of its own: the caller's deadline covers the whole request. No cookies:
        # an API answer's cookies are never sent back.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, ssl=_ssl_context()),
            timeout=aiohttp.ClientTimeout(total=None), cookie_jar=aiohttp.DummyCookieJar())

    async def post(self, body: Mapping[str, Any]) -> bytes:
        """The body of a 2xx answer; the SDK's APIStatusError for any other status, its
        APIConnectionError when no answer came (the transport's error as its cause)."""
        key = (self._credential if isinstance(self._credential, str)
               else await self._credential())
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False).encode()
        try:
            async with self._session.post(
                    self.url, data=data, proxy=self._proxy, proxy_auth=self._proxy_auth,
                    headers={**self._headers, "Authorization": f"Bearer {key}"}) as response:
                content = await response.read()
                if response.status >= 300:
                    raise status_error(response.status, response.headers, content,
                                       httpx2.Request("POST", str(self.url)))
                return content
        except aiohttp.ClientError as error:
            raise openai.APIConnectionError(
                message=f"{type(error).__name__}: {error}",
                request=httpx2.Request("POST", str(self.url))) from error

    async def close(self) -> None:
        await self._session.close()
