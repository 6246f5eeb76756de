# realtime-ai: `make run` runs the main job on the samples; `make dashboard` shows its outputs
# live in a browser; `make test` passes every test.
# Both set everything up on a fresh machine (venv, packages, local services for tests).
PYTHON_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CACHE := $(HOME)/.cache/realtime-ai
export PIP_CACHE_DIR := $(CACHE)/pip
OUT ?= out/run
RUNNER ?= DirectRunner
NAB ?= ../shared/nab

.PHONY: venv run dashboard test test-flink lint unit nab bench template clean

venv: $(VENV)/.installed

# The first set-up takes minutes with little output of its own: each step says what it does.
$(VENV)/.installed: requirements.txt setup.py
	@echo "setting up: creating the virtualenv $(VENV)/ with $(PYTHON_BOOT)"
	@$(PYTHON_BOOT) -m venv $(VENV)
	@echo "setting up: installing the pinned packages of requirements.txt into $(VENV)/" \
	  "(a few minutes the first time; downloads cached under $(CACHE)/pip)"
	@$(VENV)/bin/pip install -q --upgrade pip
	@$(VENV)/bin/pip install -q -r requirements.txt
	@$(VENV)/bin/pip install -q --no-deps -e .
	@touch $@
	@echo "setting up: done"

run: venv
	$(PY) -m realtime_ai.pipelines.main \
	  --transactions='samples/transactions.jsonl' \
	  --metrics='samples/metrics.jsonl' \
	  --output=$(OUT) --runner=$(RUNNER)

# The live dashboard on http://127.0.0.1:$(DASHBOARD_PORT)/, replaying the samples' outputs
# (the main job runs first when they are missing or older than the samples).
DASHBOARD_PORT ?= 8080
DASHBOARD_SPEED ?= 120
dashboard: venv
	@[ -d $(OUT)/insights ] && [ -z "$$(find samples -name '*.jsonl' -newer $(OUT)/insights)" ] \
	  || { echo "running the main job on the samples first (about 20 s)"; $(MAKE) --no-print-directory run; }
	$(PY) -m realtime_ai.dashboard --output=$(OUT) --speed=$(DASHBOARD_SPEED) \
	  --port=$(DASHBOARD_PORT)

lint: venv
	$(VENV)/bin/ruff check .

unit: venv
	$(PY) -m pytest -q -m "not integration"

# Every test, real services included: they are started (and stopped) by scripts/. The Flink
# tests (about 6 minutes, 450 MB of downloads the first time) also run alone: `make test-flink`.
test: lint
	$(PY) -m pytest -q

test-flink: venv
	$(PY) -m pytest -q -m flink

nab: venv
	$(PY) -m realtime_ai.pipelines.main --metrics=$(NAB)/metrics.jsonl.gz \
	  --output=out/nab --runner=$(RUNNER)
	$(PY) $(NAB)/score.py out/nab/metrics
	$(PY) benchmarks/nab_summary.py out/nab/metrics
	$(PY) benchmarks/detector_cost.py --values 100000 | grep -E "us_per_value|article_over"
	$(PY) benchmarks/nab_offline.py $(NAB) --held-out

bench: venv
	$(PY) benchmarks/detector_cost.py
	$(PY) benchmarks/llm_throughput.py
	$(PY) benchmarks/pipeline_cost.py --runner=$(RUNNER) --repeat 5
	$(PY) benchmarks/model_overlap.py

# The main command in streaming on Prism, against the Pub/Sub emulator, at several rates
# (benchmarks/stream_bench.py; about 4 minutes a rate). Options: STREAM_BENCH_ARGS=--quick,
# --rates 50,100 --seconds 30, --test-server.
.PHONY: bench-stream
bench-stream: venv
	$(PY) benchmarks/stream_bench.py $(STREAM_BENCH_ARGS)

# The memory soak: the same, at 300 events/s for 10 minutes (about 13 minutes in all).
.PHONY: bench-soak
bench-soak: venv
	$(PY) benchmarks/stream_bench.py --soak

# Kafka into the local Flink cluster, alerts out through the Pub/Sub emulator, at 330 events/s
# (the services are started here and left running; scripts/*.sh stop ends them).
FLINK_KAFKA_PUBSUB := scripts/flink-cluster.sh start && scripts/kafka.sh start && \
	eval "$$(scripts/pubsub-emulator.sh start)" && export PUBSUB_EMULATOR_HOST

.PHONY: bench-flink
bench-flink: venv
	$(FLINK_KAFKA_PUBSUB) && \
	$(PY) benchmarks/flink_latency.py --save \
	  $(FLINK_BENCH_ARGS)

# The same at 50, 100, 300, 1000 and 2000 events/s, one after another, and a plot of latency
# against the rate (benchmarks/flink_sweep.py; about 3 minutes a rate). Options:
# FLINK_SWEEP_ARGS=--test-server (our server at 200 ms a call), --rates 50,300, --seconds 30.
.PHONY: bench-flink-sweep
bench-flink-sweep: venv
	$(FLINK_KAFKA_PUBSUB) && \
	$(PY) benchmarks/flink_sweep.py $(FLINK_SWEEP_ARGS)
# The Flex Template's parameters, from the option declarations (pipelines/options.py).
template: venv
	$(PY) -m realtime_ai.pipelines.template > templates/metadata.json

# One streaming job on the local Flink cluster per fault (checkpoints every 10 s, 100 events/s
# from Kafka): TaskManager kill -9, Kafka broker restart, model endpoint down 60 s, stop with a
# savepoint and restore with a new code version; then records lost or duplicated, alerts after
# dedupe and recovery seconds (benchmarks/flink_faults.py; about 6 minutes a fault). Not in
# `make test`: too long for CI. Options: FLINK_FAULTS_ARGS=--faults kafka,model.
.PHONY: test-faults
test-faults: venv
	$(FLINK_KAFKA_PUBSUB) && \
	$(PY) benchmarks/flink_faults.py --results benchmarks/results/flink_faults.json \
	  $(FLINK_FAULTS_ARGS)

clean:
	rm -rf out build *.egg-info
