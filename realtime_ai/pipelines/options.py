"""The pipeline's one options class. Every option of ours is declared once, in OPTIONS (name,
value type, default, help, example, start-up check), and everything else is derived from
that table: argparse, --help, start-up validation and the Flex Template metadata
(pipelines/template.py). Adding an option is adding one `Option(...)` to the table.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import logging
import os
import re
import shlex
import socket
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    DebugOptions,
    DirectOptions,
    FlinkRunnerOptions,
    PipelineOptions,
    PortableOptions,
    StandardOptions,
    WorkerOptions,
    _BeamArgumentParser,
)
from apache_beam.runners.runner import PipelineRunner

from realtime_ai.core.detectors import DETECTOR_DEFAULTS, DETECTORS, DetectorSettings
from realtime_ai.core.keyed import OrderingSettings
from realtime_ai.io.files import check_pattern_matches
from realtime_ai.io.parquet import check_dataset, check_output_folder
from realtime_ai.io.pubsub import TOPIC_PATTERN
from realtime_ai.io.sources import (
    check_kafka,
    check_subscription,
    is_kafka,
    is_subscription,
    is_unbounded,
    kafka_consumer_properties,
)
from realtime_ai.llm import memo
from realtime_ai.llm.auth import AUTH_AZURE, AUTH_KEY, AUTH_METHODS, AZURE_SCOPE
from realtime_ai.llm.base import DEGRADE, ON_MODEL_FAILURE, LlmConfig, resolve_backend
from realtime_ai.llm.credentials import InvalidApiKey, api_key
from realtime_ai.llm.retrieval import (
    MAX_PAST_ALERTS,
    REQUIRED_PAST_ALERT_COLUMNS,
    load_playbook,
)
from realtime_ai.pipelines.option_values import (
    MAX_SECONDS,
    Choice,
    Integer,
    Matching,
    Number,
    OptionValue,
    Seconds,
    Text,
    Url,
    UrlList,
)

LLM_BACKENDS = ("local", "openai")
DEFAULT_SHADOW_SAMPLE = 0.05
# Streaming: each key's waiting records are released a step of event time at a time
# (core/keyed.py): a busy key takes one timer per step, not one per timestamp, and every key's
# timers fall on the same instants, fired together once the watermark passes one. Customers'
# transactions released at their own times instead (a step of 0) left the per-customer step 8 s
# behind at 330 events/s on Flink in a run (alerts p50 18.7 s): timers at many instants each
# cost it a round of bundles.
RELEASE_STEP_SECONDS = 1.0
ENDPOINT_CONNECT_SECONDS = 5.0
ENDPOINTS = UrlList(Url(("http", "https"), "http(s)://HOST[:PORT][/PATH]"))
TOPIC_FORM = "projects/PROJECT_ID/topics/TOPIC with a Google project id (e.g. local-project)"


class InvalidOptions(ValueError):
    """Options a user must fix; the command prints the message, never a stack trace. On one
    line: characters of the user's text quoted in it that are not printable are escaped."""

    def __str__(self) -> str:
        return "".join(char if char.isprintable() else ascii(char)[1:-1]
                       for char in super().__str__())


def _per_detector(setting: str) -> str:
    """A setting's default for each detector that has one, e.g. '0.4 (novelty), 0.3 (seasonal)'."""
    return ", ".join(f"{defaults[setting]} ({detector})"
                     for detector, defaults in DETECTOR_DEFAULTS.items() if setting in defaults)


def _check_input(spec: str, flag: str) -> None:
    check = (check_subscription if is_subscription(spec)
             else check_kafka if is_kafka(spec) else check_pattern_matches)
    check(spec, flag)


def _check_kafka_config(items: list[str], flag: str) -> None:
    kafka_consumer_properties(items)


def _check_playbook(path: str, flag: str) -> None:
    try:
        with FileSystems.open(path) as handle:
            load_playbook(handle.read().decode("utf-8"))
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{flag}={path} is not a readable playbook "
                         f"(JSON [{{id, title, text}}, ...]): {error}") from None


def _check_past_alerts(path: str, flag: str) -> None:
    try:
        check_dataset(path, REQUIRED_PAST_ALERT_COLUMNS)
    except (OSError, ValueError) as error:
        raise ValueError(f"{flag}={path} is not an alerts dataset (the alerts/ folder of an "
                         f"earlier run): {error}") from None


