"""The pipeline's one options class, and its start-up validation."""
from __future__ import annotations

import argparse
import dataclasses
import os

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from realtime_ai.core.detectors import DETECTORS, DetectorSettings
from realtime_ai.core.keyed import OrderingSettings
from realtime_ai.io.files import check_pattern_matches
from realtime_ai.io.pubsub import TOPIC_PATTERN
from realtime_ai.io.sources import (
    check_kafka,
    check_subscription,
    is_kafka,
    is_subscription,
    is_unbounded,
)
from realtime_ai.llm.base import LlmConfig, resolve_backend
from realtime_ai.llm.retrieval import load_playbook

LLM_BACKENDS = ("local", "openai")
RELEASE_STEP_SECONDS = 1.0


# Optional options -> the DetectorSettings field each overrides when given.
_DETECTOR_OPTIONS = {
    "anomaly_detector": "detector",
    "anomaly_threshold": "threshold",
    "anomaly_day_slots": "day_slots",
    "anomaly_warmup_values": "warmup_values",
    "anomaly_cooldown_values": "cooldown_values",
}


class InvalidOptions(ValueError):
    """Options a user must fix; the command prints the message, never a stack trace."""


class RealtimeAiOptions(PipelineOptions):
    """Options of realtime-ai; Beam's own options (runner, streaming, ...) come alongside."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--transactions", default=None,
            help="Transactions to read, by form: a file glob of JSON lines (.jsonl, .json, "
                 ".gz) or Parquet (.parquet), or several separated by commas, read in batch; "
                 "or a Pub/Sub subscription "
                 "projects/PROJECT/subscriptions/NAME, or a Kafka topic "
                 "kafka://HOST:PORT/TOPIC (on Flink), read in streaming (--streaming is then "
                 "implied). Optional; default: none. "
                 "Example: --transactions='samples/transactions*.jsonl'")
        parser.add_argument(
            "--metrics", default=None,
            help="Metric records to read, in the same forms as --transactions. Optional; "
                 "default: none. Example: --metrics=projects/my-project/subscriptions/metrics")
        parser.add_argument(
            "--kafka_expansion_service", default=None,
            help="Kafka inputs: the expansion service for Beam's cross-language KafkaIO, as "
                 "HOST:PORT of a running one or the path of a launcher .jar started on demand "
                 "with its Java transforms embedded in the runner. Default: on FlinkRunner the "
                 "one scripts/flink-cluster.sh assembles, elsewhere Beam's own. "
                 "Example: --kafka_expansion_service=localhost:8097")
        parser.add_argument(
            "--event_time_attribute", default=None,
            help="Pub/Sub inputs: message attribute holding the event time (RFC 3339 or ms "
                 "since the epoch) that the watermark follows; records still take their "
                 "event time from the payload's timestamp. Default: none (the watermark "
                 "follows publish time). Example: --event_time_attribute=event_time")
        parser.add_argument(
            "--output", default=None,
            help="Folder (local or gs://) under which the Parquet datasets transactions/, "
                 "metrics/, alerts/, insights/ and dead_letter/ are written. Required. "
                 "Example: --output=out/run1")
        parser.add_argument(
            "--file_window_seconds", type=int, default=60,
            help="Streaming: each output's rows are written as one Parquet file per event-time "
                 "window of this many seconds, under date=YYYY-MM-DD/hour=HH/. Default: 60. "
                 "Example: --file_window_seconds=300")
        parser.add_argument(
            "--window_grace_seconds", type=float, default=10.0,
            help="Streaming: event-time windows (file windows, dashboard insights) close this "
                 "many seconds after the watermark passes their end, so records released by "
                 "the per-key ordering just behind the watermark still land in them. "
                 "Default: 10. Example: --window_grace_seconds=30")
        parser.add_argument(
            "--max_run_seconds", type=float, default=None,
            help="Streaming: stop the job after this many seconds (windows not yet closed "
                 "are not written; for demos and tests). Default: none (run until "
                 "cancelled). Example: --max_run_seconds=120")
        parser.add_argument(
            "--alerts_topic", default=None,
            help="Pub/Sub topic the alerts are also published to, as JSON with attributes "
                 "alert_id, kind and severity (dedupe on alert_id: delivery is at least "
                 "once). Default: none (alerts/ only). "
                 "Example: --alerts_topic=projects/my-project/topics/alerts")
        parser.add_argument(
            "--insights_topic", default=None,
            help="Pub/Sub topic the dashboard insights are also published to, as JSON with "
                 "attributes dashboard_id and window_start. Default: none. "
                 "Example: --insights_topic=projects/my-project/topics/insights")
        parser.add_argument(
            "--llm_backend", default=None, choices=LLM_BACKENDS,
            help="Which model answers: 'openai' (any OpenAI-compatible endpoint: OpenAI, "
                 "Azure OpenAI, vLLM, Ollama) or 'local' (deterministic rules of ours, not an "
                 "LLM, labelled as such in every row). Default: 'openai' when --llm_base_url "
                 "or OPENAI_API_KEY is set, else 'local'. Example: --llm_backend=openai")
        parser.add_argument(
            "--llm_base_url", default=None,
            help="Base URL of the OpenAI-compatible endpoint; the key comes from the "
                 "OPENAI_API_KEY environment variable. Default: OpenAI's own. "
                 "Example: --llm_base_url=http://127.0.0.1:8000/v1")
        parser.add_argument(
            "--fast_model", default="gpt-4o-mini",
            help="Model that scores every transaction and explains metric anomalies. "
                 "Default: gpt-4o-mini. Example: --fast_model=llama3.1:8b")
        parser.add_argument(
            "--deep_model", default="gpt-4o",
            help="Model that analyses high-risk transactions with history and playbook "
                 "context. Default: gpt-4o. Example: --deep_model=gpt-4.1")
        parser.add_argument(
            "--llm_timeout_seconds", type=float, default=30.0,
            help="Per-request timeout in seconds. Default: 30. Example: --llm_timeout_seconds=10")
        parser.add_argument(
            "--llm_max_retries", type=int, default=4,
            help="Retries of a failed or invalid answer before the event is dead-lettered. "
                 "Default: 4. Example: --llm_max_retries=2")
        parser.add_argument(
            "--llm_concurrency", type=int, default=64,
            help="Model requests in flight per worker process. Default: 64. "
                 "Example: --llm_concurrency=16")
        parser.add_argument(
            "--fast_batch_size", type=int, default=1,
            help="Transactions packed into one fast-model request (one shared instruction, "
                 "one validated result per transaction id; missing ones are asked alone). "
                 "1 = no packing. Default: 1. Example: --fast_batch_size=10")
        parser.add_argument(
            "--llm_batch_wait_ms", type=float, default=50.0,
            help="Longest a request waits for others to pack with and, in streaming, to be "
                 "gathered into one bundle with, in ms. Default: 50. "
                 "Example: --llm_batch_wait_ms=20")
        parser.add_argument(
            "--llm_rpm", type=float, default=None,
            help="Client-side requests-per-minute budget per worker: requests are paced just "
                 "under it and slow down on 429s. Default: none. Example: --llm_rpm=500")
        parser.add_argument(
            "--llm_tpm", type=float, default=None,
            help="Client-side tokens-per-minute budget per worker (prompt tokens estimated "
                 "before the call). Default: none. Example: --llm_tpm=200000")
        parser.add_argument(
            "--latency_budget_ms", type=float, default=None,
            help="Latency budget of a deep-model call, in ms: one that overruns is cut and "
                 "answered by the fast model (the row's model column says which answered). "
                 "Default: none. Example: --latency_budget_ms=3000")
        parser.add_argument(
            "--cache_ttl_seconds", type=float, default=60.0,
            help="Identical model requests within this many seconds are paid for once (also "
                 "what keeps a retried bundle from paying twice). Default: 60. "
                 "Example: --cache_ttl_seconds=600")
        parser.add_argument(
            "--cache_url", default=None,
            help="Redis URL of a response cache shared by all workers (the in-worker cache "
                 "is always on). Default: none. Example: --cache_url=redis://10.0.0.5:6379/0")
        parser.add_argument(
            "--risk_threshold", type=float, default=0.8,
            help="Transactions with risk_score above this (0..1) get the deep analysis and "
                 "raise an alert. Default: 0.8. Example: --risk_threshold=0.7")
        parser.add_argument(
            "--history_size", type=int, default=50,
            help="Transactions kept per customer in state for features and deep analysis. "
                 "Default: 50. Example: --history_size=20")
        parser.add_argument(
            "--anomaly_window", type=int, default=100,
            help="Values per metric in the rolling statistics (z_score). Default: 100. "
                 "Example: --anomaly_window=200")
        parser.add_argument(
            "--insight_window_seconds", type=int, default=30,
            help="Event-time window, in seconds, of one dashboard insight per dashboard_id. "
                 "Default: 30. Example: --insight_window_seconds=60")
        parser.add_argument(
            "--anomaly_detector", default=None, choices=DETECTORS,
            help=f"Which detector sets anomaly_score: one of {', '.join(DETECTORS)}. 'seasonal' "
                 "scores how unlikely a value's surprise is against its time of day and the "
                 "metric's own history; 'zscore' is the article's |z| > 3 rule over "
                 f"--anomaly_window values. Default: {DetectorSettings.detector}. "
                 "Example: --anomaly_detector=zscore")
        parser.add_argument(
            "--anomaly_threshold", type=float, default=None,
            help="is_anomaly is anomaly_score >= this (0..1); only anomalies go to the model. "
                 f"Default: {DetectorSettings.threshold}. Example: --anomaly_threshold=0.9")
        parser.add_argument(
            "--anomaly_day_slots", type=int, default=None,
            help="seasonal detector: time-of-day slots with their own expected value and "
                 f"spread. Default: {DetectorSettings.day_slots} (half hours). "
                 "Example: --anomaly_day_slots=24")
        parser.add_argument(
            "--anomaly_warmup_values", type=int, default=None,
            help="seasonal detector: values per metric scored 0 while it learns. Default: "
                 f"{DetectorSettings.warmup_values}. Example: --anomaly_warmup_values=100")
        parser.add_argument(
            "--anomaly_cooldown_values", type=int, default=None,
            help="seasonal detector: values scored 0 after an alert, so one incident pages "
                 f"once. Default: {DetectorSettings.cooldown_values}. "
                 "Example: --anomaly_cooldown_values=30")
        parser.add_argument(
            "--context", default=None,
            help="JSON file of fraud playbook entries ([{id, title, text}, ...]) retrieved as "
                 "context for the deep analysis, re-read every --context_refresh_seconds while "
                 "the job runs. Default: the playbook shipped in the package. "
                 "Example: --context=gs://bucket/playbook.json")
        parser.add_argument(
            "--context_refresh_seconds", type=float, default=300.0,
            help="How often each worker re-reads --context (a failed re-read keeps the "
                 "version in use). Default: 300. Example: --context_refresh_seconds=60")
        parser.add_argument(
            "--allowed_lateness_seconds", type=float, default=3600.0,
            help="How far behind what was already processed for its customer or metric a "
                 "record may arrive and still be used (out of order); later ones go to "
                 "dead_letter/ with the reason. Default: 3600. "
                 "Example: --allowed_lateness_seconds=600")
        parser.add_argument(
            "--state_ttl_seconds", type=float, default=30 * 86400.0,
            help="A customer's history or a metric's statistics are forgotten after this "
                 "many seconds of event time without records. Default: 2592000 (30 days). "
                 "Example: --state_ttl_seconds=604800")
        parser.add_argument(
            "--dedupe_horizon_seconds", type=float, default=86400.0,
            help="A record whose id (transaction_id; a metric's timestamp and value) was "
                 "already seen for its customer or metric within this many seconds of event "
                 "time is a redelivery: it makes no second row and changes no feature. At "
                 "least --allowed_lateness_seconds, at most --state_ttl_seconds. "
                 "Default: 86400 (one day). Example: --dedupe_horizon_seconds=3600")
        parser.add_argument(
            "--max_record_bytes", type=int, default=65536,
            help="Records larger than this many bytes are dead-lettered. Default: 65536. "
                 "Example: --max_record_bytes=16384")

    def llm_config(self) -> LlmConfig:
        return LlmConfig(
            backend=resolve_backend(self.llm_backend, self.llm_base_url),
            base_url=self.llm_base_url,
            fast_model=self.fast_model,
            deep_model=self.deep_model,
            timeout_seconds=self.llm_timeout_seconds,
            max_retries=self.llm_max_retries,
            concurrency=self.llm_concurrency,
            fast_batch_size=self.fast_batch_size,
            batch_wait_ms=self.llm_batch_wait_ms,
            requests_per_minute=self.llm_rpm,
            tokens_per_minute=self.llm_tpm,
            cache_ttl_seconds=self.cache_ttl_seconds,
            cache_url=self.cache_url,
            latency_budget_ms=self.latency_budget_ms,
        )


    def ordering_settings(self) -> OrderingSettings:
        # Released a step at a time in streaming (see core/keyed.py), a step no longer than
        # the windows' grace, which covers how far outputs trail the watermark.
        return OrderingSettings.of_seconds(
            self.allowed_lateness_seconds, self.state_ttl_seconds, self.dedupe_horizon_seconds,
            release_step=min(RELEASE_STEP_SECONDS, self.window_grace_seconds))

    def detector_settings(self) -> DetectorSettings:
        overrides = {"window": self.anomaly_window}
        for option, setting in _DETECTOR_OPTIONS.items():
            if getattr(self, option) is not None:
                overrides[setting] = getattr(self, option)
        return dataclasses.replace(DetectorSettings(), **overrides)


def reads_stream(options: RealtimeAiOptions) -> bool:
    """Whether an input is a Pub/Sub subscription or a Kafka topic: a streaming job."""
    return any(spec and is_unbounded(spec) for spec in (options.transactions, options.metrics))


def options_parser(**parser_args) -> argparse.ArgumentParser:
    """A plain parser of our options alone: for --help and the template metadata."""
    parser = argparse.ArgumentParser(**parser_args)
    RealtimeAiOptions._add_argparse_args(parser)
    return parser


def validate(options: RealtimeAiOptions) -> None:
    """Raise InvalidOptions with a message a user can act on; called before anything runs."""
    unknown = sorted(set(options.get_all_options(retain_unknown_options=True))
                     - set(options.get_all_options()))
    if unknown:
        raise InvalidOptions("unknown option(s): " + ", ".join(f"--{name}" for name in unknown)
                             + " (see --help)")
    if not options.output:
        raise InvalidOptions("--output is required: the folder the Parquet outputs go to, "
                         "e.g. --output=out/run1")
    if not options.transactions and not options.metrics:
        raise InvalidOptions("nothing to read: give --transactions=GLOB, --metrics=GLOB or both")
    if not 0.0 <= options.risk_threshold <= 1.0:
        raise InvalidOptions(f"--risk_threshold must be in [0, 1], got {options.risk_threshold}")
    for name in ("history_size", "insight_window_seconds", "max_record_bytes",
                 "file_window_seconds",
                 "llm_concurrency", "fast_batch_size"):
        if getattr(options, name) < 1:
            raise InvalidOptions(f"--{name} must be at least 1, got {getattr(options, name)}")
    if options.anomaly_threshold is not None and not 0.0 <= options.anomaly_threshold <= 1.0:
        raise InvalidOptions("--anomaly_threshold must be in [0, 1], "
                             f"got {options.anomaly_threshold}")
    for name in ("anomaly_day_slots", "anomaly_warmup_values", "anomaly_cooldown_values"):
        if getattr(options, name) is not None and getattr(options, name) < (
                1 if name == "anomaly_day_slots" else 0):
            raise InvalidOptions(f"--{name} is out of range: {getattr(options, name)}")
    if options.anomaly_window < 2:
        raise InvalidOptions(f"--anomaly_window must be at least 2, got {options.anomaly_window}")
    if options.llm_max_retries < 0:
        raise InvalidOptions(f"--llm_max_retries must be >= 0, got {options.llm_max_retries}")
    for name in ("llm_rpm", "llm_tpm", "latency_budget_ms", "state_ttl_seconds",
                 "max_run_seconds", "context_refresh_seconds"):
        if getattr(options, name) is not None and getattr(options, name) <= 0:
            raise InvalidOptions(f"--{name} must be positive, got {getattr(options, name)}")
    if options.window_grace_seconds < 0:
        raise InvalidOptions("--window_grace_seconds must be >= 0, "
                             f"got {options.window_grace_seconds}")
    if options.allowed_lateness_seconds < 0:
        raise InvalidOptions("--allowed_lateness_seconds must be >= 0, "
                             f"got {options.allowed_lateness_seconds}")
    if not (options.allowed_lateness_seconds <= options.dedupe_horizon_seconds
            <= options.state_ttl_seconds):
        raise InvalidOptions(
            f"--dedupe_horizon_seconds must be at least --allowed_lateness_seconds "
            f"({options.allowed_lateness_seconds:g}) and at most --state_ttl_seconds "
            f"({options.state_ttl_seconds:g}), got {options.dedupe_horizon_seconds:g}")
    if options.cache_ttl_seconds < 0:
        raise InvalidOptions(f"--cache_ttl_seconds must be >= 0, got {options.cache_ttl_seconds}")
    if options.cache_url and not options.cache_url.startswith(("redis://", "rediss://")):
        raise InvalidOptions(f"--cache_url must be redis://HOST:PORT/DB, got {options.cache_url}")
    if options.llm_batch_wait_ms < 0:
        raise InvalidOptions(f"--llm_batch_wait_ms must be >= 0, got {options.llm_batch_wait_ms}")
    if options.llm_timeout_seconds <= 0:
        raise InvalidOptions("--llm_timeout_seconds must be positive, "
                         f"got {options.llm_timeout_seconds}")
    for name in ("alerts_topic", "insights_topic"):
        topic = getattr(options, name)
        if topic and not TOPIC_PATTERN.match(topic):
            raise InvalidOptions(f"--{name} must be projects/PROJECT_ID/topics/TOPIC with a "
                                 f"Google project id (e.g. local-project), got {topic}")
    for name in ("transactions", "metrics"):
        spec = getattr(options, name)
        if spec:
            check = (check_subscription if is_subscription(spec)
                     else check_kafka if is_kafka(spec) else check_pattern_matches)
            try:
                check(spec, f"--{name}")
            except ValueError as error:
                raise InvalidOptions(str(error)) from None
    if options.context:
        try:
            with FileSystems.open(options.context) as handle:
                load_playbook(handle.read().decode("utf-8"))
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise InvalidOptions(f"--context={options.context} is not a readable playbook "
                                 f"(JSON [{{id, title, text}}, ...]): {error}") from None
    backend = resolve_backend(options.llm_backend, options.llm_base_url)
    if backend == "openai" and not options.llm_base_url and not os.environ.get("OPENAI_API_KEY"):
        raise InvalidOptions("--llm_backend=openai needs OPENAI_API_KEY in the environment, or "
                         "--llm_base_url for an endpoint that takes no key")
