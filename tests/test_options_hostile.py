"""Hostile option values: whatever the text, the main command (run in-process) either reads
the value as declared and gets as far as running the job, or prints one `error: ...` line
and exits 2; never a traceback, never a value silently dropped.

Inputs, --output and --context are left out: their checks read the filesystem (random text
could name gs:// or / paths); tests/test_options.py covers them.
"""
import contextlib
import io
import pathlib
import threading

import apache_beam as beam
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from realtime_ai.core.records import OUTPUT_SCHEMAS, SHADOW_DATASET
from realtime_ai.pipelines import main
from realtime_ai.pipelines.option_values import MAX_SECONDS
from realtime_ai.pipelines.options import OPTIONS, RealtimeAiOptions, parse_options

real_build_pipeline = main.build_pipeline
SAMPLES = pathlib.Path(__file__).resolve().parents[1] / "samples"
WITH_IO = {"transactions", "metrics", "output", "context"}
FUZZED = [option for option in OPTIONS if option.name not in WITH_IO]
HOSTILE_TEXT = st.one_of(
    st.text(max_size=30),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-10**30, max_value=10**30).map(str),
    st.sampled_from(["nan", "-nan", "inf", "-inf", "1e309", "", " ", "0", "-0", "1_000", "0x10",
                     "\u0663", "1\n", "http://", "http://h:0/v1", "redis://h:70000/0", "local",
                     "openai", "zscore", "seasonal", "-1", "--", "=", "projects/my-project/"
                     "topics/t"]),
)


class JobWouldRun(Exception):
    """Raised in place of building the job: the options were all accepted."""

    def __init__(self, options):
        super().__init__()
        self.options = options


@pytest.fixture(scope="module")
def base_argv(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile") / "out"
    return [f"--output={out}", f"--metrics={SAMPLES}/metrics.jsonl", "--llm_backend=local",
            "--runner=DirectRunner"]


@pytest.fixture(scope="module", autouse=True)
def no_job_runs():
    with pytest.MonkeyPatch.context() as patch:
        # Stops before the graph is built (a second and a half each); the test below builds
        # it once with every option at its limit.
        def refuse(pipeline, options, *args, **kwargs):
            raise JobWouldRun(options)
        patch.setattr(main, "build_pipeline", refuse)
        patch.delenv("OPENAI_API_KEY", raising=False)
        yield


def _run(argv):
    """The accepted options, or None after asserting one error line and exit 2."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main.main(argv)
        except JobWouldRun as accepted:
            return accepted.options.view_as(RealtimeAiOptions)
        except SystemExit as exit_:
            code = exit_.code
    assert code == 2, (argv, code, err.getvalue())
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err.getvalue())
    return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(option=st.sampled_from(FUZZED), text=HOSTILE_TEXT, separate=st.booleans())
def test_any_value_is_read_as_declared_or_one_error_line(base_argv, option, text, separate):
    # a separate "-h" is a request for help, answered with the help and exit 0 (as below)
    assume(not (separate and text in ("-h", "--help")))
    given_as = [option.flag, text] if separate else [f"{option.flag}={text}"]
    options = _run([*base_argv, *given_as])
    if options is not None:
        assert getattr(options, option.name) == option.value(text), (option.name, text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(extra=st.lists(st.one_of(st.text(max_size=20), st.text(max_size=20).map("--".__add__),
                                st.text(max_size=20).map("-".__add__)), max_size=3).filter(
    # a request for help is answered with the help and exit 0: not a hostile argument
    lambda words: not {"-h", "--help"} & set(words)))
def test_any_extra_argument_is_an_error_or_harmless(base_argv, extra):
    options = _run([*base_argv, *extra])
    if options is not None:
        # Accepted: nothing but blank words, and nothing of ours changed.
        assert all(not word.strip() or word.startswith("-") for word in extra), extra
        base = parse_options(base_argv).view_as(RealtimeAiOptions)
        for option in OPTIONS:
            assert getattr(options, option.name) == getattr(base, option.name), option.name


def test_every_option_at_its_limits_builds_the_pipeline(base_argv):
    # The bounds are what the job's arithmetic, timers and waits can hold.
    assert MAX_SECONDS <= threading.TIMEOUT_MAX
    for limit, streaming in (("minimum", False), ("maximum", False), ("maximum", True)):
        # --shadow_sample needs a shadow model
        argv = [*base_argv, "--shadow_fast_model=shadow-model"]
        argv += ["--streaming"] if streaming else []
        for option in FUZZED:
            bound = getattr(option.value, limit, None)
            if bound is not None:
                above = getattr(option.value, "above", False) and limit == "minimum"
                argv.append(f"{option.flag}={bound + 1 if above else bound}")
        pipeline = beam.Pipeline(options=parse_options(argv))
        rows = real_build_pipeline(pipeline, pipeline.options)
        expected = {*OUTPUT_SCHEMAS, SHADOW_DATASET}
        if streaming:  # no step for a dataset that no input feeds (only metrics are read)
            expected -= {"transactions", SHADOW_DATASET}
        assert set(rows) == expected, limit
