"""An OpenAI-compatible chat completions server answering with the local model's logic.

For tests and benchmarks. It answers the pipeline's tasks (strict JSON) and any other chat
request (free text from the same rules), streamed when asked (`stream=True`). It can be
slowed down (fixed or lognormal latency), rate limited like a provider (429 with an accurate
Retry-After), and broken on purpose, at random (--error_rate, --faults) or in a fixed order
(--fault_script): 429, 500, hangs past the client's timeout, malformed JSON, an answer dripped
a byte at a time, `usage` or `content` of the wrong type, NaN for every number of the answer.
Like OpenAI and Azure OpenAI, it answers 400 to a strict answer schema outside their subset
(llm/strict_schema.py) and to a `max_tokens` above the model's limit, and cuts an answer
longer than `max_tokens` (finish_reason "length").

    python -m realtime_ai.llm.server --port 8000 --latency_ms 200 --error_rate 0.1
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import math
import random
import re
import threading
import time
import uuid

from aiohttp import web

from realtime_ai.llm import local_model, strict_schema, tasks

FAULTS = ("rate_limited", "server_error", "hang", "malformed", "drip", "usage_wrong_type",
          "content_wrong_type", "nan")
# what --error_rate injects unless --faults says otherwise
DEFAULT_FAULTS = ("rate_limited", "server_error", "hang", "malformed")
HANG_SECONDS = 600.0
RATE_WINDOW_SECONDS = 60.0
ANSWER_TIMES_KEPT = 200_000
# the task of an answer to a request that is none of the pipeline's (a question, a refusal)
OTHER_ANSWER = "other"
TASK_KEY = "realtime_ai_task"  # where a request's task is noted, in the aiohttp request
MAX_COMPLETION_TOKENS = 16_384  # gpt-4o and gpt-4o-mini: larger max_tokens is a 400


@dataclasses.dataclass
class ServerSettings:
    latency_ms: float = 0.0  # median latency added to every answer
    latency_p95_ms: float | None = None  # when set: lognormal latency with this p95
    error_rate: float = 0.0  # share of requests answered with one of FAULTS
    rate_limit_rpm: int | None = None  # requests per sliding minute before 429s
    seed: int = 0
    faults: tuple[str, ...] = DEFAULT_FAULTS  # which faults --error_rate injects
    model_latency_ms: dict[str, float] = dataclasses.field(default_factory=dict)  # overrides
    # when set, a request without this bearer key gets a 401 that echoes the key it presented,
    # as careless providers do: how a client treats secrets in errors is tested against it
    required_api_key: str | None = None
    # when set, like Azure OpenAI with Entra ID: only "Authorization: Bearer <one of these>"
    bearer_tokens: frozenset[str] | None = None
    # faults for the next requests, one each, in order ("" = answer well), before any random
    fault_script: list[str] = dataclasses.field(default_factory=list)
    drip_seconds: float = 1.0  # the "drip" fault sends one byte of the answer this often
    stream_token_ms: float = 0.0  # pause between streamed chunks (stream=True)
    # added to the risk_score of one model's risk answers (kept within 0..1): two model
    # names that answer differently, as a shadow model and the fast model do
    model_risk_offset: dict[str, float] = dataclasses.field(default_factory=dict)
    # when set, the only models served: another is a 404 model_not_found, as OpenAI answers
    models: frozenset[str] | None = None


def _provider_refusal(body: dict) -> str | None:
    """What OpenAI or Azure OpenAI would answer 400 to in this request, in their words."""
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and not (
            isinstance(max_tokens, int) and 1 <= max_tokens <= MAX_COMPLETION_TOKENS):
        return (f"max_tokens is too large: {max_tokens}. This model supports at most "
                f"{MAX_COMPLETION_TOKENS} completion tokens, whereas you provided {max_tokens}.")
    json_schema = (body.get("response_format") or {}).get("json_schema") or {}
    if json_schema.get("strict"):
        problems = strict_schema.problems(json_schema.get("schema") or {})
        if problems:
            return (f"Invalid schema for response_format '{json_schema.get('name')}': "
                    f"{problems[0]}")
    return None


class _Server:
    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.stats: collections.Counter = collections.Counter()
        # wall-clock span of the traffic, for throughput measured where the requests land
        self.first_request_at: float | None = None
        self.last_answer_at: float | None = None
        self.in_flight = 0  # requests being answered now
        # when each of the latest answers went out, and of which task (the pipeline's, or
        # OTHER_ANSWER), for steady-state rates and for what a job asked last
        self.answers: collections.deque[tuple[float, str]] = collections.deque(
            maxlen=ANSWER_TIMES_KEPT)
        self._rng = random.Random(settings.seed)
        self._recent: collections.deque[float] = collections.deque()

    def _latency_seconds(self, model: str) -> float:
        if model in self.settings.model_latency_ms:
            return self.settings.model_latency_ms[model] / 1000.0
        median = self.settings.latency_ms / 1000.0
        if self.settings.latency_p95_ms and median > 0:
            sigma = math.log(self.settings.latency_p95_ms / self.settings.latency_ms) / 1.645
            return self._rng.lognormvariate(math.log(median), sigma)
        return median

    def _rate_limited_for(self) -> float | None:
        """Seconds until a slot frees up when the sliding-minute budget is spent, else None."""
        limit = self.settings.rate_limit_rpm
        if not limit:
            return None
        now = time.monotonic()
        while self._recent and now - self._recent[0] >= RATE_WINDOW_SECONDS:
            self._recent.popleft()
        if len(self._recent) >= limit:
            return RATE_WINDOW_SECONDS - (now - self._recent[0])
        self._recent.append(now)
        return None

    @staticmethod
    def _error(status: int, message: str, kind: str, headers=None) -> web.Response:
        body = {"error": {"message": message, "type": kind, "code": status}}
        return web.json_response(body, status=status, headers=headers)

    def _too_many(self, wait_seconds: float) -> web.Response:
        self.stats["status_429"] += 1
        headers = {"Retry-After": str(max(1, math.ceil(wait_seconds))),
                   "retry-after-ms": str(max(1, int(wait_seconds * 1000)))}
        return self._error(429, "rate limit reached", "rate_limit_exceeded", headers)

    async def chat(self, request: web.Request) -> web.Response:
        self.stats["requests"] += 1
        self.in_flight += 1
        self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self.in_flight)
        if self.first_request_at is None:
            self.first_request_at = time.time()
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1
            self.last_answer_at = time.time()
            self.answers.append((self.last_answer_at, request.get(TASK_KEY, OTHER_ANSWER)))

    def _model_answer(self, task: str, data: dict, model: str) -> dict:
        """The local model's answer, its risk scores moved by the model's offset."""
        answer = local_model.answer(task, data)
        offset = self.settings.model_risk_offset.get(model)
        if offset:
            for result in answer.get("results", [answer]):
                if "risk_score" in result:
                    result["risk_score"] = round(min(1.0, max(0.0, result["risk_score"]
                                                              + offset)), 4)
        return answer

    def _next_fault(self) -> str | None:
        if self.settings.fault_script:
            return self.settings.fault_script.pop(0) or None
        if self._rng.random() < self.settings.error_rate:
            return self._rng.choice(self.settings.faults)
        return None

    async def _drip(self, request: web.Request, body: dict) -> web.StreamResponse:
        """The answer one byte at a time: each read is quick, the whole answer is not."""
        self.stats["drips"] += 1
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for byte in json.dumps(body).encode():
            await response.write(bytes([byte]))
            await asyncio.sleep(self.settings.drip_seconds)
        await response.write_eof()
        return response

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        required = self.settings.required_api_key
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if required is not None and presented != required:
            self.stats["status_401"] += 1
            return self._error(401, f"Incorrect API key provided: {presented}",
                               "invalid_request_error")
        tokens = self.settings.bearer_tokens
        if tokens is not None and request.headers.get("Authorization") not in {
                f"Bearer {token}" for token in tokens}:
            self.stats["status_401"] += 1
            return self._error(401, "Unauthorized. Access token is missing, invalid, audience "
                               "is incorrect (https://cognitiveservices.azure.com), or have "
                               "expired.", "invalid_request_error")
        try:
            body = await request.json()
            if _asks_for_json(body):  # one of the pipeline's tasks
                task, data = tasks.request_task_and_data(body["messages"],
                                                         body.get("response_format"))
                request[TASK_KEY] = task
                answer_text = lambda: json.dumps(  # noqa: E731
                    self._model_answer(task, data, body["model"]))
            else:  # any other chat request: a free-text answer
                question, data = tasks.question_and_data(body["messages"])
                answer_text = lambda: local_model.answer_question(question, data)  # noqa: E731
            model = body["model"]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError,
                tasks.InvalidAnswer) as error:
            self.stats["status_400"] += 1
            return self._error(400, f"bad request: {error}", "invalid_request_error")
        refusal = _provider_refusal(body)
        if refusal:
            self.stats["status_400"] += 1
            return self._error(400, refusal, "invalid_request_error")
        if self.settings.models is not None and model not in self.settings.models:
            self.stats["status_404"] += 1
            return self._error(404, f"The model `{model}` does not exist or you do not have "
                               "access to it.", "model_not_found")
        self.stats[f"model:{model}"] += 1
        if "max_tokens" not in body:
            self.stats["without_max_tokens"] += 1
        wait = self._rate_limited_for()
        if wait is not None:
            return self._too_many(wait)
        # The answer is due its latency after the request came in: the time taken to read,
        # check and answer it is part of that latency, as it is of a provider's.
        content = answer_text()
        await asyncio.sleep(max(0.0, arrived + self._latency_seconds(model) - time.monotonic()))
        fault = self._next_fault()
        if fault == "rate_limited":
            return self._too_many(1.0)
        if fault == "server_error":
            self.stats["status_500"] += 1
            return self._error(500, "injected server error", "server_error")
        if fault == "hang":
            self.stats["hangs"] += 1
            await asyncio.sleep(HANG_SECONDS)
        if fault == "nan" and _asks_for_json(body):
            self.stats["nan"] += 1
            content = json.dumps(_nan_numbers(json.loads(content)))
        if fault == "malformed":
            self.stats["malformed"] += 1
            content = content[: len(content) // 2]
        finish_reason = "stop"
        if "max_tokens" in body and tasks.estimate_tokens(content) > body["max_tokens"]:
            self.stats["cut_at_max_tokens"] += 1
            content, finish_reason = content[: body["max_tokens"] * 4], "length"
        prompt_tokens = tasks.estimate_tokens(body["messages"])
        completion_tokens = tasks.estimate_tokens(content)
        self.stats["status_200"] += 1
        self.stats["prompt_tokens"] += prompt_tokens
        self.stats["completion_tokens"] += completion_tokens
        if body.get("stream"):
            return await self._stream(request, model, content, prompt_tokens, completion_tokens)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        reply = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "finish_reason": finish_reason,
                         "message": {"role": "assistant",
                                     "content": (json.loads(content)
                                                 if fault == "content_wrong_type"
                                                 else content)}}],
            "usage": json.dumps(usage) if fault == "usage_wrong_type" else usage,
        }
        if fault in ("usage_wrong_type", "content_wrong_type"):
            self.stats[fault] += 1
        if fault == "drip":
            return await self._drip(request, reply)
        return web.json_response(reply)

    async def _stream(self, request: web.Request, model: str, content: str,
                      prompt_tokens: int, completion_tokens: int) -> web.StreamResponse:
        """The answer as OpenAI's server-sent chunks: a word a chunk, then usage, then [DONE]."""
        self.stats["streamed"] += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        chunk_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"

        def chunk(delta: dict, finish_reason: str | None = None, usage=None) -> bytes:
            body = {"id": chunk_id, "object": "chat.completion.chunk",
                    "created": int(time.time()), "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
            if usage is not None:
                body["usage"] = usage
            return f"data: {json.dumps(body)}\n\n".encode()

        await response.write(chunk({"role": "assistant", "content": ""}))
        for word in re.findall(r"\S+\s*", content):
            await response.write(chunk({"content": word}))
            await asyncio.sleep(self.settings.stream_token_ms / 1000.0)
        await response.write(chunk({}, "stop", {
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": "local-rules-v1", "object": "model", "owned_by": "realtime-ai"}]})

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response({**self.stats, "first_request_at": self.first_request_at,
                                  "last_answer_at": self.last_answer_at})

    async def get_answer_times(self, request: web.Request) -> web.Response:
        return web.json_response([answered_at for answered_at, _ in self.answers])

    async def get_answer_times_by_task(self, request: web.Request) -> web.Response:
        by_task: dict[str, list[float]] = {}
        for answered_at, task in self.answers:
            by_task.setdefault(task, []).append(answered_at)
        return web.json_response(by_task)

    async def reset_stats(self, request: web.Request) -> web.Response:
        self.stats.clear()
        self.answers.clear()
        self.first_request_at = self.last_answer_at = None
        self._recent.clear()
        return web.json_response({})

    def app(self) -> web.Application:
        application = web.Application()
        application.add_routes([
            web.post("/v1/chat/completions", self.chat),
            web.get("/v1/models", self.models),
            web.get("/stats", self.get_stats),
            web.get("/stats/answer_times", self.get_answer_times),
            web.get("/stats/answer_times_by_task", self.get_answer_times_by_task),
            web.post("/stats/reset", self.reset_stats),
        ])
        return application


def _nan_numbers(value):
    """The answer with NaN for every number in it."""
    if isinstance(value, dict):
        return {k: _nan_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_numbers(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return math.nan
    return value


def _asks_for_json(body: dict) -> bool:
    """The pipeline's tasks ask for a JSON schema; anything else gets free text."""
    return (body.get("response_format") or {}).get("type") == "json_schema"


async def _start(server: _Server, host: str, port: int) -> tuple[web.AppRunner, int]:
    # handler_cancellation: a hung answer stops when its client gives up, as real servers do
    runner = web.AppRunner(server.app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


class ServerHandle:
    """A server running on its own thread and loop; `settings` may be changed while it runs."""

    def __init__(self, host: str, port: int, settings: ServerSettings):
        self._server = _Server(settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="llm-test-server")
        self._thread.start()
        self._runner, self.port = asyncio.run_coroutine_threadsafe(
            _start(self._server, host, port), self._loop).result()
        self.base_url = f"http://{host}:{self.port}/v1"

    @property
    def settings(self) -> ServerSettings:
        return self._server.settings

    @property
    def stats(self) -> collections.Counter:
        return self._server.stats

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()


def start_in_thread(port: int = 0, host: str = "127.0.0.1", **settings) -> ServerHandle:
    return ServerHandle(host, port, ServerSettings(**settings))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="default: 8000")
    parser.add_argument("--latency_ms", type=float, default=0.0,
                        help="median added latency per answer, ms (default 0)")
    parser.add_argument("--latency_p95_ms", type=float, default=None,
                        help="p95 latency, ms: makes latency lognormal (default: fixed)")
    parser.add_argument("--error_rate", type=float, default=0.0,
                        help="share of requests failed on purpose, 0..1 (default 0)")
    parser.add_argument("--rate_limit_rpm", type=int, default=None,
                        help="requests per sliding minute before 429 (default: unlimited)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault mix")
    parser.add_argument("--model_latency", action="append", default=[],
                        metavar="MODEL=MS", help="fixed latency of one model (repeatable)")
    parser.add_argument("--model_risk_offset", action="append", default=[],
                        metavar="MODEL=DELTA",
                        help="added to one model's risk scores, within 0..1 (repeatable)")
    parser.add_argument("--faults", default=",".join(DEFAULT_FAULTS),
                        help=f"comma-separated faults --error_rate injects, of {','.join(FAULTS)} "
                             f"(default: {','.join(DEFAULT_FAULTS)})")
    parser.add_argument("--fault_script", default="",
                        help="comma-separated faults for the first requests, one each, in "
                             "order (empty = a good answer), e.g. server_error,,drip")
    parser.add_argument("--drip_seconds", type=float, default=1.0,
                        help="the drip fault sends one byte this often, s (default 1)")
    args = parser.parse_args(argv)
    faults = tuple(args.faults.split(","))
    script = args.fault_script.split(",") if args.fault_script else []
    if not set(faults) | set(script) <= set(FAULTS) | {""}:
        parser.error(f"--faults, --fault_script: choose from {', '.join(FAULTS)}")
    model_latency, risk_offset = ({model: float(value) for model, _, value in
                                   (item.partition("=") for item in items)}
                                  for items in (args.model_latency, args.model_risk_offset))
    # by name: the fields are not in the order of the flags
    settings = ServerSettings(
        latency_ms=args.latency_ms, latency_p95_ms=args.latency_p95_ms,
        error_rate=args.error_rate, rate_limit_rpm=args.rate_limit_rpm, seed=args.seed,
        faults=faults, model_latency_ms=model_latency, fault_script=script,
        drip_seconds=args.drip_seconds, model_risk_offset=risk_offset)

    async def serve() -> None:
        runner, port = await _start(_Server(settings), args.host, args.port)
        print(f"listening on http://{args.host}:{port}/v1", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
