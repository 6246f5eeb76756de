"""Our chat completions transport sends and fails as the OpenAI SDK did: both against one
recording server on loopback."""
import asyncio
import subprocess
import sys
import textwrap

import httpx2
import openai
import pytest
from aiohttp import web

from realtime_ai.llm import failures, runner
from realtime_ai.llm.transport import ChatCompletions

pytestmark = pytest.mark.integration
BODY = {"model": "small", "messages": [{"role": "user", "content": "prix: 3 €"}],
        "temperature": 0, "max_tokens": 60}
ANSWER = b'{"choices": []}'
SENT_HEADERS = ("Authorization", "Content-Type", "Accept", "OpenAI-Organization",
                "OpenAI-Project")


async def _recording_server(status: int, headers: dict[str, str], body: bytes):
    """A server answering every POST with `status`, recording what it was sent."""
    seen = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(({name: request.headers.get(name) for name in SENT_HEADERS},
                     await request.read()))
        return web.Response(status=status, headers=headers, body=body)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    app_runner = web.AppRunner(app)
    await app_runner.setup()
    site = web.TCPSite(app_runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}/v1", seen, app_runner


async def _both(status: int, headers: dict[str, str], body: bytes):
    """(what the SDK's post returned or raised, what ours did, what the server saw of each)."""
    base_url, seen, app_runner = await _recording_server(status, headers, body)
    sdk = openai.AsyncOpenAI(api_key="sk-key", base_url=base_url, max_retries=0,
                             http_client=openai.DefaultAioHttpClient())
    ours = ChatCompletions(base_url, "sk-key", connections=2)
    outcomes = []
    try:
        for send in (lambda: sdk.post("/chat/completions", cast_to=httpx2.Response, body=BODY),
                     lambda: ours.post(BODY)):
            try:
                outcomes.append(await send())
            except openai.OpenAIError as error:
                outcomes.append(error)
    finally:
        await sdk.close()
        await ours.close()
        await app_runner.cleanup()
    return outcomes[0], outcomes[1], seen


def test_a_request_carries_the_sdks_body_and_headers(monkeypatch):
    monkeypatch.setenv("OPENAI_ORG_ID", "org-1")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-1")
    sdk, ours, seen = runner.submit(_both(200, {}, ANSWER)).result(10)
    assert sdk.content == ours == ANSWER
    assert seen[0] == seen[1]  # headers and body bytes alike
    assert seen[1][0]["Authorization"] == "Bearer sk-key"
    assert seen[1][0]["OpenAI-Project"] == "proj-1"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 418, 422, 429, 500, 503])
def test_an_error_status_raises_the_sdks_exception_and_classifies_alike(status):
    sdk, ours, _ = runner.submit(_both(status, {"retry-after": "7"},
                                       b'{"error": {"message": "no"}}')).result(10)
    assert type(ours) is type(sdk) and ours.status_code == sdk.status_code == status
    assert ours.body == sdk.body == {"message": "no"}
    assert failures.classify(ours) == failures.classify(sdk)


def test_a_refused_connection_raises_a_connection_error_with_its_cause():
    async def refused():
        ours = ChatCompletions("http://127.0.0.1:9/v1", "sk-key", connections=1)
        try:
            await ours.post(BODY)
        finally:
            await ours.close()

    with pytest.raises(openai.APIConnectionError) as raised:
        runner.submit(refused()).result(10)
    assert failures.classify(raised.value).reason == "connection refused"


def test_an_entra_id_token_is_asked_for_before_each_request():
    tokens = iter(["t-1", "t-2"])

    async def token():
        await asyncio.sleep(0)
        return next(tokens)

    async def twice():
        base_url, seen, app_runner = await _recording_server(200, {}, ANSWER)
        ours = ChatCompletions(base_url, token, connections=1)
        try:
            await ours.post(BODY)
            await ours.post(BODY)
        finally:
            await ours.close()
            await app_runner.cleanup()
        return [headers["Authorization"] for headers, _ in seen]

    assert runner.submit(twice()).result(10) == ["Bearer t-1", "Bearer t-2"]


def test_requests_go_through_the_proxy_the_environment_names(monkeypatch):
    async def through_proxy():
        proxy_url, seen, app_runner = await _recording_server(200, {}, ANSWER)
        monkeypatch.setenv("HTTP_PROXY", proxy_url.removesuffix("/v1"))
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        ours = ChatCompletions("http://model.invalid/v1", "sk-key", connections=1)
        try:
            return await ours.post(BODY), len(seen)
        finally:
            await ours.close()
            await app_runner.cleanup()

    assert runner.submit(through_proxy()).result(10) == (ANSWER, 1)


def test_a_worker_asks_the_model_without_loading_the_openai_package():
    # Only failures need the package's types; importing it (about 0.7 s of CPU) inside a
    # streaming worker's first bundle held up the events behind it. In a fresh interpreter:
    # the model step's modules and an answered request, then a failure, which loads it.
    code = textwrap.dedent("""
        import os, sys
        from realtime_ai.llm import base, runner, server
        from realtime_ai.llm.base import LlmConfig
        from realtime_ai.llm.client import make_backend
        from realtime_ai.transforms import ask_model

        os.environ["OPENAI_API_KEY"] = "sk-test"
        handle = server.start_in_thread(port=0)
        insight = {"dashboard_id": "d", "window_start": "a", "window_end": "b", "metrics": []}
        backend = make_backend(LlmConfig(backend="openai", base_url=handle.base_url))
        answer = runner.submit(backend.complete(base.DASHBOARD_INSIGHT, insight,
                                                base.FAST)).result(timeout=60)
        print(bool(answer.answer), "openai" in sys.modules)
        down = make_backend(LlmConfig(backend="openai", base_url="http://127.0.0.1:9/v1",
                                      max_retries=0))
        runner.submit(down.complete(base.DASHBOARD_INSIGHT, insight, base.FAST)).exception(
            timeout=60)  # degraded to the local rules (the default) or raised: either way
        print("openai" in sys.modules)
        handle.stop()
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.split("\n")[:2] == ["True False", "True"], done.stderr