def _check_output(path: str, flag: str) -> None:
    """A local output folder: a folder, or one that can be made, that a file can be written
    in (probed). A remote one: a filesystem Beam knows for its scheme (its permissions are
    the workers', checked when they write)."""
    if urllib.parse.urlsplit(path).scheme:
        try:
            FileSystems.get_filesystem(path)
        except ValueError as error:
            raise ValueError(f"{flag}={path}: {error}") from None
        return
    folder = os.path.abspath(path)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"{flag}={path} is a file, not a folder")
    check_output_folder(path, flag)


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of ours, --`name`.

    `value` reads and range-checks the text (pure, run by argparse on every parse);
    `check`, when given, is what the value must find in the world (files, a playbook), run
    once before the job starts and raising ValueError with the reason."""

    name: str
    value: OptionValue
    default: Any
    help: str
    example: str
    default_text: str | None = None  # how --help shows the default, when not the value itself
    required: bool = False
    check: Callable[[Any, str], None] | None = None
    repeatable: bool = False  # given once per value: the option holds a list

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    def help_text(self) -> str:
        if self.required:
            default = "Required"
        elif self.default_text is not None:
            default = f"Default: {self.default_text}"
        elif isinstance(self.default, float) and self.default.is_integer():
            default = f"Default: {int(self.default)}"
        else:
            default = f"Default: {'none' if self.default is None else self.default}"
        return f"{self.help} {default}. Example: {self.flag}={shlex.quote(self.example)}"


OPTIONS: tuple[Option, ...] = (
    Option("transactions", Text(), None,
           "Transactions to read, by form: a file glob of JSON lines (.jsonl, .json, .gz) or "
           "Parquet (.parquet), or several separated by commas, read in batch; or a Pub/Sub "
           "subscription projects/PROJECT/subscriptions/NAME, or a Kafka topic "
           "kafka://HOST:PORT/TOPIC (on Flink), read in streaming (--streaming is then "
           "implied).", "samples/transactions*.jsonl", check=_check_input),
    Option("metrics", Text(), None,
           "Metric records to read, in the same forms as --transactions.",
           "projects/my-project/subscriptions/metrics", check=_check_input),
    Option("kafka_expansion_service", Text(), None,
           "Kafka inputs: the expansion service for Beam's cross-language KafkaIO, as "
           "HOST:PORT of a running one or the path of a launcher .jar started on demand with "
           "its Java transforms embedded in the runner.", "localhost:8097",
           default_text="on FlinkRunner the one scripts/flink-cluster.sh assembles, elsewhere "
                        "Beam's own"),
    Option("kafka_config", Text(), None,
           "Kafka inputs: a consumer property KEY=VALUE, repeatable: SASL/SSL settings, "
           "group.id, ... (bootstrap.servers comes from the kafka:// input).",
           "security.protocol=SASL_SSL", repeatable=True, check=_check_kafka_config),
    Option("event_time_attribute", Text(), None,
           "Pub/Sub inputs: message attribute holding the event time (RFC 3339 or ms since "
           "the epoch) that the watermark follows; records still take their event time from "
           "the payload's timestamp.", "event_time",
           default_text="none (the watermark follows publish time)"),
    Option("output", Text(), None,
           "Folder (local or gs://) under which the Parquet datasets transactions/, metrics/, "
           "alerts/, insights/ and dead_letter/ (and shadow/ with --shadow_fast_model) are "
           "written.", "out/run1", required=True,
           check=_check_output),
    Option("file_window_seconds", Integer(1, MAX_SECONDS), 60,
           "Streaming: each output's rows are written as one Parquet file per event-time "
           "window of this many seconds, under date=YYYY-MM-DD/hour=HH/.", "300"),
    Option("window_grace_seconds", Seconds(), 10.0,
           "Streaming: event-time windows (file windows, dashboard insights) close this many "
           "seconds after the watermark passes their end, so records released by the per-key "
           "ordering just behind the watermark still land in them. A value later than that "
           "misses its window's insight: it goes to dead_letter/ ('late for insight window', "
           "up to --allowed_lateness_seconds).", "30"),
    Option("max_run_seconds", Seconds(above=True), None,
           "Streaming: stop the job after this many seconds (windows not yet closed are not "
           "written; for demos and tests).", "120", default_text="none (run until cancelled)"),
    Option("alerts_topic", Matching(TOPIC_PATTERN.pattern, TOPIC_FORM), None,
           "Pub/Sub topic the alerts are also published to, as JSON with attributes "
           "alert_id, kind and severity (dedupe on alert_id: delivery is at least once).",
           "projects/my-project/topics/alerts", default_text="none (alerts/ only)"),
    Option("insights_topic", Matching(TOPIC_PATTERN.pattern, TOPIC_FORM), None,
           "Pub/Sub topic the dashboard insights are also published to, as JSON with "
           "attributes dashboard_id and window_start.", "projects/my-project/topics/insights"),
    Option("llm_backend", Choice(LLM_BACKENDS), None,
           "Which model answers: 'openai' (any OpenAI-compatible endpoint: OpenAI, Azure "
           "OpenAI, vLLM, Ollama) or 'local' (deterministic rules of ours, not an LLM, "
           "labelled as such in every row).", "openai",
           default_text="'openai' when --llm_base_url or OPENAI_API_KEY is set, else 'local'"),
    Option("llm_base_url", ENDPOINTS, None,
           "Base URL of the OpenAI-compatible endpoint, or several separated by commas (each "
           "request goes to the least-loaded healthy one; a failing one is taken out by its "
           "own circuit breaker); the key comes from the OPENAI_API_KEY environment variable "
           "(surrounding whitespace, such as a secret file's newline, is trimmed).",
           "http://10.0.0.1:8000/v1,http://10.0.0.2:8000/v1", default_text="OpenAI's own"),
    Option("fast_base_url", ENDPOINTS, None,
           "The fast model's endpoint(s), in the form of --llm_base_url, instead of it.",
           "https://eastus.example.com/openai/v1/", default_text="--llm_base_url"),
    Option("deep_base_url", ENDPOINTS, None,
           "The deep model's endpoint(s), in the form of --llm_base_url, instead of it.",
           "https://westus.example.com/openai/v1/", default_text="--llm_base_url"),
    Option("llm_auth", Choice(AUTH_METHODS), AUTH_KEY,
           "How requests sign in: 'key' (the OPENAI_API_KEY environment variable) or 'azure' "
           "(Microsoft Entra ID tokens from azure-identity's DefaultAzureCredential on each "
           "worker: managed identity, workload identity, AZURE_* variables or az login; "
           "refreshed before they expire).", "azure"),
    Option("llm_auth_scope", Text(), AZURE_SCOPE,
           "--llm_auth=azure: the token scope.", "https://ai.azure.com/.default"),
    Option("fast_model", Text(), "gpt-4o-mini",
           "Model that scores every transaction and explains metric anomalies.",
           "llama3.1:8b"),
    Option("deep_model", Text(), "gpt-4o",
           "Model that analyses high-risk transactions with history and playbook context.",
           "gpt-4.1"),
    Option("shadow_fast_model", Text(), None,
           "A second model asked, beside --fast_model, about a sample of the transactions "
           "(--shadow_sample), through the fast model's endpoints and settings; its answers "
           "change nothing in the pipeline's outputs: they are compared with the fast "
           "model's in the shadow/ dataset (risk difference, escalation agreement, "
           "latencies) and summarised at the end of a run. A shadow call that fails is a "
           "shadow row with the reason, never a dead letter.", "gpt-4.1-mini",
           default_text="none (no shadow model)"),
    Option("shadow_sample", Number(0, 1, above=True), None,
           "--shadow_fast_model: the share of transactions (0..1) it is asked about, chosen "
           "by a hash of the transaction id, so batch runs, streams and replays compare the "
           "same transactions.", "0.1", default_text=f"{DEFAULT_SHADOW_SAMPLE:g}"),
    Option("llm_timeout_seconds", Seconds(above=True), 30.0,
           "Per-request timeout in seconds.", "10"),
    Option("llm_max_retries", Integer(0, 100), 4,
           "Retries of a failed or invalid answer before the event is dead-lettered.", "2"),
    Option("llm_concurrency", Integer(1, 10_000), 64,
           "Model requests in flight per worker process, per model: the fast and the deep "
           "model each have this many (a slow deep model never holds the fast model's), "
           "tiers asking the same model at the same endpoints share them.", "16"),
    Option("fast_batch_size", Integer(1, 1000), 1,
           "Transactions packed into one fast-model request (one shared instruction, one "
           "validated result per transaction id; missing ones are asked alone). 1 = no "
           "packing.", "10"),
    Option("llm_batch_wait_ms", Number(0, 3_600_000), 50.0,
           "Longest a request waits for others to pack with and, in streaming, to be "
           "gathered into one bundle with, in ms.", "20"),
    Option("llm_rpm", Number(0, 1e9, above=True), None,
           "Client-side requests-per-minute budget of the whole job: requests are paced just "
           "under it and slow down on 429s. With --cache_url the workers share one budget in "
           "Redis; without (or while Redis is down) each worker takes its share, the budget "
           "divided by --llm_budget_workers.", "500"),
    Option("llm_tpm", Number(0, 1e12, above=True), None,
           "Client-side tokens-per-minute budget of the whole job, shared as --llm_rpm (a "
           "request reserves its estimated tokens; its answer's usage corrects that).",
           "200000"),
    Option("llm_budget_workers", Integer(1, 1_000_000), None,
           "Worker processes that split --llm_rpm/--llm_tpm between them when no Redis "
           "budget is shared.", "8",
           default_text="what the runner's options say: 1 on Prism and the DirectRunner "
                        "(--direct_num_workers with --direct_running_mode=multi_processing), "
                        "--parallelism on Flink, --max_num_workers (else --num_workers) "
                        "times the vCPUs of --machine_type on Dataflow"),
    Option("latency_budget_ms", Number(0, MAX_SECONDS * 1000, above=True), None,
           "Latency budget of a deep-model call, in ms: one that overruns is cut and answered "
           "by the fast model (the row's model column says which answered).", "3000"),
    Option("cache_ttl_seconds", Seconds(), 60.0,
           "Identical model requests within this many seconds are paid for once (also what "
           "keeps a retried bundle from paying twice).", "600"),
    Option("cache_url", Url(("redis", "rediss"), "redis://HOST:PORT/DB"), None,
           "Redis URL of a response cache shared by all workers (the in-worker cache is "
           "always on).", "redis://10.0.0.5:6379/0"),
    Option("memo", Text(), None,
           "Where model answers are remembered by event (event id, task, model, prompt "
           "version), with no expiry: a re-run of a range or a replayed stream asks the model "
           "only for events it never answered. redis://HOST:PORT/N, or a folder (local or "
           "gs://) holding one small file per answer. Used with a model endpoint (the local "
           "rules model is free).", "gs://my-bucket/realtime-ai/memo",
           check=lambda location, flag: memo.check_location(location)),
    Option("on_model_failure", Choice(ON_MODEL_FAILURE), DEGRADE,
           "What happens to an event the model cannot answer (retries spent, circuit open, "
           "request refused): 'degrade' = the local rules answer it and its row's model "
           "column says 'local-rules-v1 (degraded: REASON)' (counted as llm_degraded); "
           "'dead_letter' = it goes to dead_letter/ with the reason.", "dead_letter"),
    Option("risk_threshold", Number(0, 1), 0.8,
           "Transactions with risk_score above this (0..1) get the deep analysis and raise an "
           "alert.", "0.7"),
    Option("history_size", Integer(1, 100_000), 50,
           "Transactions kept per customer in state for features and deep analysis.", "20"),
    Option("anomaly_window", Integer(2, 1_000_000), 100,
           "Values per metric in the rolling statistics (z_score).", "200"),
    Option("insight_window_seconds", Integer(1, MAX_SECONDS), 30,
           "Event-time window, in seconds, of one dashboard insight per dashboard_id.", "60"),
    Option("anomaly_detector", Choice(DETECTORS), None,
           f"Which detector sets anomaly_score: one of {', '.join(DETECTORS)}. 'seasonal' "
           "scores how unlikely a value's surprise is against its time of day and the "
           "metric's own history; 'novelty' adds to it levels and steps between levels the "
           "metric never showed; 'zscore' is the article's |z| > 3 rule over "
           "--anomaly_window values.", "zscore", default_text=DetectorSettings.detector),
    Option("anomaly_threshold", Number(0, 1), None,
           "is_anomaly is anomaly_score >= this (0..1); only anomalies go to the model.",
           "0.9", default_text=_per_detector("threshold")),
    Option("anomaly_day_slots", Integer(1, 86_400), None,
           "seasonal and novelty detectors: time-of-day slots with their own expected value "
           "and spread.", "24", default_text=f"{DetectorSettings.day_slots} (half hours)"),
    Option("anomaly_warmup_values", Integer(0, 10**9), None,
           "seasonal and novelty detectors: values per metric scored 0 while they learn.",
           "100", default_text=str(DetectorSettings.warmup_values)),
    Option("anomaly_cooldown_values", Integer(0, 10**9), None,
           "seasonal and novelty detectors: values scored 0 after an alert, so one incident "
           "pages once.", "30", default_text=_per_detector("cooldown_values")),
    Option("context", Text(), None,
           "JSON file of playbook entries ([{id, title, text, kind}, ...]; kind \"fraud\" "
           "(default): context for the deep analysis; \"runbook\": for anomaly "
           "explanations), re-read every --context_refresh_seconds while the job runs.",
           "gs://bucket/playbook.json",
           default_text="the playbook shipped in the package", check=_check_playbook),
    Option("past_alerts", Text(), None,
           "The alerts/ dataset (Parquet folder, local or gs://) of an earlier run: the deep "
           "analysis of a risky transaction gets up to 3 of its alerts as context, those of "
           "the same customer first, then those of the same pattern (BM25 over their "
           "summaries, with the playbook's relevance threshold: none rather than unrelated "
           "ones), raised before the transaction. Read once per worker process, the "
           f"{MAX_PAST_ALERTS} most recent transaction alerts kept.", "gs://bucket/realtime-ai/run1/alerts",
           default_text="none (no past alerts)", check=_check_past_alerts),
    Option("context_refresh_seconds", Seconds(above=True), 300.0,
           "How often each worker re-reads --context (a failed re-read keeps the version in "
           "use).", "60"),
    Option("allowed_lateness_seconds", Seconds(), 3600.0,
           "How far behind what was already processed for its customer or metric a record "
           "may arrive and still be used (out of order); later ones go to dead_letter/ with "
           "the reason.", "600"),
    Option("state_ttl_seconds", Seconds(above=True), 30 * 86400.0,
           "A customer's history or a metric's statistics are forgotten after this many "
           "seconds of event time without records.", "604800",
           default_text="2592000 (30 days)"),
    Option("dedupe_horizon_seconds", Seconds(), 86400.0,
           "A record whose id (transaction_id; a metric's timestamp and value) was already "
           "seen for its customer or metric within this many seconds of event time is a "
           "redelivery: it makes no second row and changes no feature. At least "
           "--allowed_lateness_seconds, at most --state_ttl_seconds.", "3600",
           default_text="86400 (one day)"),
    Option("max_record_bytes", Integer(1, 1 << 30), 65536,
           "Records larger than this many bytes are dead-lettered.", "16384"),
)


# Optional options -> the DetectorSettings field each overrides when given.
_DETECTOR_OPTIONS = {
    "anomaly_detector": "detector",
    "anomaly_threshold": "threshold",
    "anomaly_day_slots": "day_slots",
    "anomaly_warmup_values": "warmup_values",
    "anomaly_cooldown_values": "cooldown_values",
}


class RealtimeAiOptions(PipelineOptions):
    """Options of realtime-ai (OPTIONS); Beam's own options (runner, streaming, ...) come
    alongside."""

    @classmethod
    def _add_argparse_args(cls, parser):
        for option in OPTIONS:
            parser.add_argument(option.flag, type=option.value, default=option.default,
                                help=option.help_text(),
                                action="append" if option.repeatable else "store")

    def llm_config(self) -> LlmConfig:
        return LlmConfig(
            backend=resolve_backend(self.llm_backend, self.any_base_url()),
            base_url=self.llm_base_url,
            fast_base_url=self.fast_base_url,
            deep_base_url=self.deep_base_url,
            fast_model=self.fast_model,
            deep_model=self.deep_model,
            timeout_seconds=self.llm_timeout_seconds,
            max_retries=self.llm_max_retries,
            concurrency=self.llm_concurrency,
            fast_batch_size=self.fast_batch_size,
            batch_wait_ms=self.llm_batch_wait_ms,
            requests_per_minute=self.llm_rpm,
            tokens_per_minute=self.llm_tpm,
            budget_workers=(self.budget_workers().count if self.llm_rpm or self.llm_tpm
                            else 1),
            cache_ttl_seconds=self.cache_ttl_seconds,
            cache_url=self.cache_url,
            latency_budget_ms=self.latency_budget_ms,
            memo=self.memo,
            auth=self.llm_auth,
            auth_scope=self.llm_auth_scope,
            on_model_failure=self.on_model_failure,
        )

    def budget_workers(self) -> BudgetWorkers:
        """How many worker processes split --llm_rpm/--llm_tpm when no Redis budget is
        shared: each process has one model client (llm/runner.py), whatever its threads."""
        if self.llm_budget_workers:
            return BudgetWorkers(self.llm_budget_workers, "--llm_budget_workers")
        runner = runner_name(self)
        if runner in ("dataflowrunner", "dataflow"):
            return _dataflow_workers(self)
        if runner in ("flinkrunner", "flink"):
            parallelism = self.view_as(FlinkRunnerOptions).parallelism
            if parallelism > 0:
                return BudgetWorkers(parallelism, f"--parallelism={parallelism} on Flink")
            processes = _whole(self.view_as(PortableOptions).sdk_worker_parallelism)
            return BudgetWorkers(processes, f"--sdk_worker_parallelism={processes} on Flink "
                                            "(no --parallelism given: one TaskManager assumed)")
        direct = self.view_as(DirectOptions)
        if (runner in ("", "directrunner", "direct", "switchingdirectrunner")
                and direct.direct_running_mode == "multi_processing"):
            return BudgetWorkers(direct.direct_num_workers,
                                 f"--direct_num_workers={direct.direct_num_workers} "
                                 "processes")
        return BudgetWorkers(1, "a local runner's workers are threads of this process")

    def rate_budget_plan(self) -> str | None:
        """What a user is told at launch about how --llm_rpm/--llm_tpm are shared."""
        if not (self.llm_rpm or self.llm_tpm):
            return None
        workers = self.budget_workers()
        share = " and ".join(f"{budget / workers.count:g} {unit}/min" for budget, unit in
                          ((self.llm_rpm, "requests"), (self.llm_tpm, "tokens")) if budget)
        split = (f"{share} for each of {workers.count} worker process"
                 f"{'' if workers.count == 1 else 'es'} ({workers.how})")
        if self.cache_url:
            return (f"--llm_rpm/--llm_tpm: one budget for the whole job in Redis "
                    f"({self.cache_url}), shared by every worker; while Redis cannot be "
                    f"reached: {split}")
        return (f"--llm_rpm/--llm_tpm split between the workers: {split}; "
                "--cache_url=redis://... would share one budget instead")

    def shadow_share(self) -> float:
        """The share of transactions the shadow model is asked about."""
        return DEFAULT_SHADOW_SAMPLE if self.shadow_sample is None else self.shadow_sample

    def any_base_url(self) -> str | None:
        return self.llm_base_url or self.fast_base_url or self.deep_base_url

    def base_urls(self) -> list[str]:
        """Every endpoint named by --llm_base_url, --fast_base_url and --deep_base_url."""
        specs = (self.llm_base_url, self.fast_base_url, self.deep_base_url)
        return [url.strip() for spec in specs if spec for url in spec.split(",")]

    def kafka_properties(self) -> dict[str, str]:
        return kafka_consumer_properties(self.kafka_config)

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
        # built afresh, not replaced: the defaults of the chosen detector apply
        return DetectorSettings(**overrides)


class BudgetWorkers(NamedTuple):
    """The worker processes --llm_rpm/--llm_tpm are split between, and how that was found."""

    count: int
    how: str


# Dataflow runs one Python SDK process per vCPU of a worker VM (unless the experiment
# no_use_multiple_sdk_containers says one); its default machine types: n1-standard-1 for
# batch, n1-standard-2 (Streaming Engine) or -4 for streaming: the larger is assumed.
_DEFAULT_DATAFLOW_VCPUS = {False: 1, True: 4}
_MACHINE_VCPUS = re.compile(r"(?:-(\d+)|custom-(\d+)-\d+(?:-ext)?)$")


def _whole(value: Any) -> int:
    """A positive whole number from an option Beam declares without a type (else 1)."""
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        return 1


def _dataflow_workers(options: RealtimeAiOptions) -> BudgetWorkers:
    worker = options.view_as(WorkerOptions)
    vms = worker.max_num_workers or worker.num_workers
    if not vms:
        raise InvalidOptions("--llm_rpm/--llm_tpm on Dataflow need --max_num_workers or "
                             "--llm_budget_workers=N: the budgets are split between the "
                             "workers (with --cache_url, while Redis cannot be reached)")
    experiments = options.view_as(DebugOptions).experiments or []
    machine = worker.machine_type or ""
    found = _MACHINE_VCPUS.search(machine)
    if "no_use_multiple_sdk_containers" in experiments:
        per_vm, what = 1, "1 SDK process each (no_use_multiple_sdk_containers)"
    elif found:
        per_vm = int(found.group(1) or found.group(2))
        what = f"{per_vm} SDK processes each (one per vCPU of {machine})"
    else:
        per_vm = _DEFAULT_DATAFLOW_VCPUS[bool(options.view_as(StandardOptions).streaming)]
        what = f"{per_vm} SDK processes each (one per vCPU; no --machine_type given)"
    return BudgetWorkers(vms * per_vm, f"{vms} Dataflow worker VMs x {what}")


def runner_name(options: PipelineOptions) -> str:
    """--runner in lower case, as given ('' when not given)."""
    runner = options.view_as(StandardOptions).runner
    if runner is None:
        return ""
    return (runner if isinstance(runner, str) else type(runner).__name__).lower()


def reads_stream(options: RealtimeAiOptions) -> bool:
    """Whether an input is a Pub/Sub subscription or a Kafka topic: a streaming job."""
    return any(spec and is_unbounded(spec) for spec in (options.transactions, options.metrics))


def options_parser(**parser_args) -> argparse.ArgumentParser:
    """A plain parser of our options alone: for --help."""
    parser = argparse.ArgumentParser(**parser_args)
    RealtimeAiOptions._add_argparse_args(parser)
    return parser


class _CommandLineParser(_BeamArgumentParser):
    # Beam's own parser class (some options classes declare ValueProvider arguments with
    # it), raising instead of printing usage and exiting: the command prints one line.
    def error(self, message):
        raise InvalidOptions(re.sub(r"^argument (\S+): ", r"\1 ", message))


def _command_line_parser() -> _CommandLineParser:
    """Every option known in this process: ours and those of each Beam options class (the
    runners' included), as Beam itself gathers them."""
    parser = _CommandLineParser(allow_abbrev=False, add_help=False)
    classes = {str(cls): cls for cls in PipelineOptions.__subclasses__()}
    for cls in classes.values():
        cls._add_argparse_args(parser)
    return parser


def _unknown_message(unknown: Sequence[str], parser: argparse.ArgumentParser) -> str:
    known = sorted(parser._option_string_actions)
    problems = []
    for arg in unknown:
        if not arg.startswith("--"):
            if problems and problems[-1].startswith("--"):
                continue  # the value of the unknown option just before
            problems.append(f"{arg!r} (not an option: options are --name=value)")
            continue
        name = arg.split("=", 1)[0]
        underscored = "--" + name[2:].replace("-", "_")
        if underscored != name and underscored in known:
            problems.append(f"{name} (did you mean {underscored}? options are spelled with "
                            "underscores)")
        else:
            close = difflib.get_close_matches(underscored, known, n=1)
            problems.append(name + (f" (did you mean {close[0]}?)" if close else ""))
    return "unknown option(s): " + ", ".join(problems) + "; see --help"


def _check_command_line(argv: Sequence[str]) -> None:
    """InvalidOptions for an option no one declares (Beam would drop it with a warning) or a
    value its declaration cannot read."""
    for arg in argv:
        flag, equals, value = arg.partition("=")
        if flag.startswith("--") and equals and value == "--":
            # argparse (Python 3.11) reads --name=-- as no value at all, silently.
            raise InvalidOptions(f"{flag} cannot be '--'")
    parser = _command_line_parser()
    _, unknown = parser.parse_known_args(list(argv))
    if unknown:
        raise InvalidOptions(_unknown_message(unknown, parser))


def _check_runner(options: PipelineOptions) -> None:
    runner = options.view_as(StandardOptions).runner
    if runner is None or not isinstance(runner, str):
        return
    known = {name.lower() for name in StandardOptions.KNOWN_RUNNER_NAMES}
    if runner.lower() in known or runner.lower() + "runner" in known:
        return
    if re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", runner):
        module, _, name = runner.rpartition(".")
        try:
            runner_class = getattr(importlib.import_module(module), name, None)
        except ImportError:
            runner_class = None
        if isinstance(runner_class, type) and issubclass(runner_class, PipelineRunner):
            return
    raise InvalidOptions(f"--runner={runner} is not a runner: one of "
                         f"{', '.join(StandardOptions.KNOWN_RUNNER_NAMES)}, or the full "
                         "module path of a PipelineRunner class")


def _check_inputs_given(options: RealtimeAiOptions) -> None:
    if not options.transactions and not options.metrics:
        raise InvalidOptions("nothing to read: give --transactions=GLOB, --metrics=GLOB or both")


def _check_dedupe_horizon(options: RealtimeAiOptions) -> None:
    if not (options.allowed_lateness_seconds <= options.dedupe_horizon_seconds
            <= options.state_ttl_seconds):
        raise InvalidOptions(
            f"--dedupe_horizon_seconds must be at least --allowed_lateness_seconds "
            f"({options.allowed_lateness_seconds:g}) and at most --state_ttl_seconds "
            f"({options.state_ttl_seconds:g}), got {options.dedupe_horizon_seconds:g}")


def _check_shadow(options: RealtimeAiOptions) -> None:
    if options.shadow_sample is not None and not options.shadow_fast_model:
        raise InvalidOptions("--shadow_sample needs --shadow_fast_model, the model to ask "
                             "about the sample")
    if options.shadow_fast_model and options.shadow_fast_model == options.fast_model:
        raise InvalidOptions(f"--shadow_fast_model={options.shadow_fast_model} is the "
                             "--fast_model: a shadow model is another model to compare with it")


def _check_model_access(options: RealtimeAiOptions) -> None:
    if resolve_backend(options.llm_backend, options.any_base_url()) != "openai":
        return
    if options.llm_auth == AUTH_AZURE:
        if not options.any_base_url():
            raise InvalidOptions("--llm_auth=azure needs --llm_base_url, the Azure endpoint, "
                                 "e.g. https://RESOURCE.openai.azure.com/openai/v1/")
        return
    try:
        key = api_key("OPENAI_API_KEY")
    except InvalidApiKey as error:
        raise InvalidOptions(str(error)) from None
    if not key and not options.any_base_url():
        raise InvalidOptions("--llm_backend=openai needs OPENAI_API_KEY in the environment, "
                             "or --llm_base_url for an endpoint that takes no key")


def _check_endpoint_reachable(options: RealtimeAiOptions) -> None:
    """On a local runner the workers are this machine: an endpoint it cannot connect to would
    dead-letter every model call, so with --on_model_failure=dead_letter it is an error. With
    degrade (the default) the run goes on, answered by the local rules and labelled so, while
    the endpoint may come up: a warning. (Remote workers may see other networks: not
    checked.)"""
    runner = options.view_as(StandardOptions).runner or StandardOptions.DEFAULT_RUNNER
    local = {name.lower() for name in StandardOptions.LOCAL_RUNNERS}
    if (not isinstance(runner, str) or runner.rsplit(".", 1)[-1].lower() not in local
            or resolve_backend(options.llm_backend, options.any_base_url()) != "openai"):
        return
    for base_url in options.base_urls():
        url = urllib.parse.urlsplit(base_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            socket.create_connection((url.hostname, port), ENDPOINT_CONNECT_SECONDS).close()
        except OSError as error:
            problem = (f"{base_url}: cannot connect to {url.hostname}:{port} "
                       f"({error.strerror or error})")
            if options.on_model_failure != DEGRADE:
                raise InvalidOptions(problem) from None
            logging.getLogger(__name__).warning(
                "%s: until it answers, the local rules answer (rows labelled degraded)", problem)


def _check_budget_split(options: RealtimeAiOptions) -> None:
    """Budgets split between workers (even with Redis: its fallback): a count to split by."""
    if options.llm_rpm or options.llm_tpm:
        options.budget_workers()


# Checks of several options together, or of the environment, after each option's own.
_COMMAND_CHECKS = (_check_runner, _check_dedupe_horizon, _check_shadow, _check_model_access,
                   _check_endpoint_reachable, _check_budget_split)


def validate(options: RealtimeAiOptions, require_input: bool = True) -> None:
    """Raise InvalidOptions with a message a user can act on; called before anything runs.
    Without `require_input` (the redrive reads dead letters), no input option is needed."""
    for option in OPTIONS:
        value = getattr(options, option.name)
        if value is None and option.required:
            raise InvalidOptions(f"{option.flag} is required, e.g. {option.flag}={option.example}"
                                 " (see --help)")
        if value is not None and option.check:
            try:
                option.check(value, option.flag)
            except ValueError as error:
                raise InvalidOptions(str(error)) from None
    if require_input:
        _check_inputs_given(options)
    for check in _COMMAND_CHECKS:
        check(options)


def parse_options(argv: Sequence[str], require_input: bool = True) -> PipelineOptions:
    """The command line's options, all checked before any work: InvalidOptions, with one
    line to print, for an unknown or misspelled option, a value that cannot be read, a
    combination that cannot run, or an input, key or endpoint that is not there."""
    _check_command_line(argv)
    options = PipelineOptions(list(argv))
    validate(options.view_as(RealtimeAiOptions), require_input)
    return options
