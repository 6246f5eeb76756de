"""The main command end to end, in batch on the DirectRunner, over the committed samples."""
import gzip
import json
import pathlib
import random
import subprocess
import sys
import tempfile

import pyarrow.parquet as pq
import pytest
from apache_beam.runners.portability import prism_runner

from realtime_ai.core.records import OUTPUT_SCHEMAS
from realtime_ai.pipelines import main
from tests.compare import comparable_rows

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
BAD_TRANSACTIONS = [
    "{not json",
    "[1, 2, 3]",
    json.dumps({"transaction_id": "bad-1", "customer_id": "c", "amount": 1.0}),
    json.dumps({"transaction_id": "bad-2", "customer_id": "c", "amount": "12", "currency": "EUR",
                "merchant": "m", "merchant_category": "x", "country": "DE", "channel": "pos",
                "timestamp": "2026-01-05T10:00:00Z"}),
    '{"transaction_id": "bad-3", "customer_id": "c", "amount": NaN, "currency": "EUR", '
    '"merchant": "m", "merchant_category": "x", "country": "DE", "channel": "pos", '
    '"timestamp": "2026-01-05T10:00:00Z"}',
    json.dumps({"transaction_id": "bad-4", "customer_id": "c", "amount": -5, "currency": "EUR",
                "merchant": "m", "merchant_category": "x", "country": "DE", "channel": "pos",
                "timestamp": "2026-01-05T10:00:00Z"}),
    json.dumps({"transaction_id": "bad-5", "customer_id": "c", "amount": 5, "currency": "EUR",
                "merchant": "m", "merchant_category": "x", "country": "DE", "channel": "pos",
                "timestamp": "yesterday"}),
    json.dumps({"transaction_id": "bad-6", "customer_id": "c", "amount": 5, "currency": "EUR",
                "merchant": "m" * 70000, "merchant_category": "x", "country": "DE",
                "channel": "pos", "timestamp": "2026-01-05T10:00:00Z"}),
]
BAD_METRICS = [
    "",  # blank lines are skipped, not records
    "{",
    json.dumps({"metric": "api.latency_ms", "value": "fast", "timestamp": "2026-01-05T10:00:00Z"}),
    json.dumps({"metric": "api.latency_ms", "value": 1.0}),
]


def _lines(path):
    return [line for line in path.read_text().splitlines() if line.strip()]


def _run(tmp_path, name, transactions, metrics, *extra):
    out = tmp_path / name
    argv = [f"--output={out}", "--runner=DirectRunner", *extra]
    if transactions:
        argv.append(f"--transactions={transactions}")
    if metrics:
        argv.append(f"--metrics={metrics}")
    assert main.main(argv) == 0
    return {n: pq.read_table(out / n) for n in OUTPUT_SCHEMAS}


@pytest.fixture(scope="module")
def sample_inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    good_tx = _lines(SAMPLES / "transactions.jsonl")
    good_metrics = _lines(SAMPLES / "metrics.jsonl")
    # the same records split over a plain, a gzipped and a shuffled file, plus bad records
    inputs = tmp / "in"
    inputs.mkdir()
    half = len(good_tx) // 2
    (inputs / "tx-1.jsonl").write_text("\n".join(good_tx[:half] + BAD_TRANSACTIONS) + "\n")
    with gzip.open(inputs / "tx-2.jsonl.gz", "wt") as fh:
        fh.write("\n".join(good_tx[half:]) + "\n")
    shuffled = good_metrics + [line for line in BAD_METRICS if line]
    random.Random(1).shuffle(shuffled)
    (inputs / "metrics.jsonl").write_text("\n".join(shuffled) + "\n")
    return inputs, good_tx, good_metrics


@pytest.fixture(scope="module")
def sample_run(sample_inputs):
    inputs, good_tx, good_metrics = sample_inputs
    tables = _run(inputs.parent, "out", inputs / "tx-*", inputs / "metrics.jsonl")
    return tables, good_tx, good_metrics


def _same_rows(tables, expected):
    for name in OUTPUT_SCHEMAS:
        assert comparable_rows(tables[name]) == comparable_rows(expected[name]), name


