"""Options: each declared once, and every bad option, value or environment is one `error:`
line and exit 2 before any work (the main command run in-process)."""
import argparse
import pathlib
import re
import shlex
import socket

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from realtime_ai.llm.base import LlmConfig
from realtime_ai.llm.client import OpenAiBackend
from realtime_ai.llm.credentials import InvalidApiKey, api_key
from realtime_ai.pipelines import main
from realtime_ai.pipelines.option_values import Number
from realtime_ai.pipelines.options import (
    OPTIONS,
    RealtimeAiOptions,
    options_parser,
    parse_options,
)

SAMPLES = pathlib.Path(__file__).resolve().parents[1] / "samples"
NUMBER_OPTIONS = [option.name for option in OPTIONS if isinstance(option.value, Number)]


class WorkStarted(Exception):
    """The job was about to run: every check must come before."""


@pytest.fixture(autouse=True)
def no_job_runs(monkeypatch):
    def refuse(pipeline, *args, **kwargs):
        raise WorkStarted
    monkeypatch.setattr(beam.Pipeline, "run", refuse)


@pytest.fixture
def base_argv(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return [f"--output={tmp_path / 'out'}", f"--metrics={SAMPLES}/metrics.jsonl"]


def _error(argv, capsys) -> str:
    """The one line the command printed, asserting exit 2 before any work."""
    assert main.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert captured.out == ""
    return lines[0]


def test_dash_spelling_is_an_error_naming_the_underscore_spelling(base_argv, capsys):
    # Beam dropped it with a warning: the job ran at the default 0.8 with exit 0.
    line = _error([*base_argv, "--risk-threshold=0.7"], capsys)
    assert "--risk-threshold" in line and "did you mean --risk_threshold?" in line


def test_misspelled_and_stray_arguments_are_errors(base_argv, capsys):
    assert "--risk_treshold (did you mean --risk_threshold?)" in _error(
        [*base_argv, "--risk_treshold=.5"], capsys)
    assert "--no_such_option" in _error([*base_argv, "--no_such_option", "1"], capsys)
    assert "'stray'" in _error([*base_argv, "stray"], capsys)


def test_beam_and_runner_options_are_accepted(base_argv):
    options = parse_options([
        *base_argv, "--runner=DirectRunner", "--num_workers=3", "--flink_master=host:8081",
        "--experiments=a", "--experiments=b", "--temp_location=/tmp", "--job_name=j",
        "--environment_type=LOOPBACK", "--prism_location=/bin/prism", "--direct_num_workers=2"])
    assert options.get_all_options()["experiments"] == ["a", "b"]


@pytest.mark.parametrize("name", NUMBER_OPTIONS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "1e999"])
def test_numbers_must_be_finite(base_argv, capsys, name, value):
    # nan passed every `x < 0` check: --max_run_seconds=nan ran, --window_grace_seconds=inf
    # crashed with a traceback.
    line = _error([*base_argv, f"--{name}={value}"], capsys)
    assert f"--{name} must be a number" in line


def test_unknown_runner(base_argv, capsys):
    line = _error([*base_argv, "--runner=Nope"], capsys)
    assert "--runner=Nope is not a runner" in line and "DirectRunner" in line
    assert "is not a runner" in _error([*base_argv, "--runner=os.system"], capsys)


@pytest.mark.parametrize("url", [
    "localhost:8000/v1", "ht!tp://x/v1", "ftp://host/v1", "http://", "http://host:99999/v1",
    "http://host:port/v1", "http://[::1/v1", "http://ho st/v1", "http://host/v1\n"])
def test_malformed_endpoint_urls(base_argv, capsys, url):
    assert "--llm_base_url must be http(s)://HOST[:PORT][/PATH] URLs" in _error(
        [*base_argv, f"--llm_base_url={url}"], capsys)


def test_unreachable_endpoint_on_a_local_runner_when_failures_are_dead_lettered(base_argv,
                                                                                capsys):
    # It ran, dead-lettered every model call and exited 0. (With --on_model_failure=degrade,
    # the default, the local rules answer instead: tests/test_degraded_mode.py.)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed: nothing listens there
    line = _error([*base_argv, f"--llm_base_url=http://127.0.0.1:{port}/v1",
                   "--on_model_failure=dead_letter"], capsys)
    assert f"cannot connect to 127.0.0.1:{port}" in line


def test_malformed_cache_url(base_argv, capsys):
    assert "--cache_url must be a URL redis://" in _error(
        [*base_argv, "--cache_url=redis:/host"], capsys)


def test_api_key_from_a_secret_file_is_trimmed(monkeypatch):
    assert api_key("K", {"K": "sk-abc\n"}) == "sk-abc"
    assert api_key("K", {"K": " \n"}) is None and api_key("K", {}) is None
    monkeypatch.setenv("OPENAI_API_KEY", "sk-abc\r\n")
    assert OpenAiBackend(LlmConfig(backend="openai"))._api_key == "sk-abc"


@pytest.mark.parametrize("key", ["sk-a\nb", "sk a", "sk-\x07", "sk-é"])
def test_api_key_with_inner_whitespace_or_control_characters(base_argv, capsys, monkeypatch,
                                                             key):
    with pytest.raises(InvalidApiKey):
        api_key("K", {"K": key})
    monkeypatch.setenv("OPENAI_API_KEY", key)
    line = _error([*base_argv, "--llm_backend=openai"], capsys)
    assert "OPENAI_API_KEY holds a space, control or non-ASCII character" in line
    assert key not in line


