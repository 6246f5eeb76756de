"""What --runner=FlinkRunner needs besides --flink_master, for scripts/flink-cluster.sh's cluster.

Maven Central as reachable here has no Beam Flink job-server jar, so the script assembles the
Beam 2.62 Flink 1.19 job server and a launcher jar at JOB_SERVER_JAR; Python workers come from
the script's worker pool (the EXTERNAL environment).
`python -m realtime_ai.pipelines.flink_defaults` prints JOB_SERVER_JAR, EXPANSION_SERVICE_JAR
and RUNNER_JAR: the script builds them there.
"""
from pathlib import Path

from apache_beam.options.pipeline_options import PipelineOptions

from realtime_ai.pipelines.option_values import TrueOrFalse

FLINK_VERSION = "1.19"
# The job server's runner jar carries fixes (scripts/flink-cluster.sh, `fix_runner`); the folder
# is named after them, so that a machine with an older assembly builds this one.
JOB_SERVER_FIXES = "fixed1"
JOB_SERVER_DIR = (Path.home() / ".cache" / "realtime-ai"
                  / f"beam-flink-1.19-job-server-2.62.0-{JOB_SERVER_FIXES}")
JOB_SERVER_JAR = JOB_SERVER_DIR / "job-server-launcher.jar"
# Serves KafkaIO (Beam 2.62) for kafka:// inputs; its Java transforms run EMBEDDED in the
# TaskManager. Started on demand by the pipeline (JavaJarExpansionService).
EXPANSION_SERVICE_JAR = JOB_SERVER_DIR / "expansion-service-launcher.jar"
# Beam's Flink runner among the job server's jars (as Maven names it): the one the fixes go in.
RUNNER_JAR = JOB_SERVER_DIR / "lib" / "beam-runners-flink-1.19-2.62.0.jar"
WORKER_POOL = "localhost:50000"
# Python worker processes per TaskManager (Beam's default: 1). With one, every step's bundles
# share one interpreter: the per-customer step, which waits on a state round trip per key,
# queued for the GIL behind the metrics step's CPU work (transaction alerts 11.9 s p99 at
# 330 events/s, 6.1 s with two; benchmarks/flink_latency.py). Beam spreads the steps over them.
SDK_WORKER_PARALLELISM = 2


def flink_defaults() -> dict[str, str | int]:
    """Beam option names and values, to fill in where the command line leaves them unset."""
    return {
        "flink_version": FLINK_VERSION,
        "flink_job_server_jar": str(JOB_SERVER_JAR),
        "environment_type": "EXTERNAL",
        "environment_config": WORKER_POOL,
        "sdk_worker_parallelism": SDK_WORKER_PARALLELISM,
        "kafka_expansion_service": str(EXPANSION_SERVICE_JAR),
    }


# Flink streaming: a bundle stays open at most this long (Beam's default: 1000 ms). On Beam's
# portable Flink runner (2.62) a stateful step's event-time timers fire only between bundles,
# and a timer set while timers fire runs in the next bundle at the earliest: each bundle is one
# round of the per-key ordering step's releases, and a step's watermark moves on only between
# bundles too. With 1000 ms a key got at most about one release a second (benchmarks/
# flink_latency.py). 100 ms: alerts 1.6 s (p50) after their event at 100 events/s; it costs
# about 15% more CPU than 250 ms at 330 events/s.
MAX_BUNDLE_TIME_MILLS = 100


class FlinkJavaRunnerOptions(PipelineOptions):
    """Options of Beam's Java Flink runner (FlinkPipelineOptions) that the main command accepts
    (it rejects options no Python class declares) and passes on to the job server. Beam 2.62's
    Flink runner reads them in its streaming operators and unbounded sources only (DoFnOperator,
    FlinkUnboundedSourceReader): a batch job on Flink, and every other runner, ignore them, so
    the default below is set here for all jobs. Unset ones keep the runner's defaults."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--max_bundle_time_mills", type=int, default=MAX_BUNDLE_TIME_MILLS,
            help="Flink streaming: longest a bundle stays open, in ms. "
                 f"Default: {MAX_BUNDLE_TIME_MILLS} (Beam's: 1000).")
        parser.add_argument(
            "--max_bundle_size", type=int, default=None,
            help="Flink streaming: most elements in a bundle (Beam's default: 1000).")
        parser.add_argument(
            "--finish_bundle_before_checkpointing", type=TrueOrFalse(), default=True,
            help="Flink streaming: finish each step's open bundle, its outputs sent on, before "
                 "a checkpoint's barrier, rather than inside the checkpoint with its outputs "
                 "kept there to send after it (Beam's default: false; a job restored from "
                 "such a savepoint sent them to the wrong dataset). Default: true.")
        parser.add_argument(
            "--auto_watermark_interval", type=int, default=None,
            help="Flink streaming: how often sources emit their watermark, in ms "
                 "(Flink's default: 200).")
        parser.add_argument(
            "--checkpointing_interval", type=int, default=None,
            help="Flink: checkpoint every this many ms (Beam's default: never).")
        parser.add_argument(
            "--savepoint_path", default=None,
            help="Flink: start the job from this savepoint (or retained checkpoint), e.g. one "
                 "written by Flink's REST /jobs/ID/stop; the pipeline's steps must be the same.")
        parser.add_argument(
            "--allow_non_restored_state", action="store_true", default=False,
            help="Flink: with --savepoint_path, start even where the savepoint holds the state "
                 "of a step this version no longer has; what that step held is dropped (a "
                 "savepoint of an earlier version, which gathered model requests in state: "
                 "take it while none waits there, see the README).")
        parser.add_argument(
            "--shutdown_sources_after_idle_ms", type=int, default=None,
            help="Flink streaming: stop a source this long after it reached the end, in ms.")


def job_server_jar_exists() -> bool:
    """Whether scripts/flink-cluster.sh has assembled the job server on this machine."""
    return JOB_SERVER_JAR.is_file()


if __name__ == "__main__":
    print(JOB_SERVER_JAR, EXPANSION_SERVICE_JAR, RUNNER_JAR)