@pytest.mark.integration
def test_prism_gives_the_direct_runners_rows(sample_inputs, sample_run, prism, tmp_path):
    """A watermark-exact runner drops what is late for a window downstream: the keyed step's
    outputs must never be (Beam's own DirectRunner runs on Prism where it can download it)."""
    inputs, _, _ = sample_inputs
    # In a process of its own, as a user runs it: Beam shares one Prism job server per process.
    subprocess.run(
        [sys.executable, "-m", "realtime_ai.pipelines.main", "--runner=PrismRunner",
         f"--prism_location={prism}", f"--transactions={inputs}/tx-*",
         f"--metrics={inputs}/metrics.jsonl", f"--output={tmp_path}"],
        cwd=REPO, check=True, capture_output=True, timeout=600)
    _same_rows({name: pq.read_table(tmp_path / name) for name in OUTPUT_SCHEMAS}, sample_run[0])


def test_a_batch_job_on_the_direct_runner_never_tries_prism(tmp_path, monkeypatch):
    """Beam 2.77's DirectRunner first tries Prism, downloading Beam's binary where it can: the
    same command would run on another engine, without our Prism's fixes, depending on the
    machine's network; where the download failed it left an empty folder per run."""
    tried_prism = []

    def refuse(runner, pipeline, options):
        tried_prism.append(runner)
        raise RuntimeError("no Prism here")

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", refuse)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    transactions = tmp_path / "tx.jsonl"
    transactions.write_text("\n".join(_lines(SAMPLES / "transactions.jsonl")[:20]) + "\n")
    tables = _run(tmp_path, "out", transactions, None)
    assert tables["transactions"].num_rows == 20
    assert tried_prism == []
    assert list(temp.iterdir()) == []


def test_redelivered_records_change_no_row(sample_inputs, sample_run, tmp_path, capsys):
    inputs, good_tx, good_metrics = sample_inputs
    again = tmp_path / "again"
    again.mkdir()
    # every 7th transaction and metric value delivered a second time, in another file
    (again / "redelivered.jsonl").write_text("\n".join(good_tx[::7]) + "\n")
    (again / "metrics-redelivered.jsonl").write_text("\n".join(good_metrics[::7]) + "\n")
    tables = _run(tmp_path, "out", f"{inputs}/tx-*,{again}/redelivered.jsonl",
                  f"{inputs}/metrics.jsonl,{again}/metrics-redelivered.jsonl")
    _same_rows(tables, sample_run[0])
    assert (f"Redeliveries dropped (same event id within --dedupe_horizon_seconds): "
            f"{len(good_tx[::7])} transactions, {len(good_metrics[::7])} metric values"
            ) in capsys.readouterr().out


def test_every_output_has_its_schema(sample_run):
    tables, _, _ = sample_run
    for name, schema in OUTPUT_SCHEMAS.items():
        assert tables[name].schema.equals(schema, check_metadata=False), name


def test_nothing_is_lost_valid_plus_dead_letter_equals_input(sample_run):
    tables, good_tx, good_metrics = sample_run
    dead = tables["dead_letter"].to_pylist()
    assert tables["transactions"].num_rows == len(good_tx)
    assert tables["metrics"].num_rows == len(good_metrics)
    tx_dead = [d for d in dead if d["source"] == "transactions"]
    metric_dead = [d for d in dead if d["source"] == "metrics"]
    assert len(tx_dead) == len(BAD_TRANSACTIONS)
    assert len(metric_dead) == len([line for line in BAD_METRICS if line])
    assert all(d["error"] for d in dead)
    assert {d["payload"] for d in tx_dead} == set(BAD_TRANSACTIONS)


def test_rows_are_labelled_with_the_local_model(sample_run):
    tables, _, _ = sample_run
    models = set(tables["transactions"].column("model").to_pylist())
    assert models and all("not an LLM" in m for m in models)


