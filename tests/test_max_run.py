"""--max_run_seconds on a portable runner (Flink): the cancel waits for Beam's reader of the
job's messages, so that the exit, which stops the job service, does not cut it off with a
traceback. Beam's own portable PipelineResult over a job service of ours."""
import threading
import time

from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions
from apache_beam.portability.api import beam_job_api_pb2
from apache_beam.runners.portability.portable_runner import PipelineResult

from realtime_ai.pipelines import main

RUNNING = beam_job_api_pb2.JobState.RUNNING
CANCELLED = beam_job_api_pb2.JobState.CANCELLED
DONE = beam_job_api_pb2.JobState.DONE
MESSAGE_STREAM_LAG_SECONDS = 1.0  # the job service closes it a moment after the state


class _JobService:
    """Answers like Beam's Java job service: the state is terminal as soon as the job ends
    or the cancel returns, and the message stream ends a moment later."""

    def __init__(self):
        self.state = RUNNING
        self.ended = threading.Event()
        self.cancelled = False
        self.messages_closed = threading.Event()

    def end(self, state):
        self.state = state
        self.ended.set()

    def Cancel(self, request):  # noqa: N802 - the gRPC stub's name
        self.cancelled = True
        self.end(CANCELLED)
        return beam_job_api_pb2.CancelJobResponse(state=CANCELLED)

    def GetState(self, request):  # noqa: N802 - the gRPC stub's name
        return beam_job_api_pb2.JobStateEvent(state=self.state)

    def state_stream(self):
        yield beam_job_api_pb2.JobStateEvent(state=RUNNING)
        self.ended.wait()
        yield beam_job_api_pb2.JobStateEvent(state=self.state)

    def message_stream(self):
        self.ended.wait()
        time.sleep(MESSAGE_STREAM_LAG_SECONDS)
        yield beam_job_api_pb2.JobMessagesResponse(
            state_response=beam_job_api_pb2.JobStateEvent(state=self.state))
        self.messages_closed.set()


def test_cancelling_a_portable_job_returns_after_its_message_stream_has_ended():
    service = _JobService()
    result = PipelineResult(service, "job-1", service.message_stream(), service.state_stream())

    assert main._wait_then_cancel(result, seconds=0.2) is True

    assert service.cancelled
    assert service.messages_closed.is_set()
    assert result.state == "CANCELLED"


def test_a_portable_job_that_ends_in_time_is_not_cancelled():
    service = _JobService()
    result = PipelineResult(service, "job-1", service.message_stream(), service.state_stream())
    threading.Timer(0.2, service.end, args=(DONE,)).start()

    assert main._wait_then_cancel(result, seconds=30) is False

    assert not service.cancelled
    assert result.state == "DONE"


def test_the_command_watches_a_portable_job_without_beams_300_s_deadline():
    # Beam opens a portable job's state and message streams with --job_server_timeout as
    # their deadline: a streaming job on Prism died 310 s in (make bench-soak).
    options = PipelineOptions(["--runner=PrismRunner", "--streaming"])
    main._watch_job_without_deadline(options)
    assert options.view_as(PortableOptions).job_server_timeout >= 7 * 24 * 3600
    chosen = PipelineOptions(["--runner=PrismRunner", "--job_server_timeout=120"])
    main._watch_job_without_deadline(chosen)
    assert chosen.view_as(PortableOptions).job_server_timeout == 120
