"""The live dashboard: `python -m realtime_ai.dashboard --help`."""
from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import sys

from realtime_ai.core.live import DATASET_KINDS, LiveBoard
from realtime_ai.dashboard.feeds import PubSubFeed, ReplayFeed
from realtime_ai.llm.accounting import load_prices
from realtime_ai.llm.base import LlmConfig, resolve_backend
from realtime_ai.llm.retrieval import load_playbook

SUBSCRIPTION = re.compile(r"^projects/[^/\s]+/subscriptions/[^/\s]+$")
DEFAULT_SPEED = 60.0


class InvalidArguments(ValueError):
    pass


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m realtime_ai.dashboard",
        description="realtime-ai's live dashboard: alerts, insights, metric sparklines and "
                    "model figures in a browser, from the job's Pub/Sub topics or a batch "
                    "run's outputs; /ws/dashboard/ID, /ask, /metrics.")
    p.add_argument("--port", type=int, default=8080, help="default: 8080")
    p.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    source = p.add_argument_group(
        "where events come from: subscriptions (the emulator's when PUBSUB_EMULATOR_HOST is "
        "set), or --output")
    for stream, what in (("alerts", "the job's --alerts_topic"),
                         ("insights", "the job's --insights_topic"),
                         ("metrics", "metric records or metrics/ rows, optional")):
        source.add_argument(f"--{stream}_subscription", default=None,
                            metavar="projects/P/subscriptions/S", help=f"on {what}")
    source.add_argument("--output", default=None, metavar="DIR",
                        help="a batch run's --output folder, replayed in event-time order")
    source.add_argument("--speed", type=float, default=DEFAULT_SPEED,
                        help="replay: event-time seconds per second; 0: all at once "
                             f"(default {DEFAULT_SPEED:g})")
    model = p.add_argument_group("/ask: questions answered by the deep model")
    model.add_argument("--llm_backend", choices=("local", "openai"), default=None,
                       help="default: openai when --llm_base_url or OPENAI_API_KEY is set, "
                            "else the embedded local rules (not an LLM)")
    model.add_argument("--llm_base_url", default=None,
                       help="an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    model.add_argument("--deep_model", default="gpt-4o", help="default: gpt-4o")
    model.add_argument("--llm_timeout_seconds", type=float, default=30.0, help="default: 30")
    model.add_argument("--cache_ttl_seconds", type=float, default=60.0,
                       help="the same question within this is answered from the cache "
                            "(default 60)")
    return p


def validate(args: argparse.Namespace) -> None:
    subscriptions = [getattr(args, f"{s}_subscription") for s in ("alerts", "insights",
                                                                  "metrics")]
    if args.output is None and not any(subscriptions):
        raise InvalidArguments("give --alerts_subscription/--insights_subscription (live) or "
                               "--output=DIR (a batch run's outputs)")
    if args.output is not None and any(subscriptions):
        raise InvalidArguments("give subscriptions or --output, not both")
    for value in filter(None, subscriptions):
        if not SUBSCRIPTION.match(value):
            raise InvalidArguments(f"{value!r} is not a subscription path: "
                                   "projects/PROJECT/subscriptions/NAME")
    if args.output is not None:
        if not os.path.isdir(args.output):
            raise InvalidArguments(f"--output={args.output}: no such folder (run the job "
                                   "first: make run)")
        if not any(os.path.isdir(os.path.join(args.output, name)) for name in DATASET_KINDS):
            raise InvalidArguments(f"--output={args.output} holds none of "
                                   f"{', '.join(DATASET_KINDS)}: not a job's --output")
    if args.speed < 0:
        raise InvalidArguments(f"--speed must be 0 or more, got {args.speed:g}")
    if not 0 < args.port < 65536:
        raise InvalidArguments(f"--port must be 1-65535, got {args.port}")
    if args.cache_ttl_seconds < 0 or args.llm_timeout_seconds <= 0:
        raise InvalidArguments("--cache_ttl_seconds must be >= 0, --llm_timeout_seconds > 0")
    with socket.socket() as probe:
        # as uvicorn binds: a port left in TIME_WAIT by a restarted server is free
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((args.host, args.port))
        except OSError as error:
            raise InvalidArguments(f"cannot serve on {args.host}:{args.port}: "
                                   f"{error.strerror} (choose another --port)") from None


def feeds(args: argparse.Namespace) -> list:
    if args.output is not None:
        return [ReplayFeed(args.output, args.speed)]
    return [PubSubFeed(stream, getattr(args, f"{stream}_subscription"))
            for stream in ("alerts", "insights", "metrics")
            if getattr(args, f"{stream}_subscription")]


def llm_config(args: argparse.Namespace) -> LlmConfig:
    return LlmConfig(backend=resolve_backend(args.llm_backend, args.llm_base_url),
                     base_url=args.llm_base_url, deep_model=args.deep_model,
                     timeout_seconds=args.llm_timeout_seconds,
                     cache_ttl_seconds=args.cache_ttl_seconds)


def build_app(args: argparse.Namespace):
    from realtime_ai.dashboard.app import Hub, create_app
    from realtime_ai.dashboard.ask import QuestionAnswerer

    hub = Hub(LiveBoard(load_prices()))
    return create_app(hub, feeds(args), QuestionAnswerer(llm_config(args), load_playbook()))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        validate(args)
    except InvalidArguments as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    import uvicorn

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(f"dashboard on http://{args.host}:{args.port}/ (Ctrl-C stops it)", flush=True)
    try:
        uvicorn.run(build_app(args), host=args.host, port=args.port, log_level="warning")
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