def test_labelled_frauds_are_mostly_escalated_and_normal_rarely(sample_run):
    tables, _, _ = sample_run
    labels = {json.loads(line)["transaction_id"]
              for line in _lines(SAMPLES / "transactions_labels.jsonl")}
    rows = tables["transactions"].to_pylist()
    fraud = [r for r in rows if r["transaction_id"] in labels]
    normal = [r for r in rows if r["transaction_id"] not in labels]
    recall = sum(r["escalated"] for r in fraud) / len(fraud)
    false_rate = sum(r["escalated"] for r in normal) / len(normal)
    assert recall >= 0.7, recall
    assert false_rate <= 0.02, false_rate
    escalated = {r["transaction_id"] for r in rows if r["escalated"]}
    transaction_alerts = [a for a in tables["alerts"].to_pylist() if a["kind"] == "transaction"]
    assert {a["subject"] for a in transaction_alerts} == escalated
    assert all(r["analysis"] for r in rows if r["escalated"])


def test_metric_anomalies_are_explained_and_insights_written(sample_run):
    tables, _, _ = sample_run
    metrics = tables["metrics"].to_pylist()
    anomalies = [m for m in metrics if m["is_anomaly"]]
    assert anomalies, "the samples carry labelled anomalies"
    assert all(json.loads(m["analysis"])["severity"] for m in anomalies)
    assert all(m["analysis"] is None for m in metrics if not m["is_anomaly"])
    assert all(0.0 <= m["anomaly_score"] <= 1.0 for m in metrics)
    insights = tables["insights"].to_pylist()
    assert insights and all(i["insight"] for i in insights)
    assert len({(i["dashboard_id"], i["window_start"]) for i in insights}) == len(insights)
    # the model is asked only about windows with an anomaly; its priority is kept
    asked = [i for i in insights if i["model"]]
    assert 0 < len(asked) < len(insights) / 10
    assert {i["priority"] for i in asked} <= {"medium", "high"}
    assert {i["priority"] for i in insights if not i["model"]} == {"low"}


def test_results_identical_when_input_files_are_shuffled(sample_run, tmp_path):
    tables, good_tx, good_metrics = sample_run
    inputs = tmp_path / "in"
    inputs.mkdir()
    tx = list(good_tx)
    random.Random(99).shuffle(tx)
    for shard in range(3):
        (inputs / f"tx-{shard}.jsonl").write_text("\n".join(tx[shard::3]) + "\n")
    metrics = list(reversed(good_metrics))
    (inputs / "metrics.jsonl").write_text("\n".join(metrics) + "\n")
    again = _run(tmp_path, "out", inputs / "tx-*", inputs / "metrics.jsonl")

    def rows(table, key):
        return sorted(table.to_pylist(), key=lambda r: tuple(str(r[k]) for k in key))

    assert rows(again["transactions"], ["transaction_id"]) == rows(
        tables["transactions"], ["transaction_id"])
    assert rows(again["metrics"], ["metric", "event_time", "value"]) == rows(
        tables["metrics"], ["metric", "event_time", "value"])
    assert rows(again["alerts"], ["alert_id"]) == rows(tables["alerts"], ["alert_id"])
    assert rows(again["insights"], ["dashboard_id", "window_start"]) == rows(
        tables["insights"], ["dashboard_id", "window_start"])