def test_output_that_is_a_file(base_argv, capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    assert "is a file, not a folder" in _error([*base_argv, f"--output={tmp_path}/file"],
                                               capsys)


def test_every_option_is_declared_once_with_a_default_and_example_that_parse():
    names = [option.name for option in OPTIONS]
    assert len(names) == len(set(names))
    assert set(RealtimeAiOptions([])._visible_option_list()) == set(names)
    defaults = RealtimeAiOptions([]).get_all_options()
    for option in OPTIONS:
        assert defaults[option.name] == option.default, option.name
        if option.default is not None:
            assert option.value(str(option.default)) == option.default, option.name
        example = option.value(option.example)
        assert example is not None, option.name
        if option.value.regex:
            assert re.fullmatch(option.value.regex, option.example), option.name
        help_text = option.help_text()
        assert f"Example: --{option.name}={shlex.quote(option.example)}" in help_text
        assert ("Required" if option.required else "Default: ") in help_text


def test_help_is_the_declarations():
    helps = {action.dest: action.help for action in options_parser()._actions
             if action.dest != "help"}
    assert helps == {option.name: option.help_text() for option in OPTIONS}


def test_value_types_reject_what_they_cannot_hold():
    hold = {"risk_threshold": ["-0.1", "1.01", "0x1"], "history_size": ["0", "1.5", "1e3", ""],
            "fast_model": ["", " ", "a\tb", "a\u2028b"], "alerts_topic": ["projects/x/topics/y"],
            "llm_backend": ["OpenAI"], "anomaly_window": ["1"]}
    declared = {option.name: option for option in OPTIONS}
    for name, values in hold.items():
        for value in values:
            with pytest.raises(argparse.ArgumentTypeError, match="must be"):
                declared[name].value(value)


def test_a_value_of_two_dashes_is_an_error(base_argv, capsys):
    # argparse read --name=-- as an empty list: the default stayed, or a traceback followed.
    assert "--allowed_lateness_seconds cannot be '--'" in _error(
        [*base_argv, "--allowed_lateness_seconds=--"], capsys)


def test_errors_quoting_user_text_stay_on_one_line(base_argv, capsys):
    assert "--runner=a\\nb" in _error([*base_argv, "--runner=a\nb"], capsys)
    assert "--\\x85" in _error([*base_argv, "--\x85"], capsys)


def test_a_shadow_model_is_another_model_and_its_sample_needs_it(base_argv, capsys):
    assert "--shadow_sample needs --shadow_fast_model" in _error(
        [*base_argv, "--shadow_sample=0.1"], capsys)
    assert "is the --fast_model" in _error(
        [*base_argv, "--fast_model=m1", "--shadow_fast_model=m1"], capsys)
    assert "--shadow_sample must be a number above 0" in _error(
        [*base_argv, "--shadow_fast_model=m2", "--shadow_sample=0"], capsys)
    options = parse_options([*base_argv, "--shadow_fast_model=m2"]).view_as(RealtimeAiOptions)
    assert options.shadow_share() == 0.05


def test_past_alerts_must_be_an_alerts_dataset(base_argv, capsys, tmp_path):
    missing = _error([*base_argv, f"--past_alerts={tmp_path}/nowhere"], capsys)
    assert "is not an alerts dataset" in missing and "holds no Parquet file" in missing
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "part-0.parquet").write_bytes(b"PAR1 not really")
    assert "is not a readable Parquet file" in _error(
        [*base_argv, f"--past_alerts={corrupt}"], capsys)
    other = tmp_path / "transactions"
    other.mkdir()
    pq.write_table(pa.table({"transaction_id": ["t1"]}), other / "part-0.parquet")
    assert "has no column alert_id, kind" in _error([*base_argv, f"--past_alerts={other}"],
                                                    capsys)


def test_flink_can_be_told_to_drop_the_state_of_a_step_the_version_no_longer_has(base_argv):
    # A savepoint of a version before the deep analysis lost its gathering holds that step's
    # state: Flink refuses it unless told (Beam's allowNonRestoredState).
    from realtime_ai.pipelines.options import parse_options

    options = parse_options([*base_argv, "--runner=FlinkRunner", "--savepoint_path=/tmp/sp",
                             "--allow_non_restored_state"])
    assert options.get_all_options()["allow_non_restored_state"] is True


def test_flink_finishes_bundles_before_a_savepoint_unless_told_not_to(base_argv, capsys):
    # Beam's default keeps an open bundle's outputs in the savepoint and sends them on after
    # it; a job restored from it wrote a transaction's row into the alerts dataset
    # (benchmarks/flink_faults.py, savepoint fault).
    def finishes(*flags):
        return parse_options([*base_argv, "--runner=FlinkRunner", *flags]).get_all_options()[
            "finish_bundle_before_checkpointing"]

    assert finishes() is True
    assert finishes("--finish_bundle_before_checkpointing=false") is False
    assert "--finish_bundle_before_checkpointing must be true or false, got 'yes'" in _error(
        [*base_argv, "--runner=FlinkRunner", "--finish_bundle_before_checkpointing=yes"], capsys)