def test_bad_options_give_a_clear_error_not_a_stack_trace(tmp_path):
    cases = [
        ([f"--output={tmp_path}"], "nothing to read"),
        ([f"--output={tmp_path}", f"--transactions={tmp_path}/none-*.jsonl"], "no files match"),
        ([f"--output={tmp_path}", f"--metrics={SAMPLES}/metrics.jsonl", "--risk_threshold=2"],
         "--risk_threshold"),
        ([f"--output={tmp_path}", f"--metrics={SAMPLES}/metrics.jsonl", "--risk_treshold=.5"],
         "unknown option(s): --risk_treshold"),
        ([f"--output={tmp_path}", "--metrics=projects/my-project/topics/metrics"],
         "is not a Pub/Sub subscription"),
        ([f"--output={tmp_path}", f"--transactions={SAMPLES}/transactions.jsonl",
          f"--context={SAMPLES}/metrics_labels.jsonl"], "is not a readable playbook"),
        ([f"--output={tmp_path}", f"--metrics={SAMPLES}/metrics.jsonl",
          "--file_window_seconds=0"], "--file_window_seconds must be a whole number from 1"),
        ([f"--output={tmp_path}", f"--metrics={SAMPLES}/metrics.jsonl",
          "--kafka_config=security.protocol"], "--kafka_config=security.protocol is not KEY=VALUE"),
        ([f"--output={tmp_path}", f"--metrics={SAMPLES}/metrics.jsonl",
          "--kafka_config=bootstrap.servers=h:1"], "bootstrap.servers comes from the input"),
        ([f"--output={tmp_path}", f"--metrics={SAMPLES}/metrics.jsonl",
          "--llm_base_url=http://a:1/v1,localhost:8000/v1"], "--llm_base_url must be http(s)://"),
    ]
    for argv, message in cases:
        proc = subprocess.run([sys.executable, "-m", "realtime_ai.pipelines.main", *argv],
                              capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr
        assert "Traceback" not in proc.stderr


def test_help_lists_the_options_with_defaults_and_examples():
    proc = subprocess.run([sys.executable, "-m", "realtime_ai.pipelines.main", "--help"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0
    for name in ("--transactions", "--metrics", "--output", "--llm_backend", "--risk_threshold",
                 "--anomaly_detector", "--runner"):
        assert name in proc.stdout
    assert "Default: 0.8" in proc.stdout


def test_kafka_config_reaches_the_consumer():
    from apache_beam.options.pipeline_options import PipelineOptions

    from realtime_ai.io.sources import kafka_read_config
    from realtime_ai.pipelines.options import RealtimeAiOptions

    jaas = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
            'username="$ConnectionString" password="Endpoint=sb://ns.servicebus.windows.net/;'
            'SharedAccessKeyName=listen;SharedAccessKey=k=";')
    options = PipelineOptions([
        "--kafka_config=security.protocol=SASL_SSL", "--kafka_config=sasl.mechanism=PLAIN",
        f"--kafka_config=sasl.jaas.config={jaas}", "--kafka_config=auto.offset.reset=latest",
    ]).view_as(RealtimeAiOptions)
    config = kafka_read_config("kafka://ns.servicebus.windows.net:9093/transactions",
                               options.kafka_properties())
    assert config.consumer_config == {
        "bootstrap.servers": "ns.servicebus.windows.net:9093", "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN", "sasl.jaas.config": jaas, "auto.offset.reset": "latest"}
    assert config.topics == ["transactions"]
    default = kafka_read_config("kafka://h:9092/t", PipelineOptions([]).view_as(
        RealtimeAiOptions).kafka_properties())
    assert default.consumer_config == {"bootstrap.servers": "h:9092",
                                       "auto.offset.reset": "earliest"}


def test_detector_options_reach_the_detector():
    from apache_beam.options.pipeline_options import PipelineOptions

    from realtime_ai.pipelines.options import RealtimeAiOptions

    settings = PipelineOptions([
        "--anomaly_detector=zscore", "--anomaly_threshold=0.9", "--anomaly_window=50",
        "--anomaly_day_slots=24", "--anomaly_warmup_values=10", "--anomaly_cooldown_values=5",
    ]).view_as(RealtimeAiOptions).detector_settings()
    assert (settings.detector, settings.threshold, settings.window, settings.day_slots,
            settings.warmup_values, settings.cooldown_values) == ("zscore", 0.9, 50, 24, 10, 5)
    defaults = PipelineOptions([]).view_as(RealtimeAiOptions).detector_settings()
    assert (defaults.detector, defaults.threshold, defaults.cooldown_values) == (
        "novelty", 0.4, 120)
    # another detector gets its own defaults, not the default detector's
    seasonal = PipelineOptions(["--anomaly_detector=seasonal"]).view_as(
        RealtimeAiOptions).detector_settings()
    assert (seasonal.threshold, seasonal.cooldown_values, seasonal.recent_values) == (0.3, 200, 2)
