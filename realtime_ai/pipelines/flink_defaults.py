"""What --runner=FlinkRunner needs besides --flink_master, for scripts/flink-cluster.sh's cluster.

Maven Central as reachable here has no Beam Flink job-server jar, so the script assembles the
Beam 2.62 Flink 1.19 job server and a launcher jar at JOB_SERVER_JAR; Python workers come from
the script's worker pool (the EXTERNAL environment).
`python -m realtime_ai.pipelines.flink_defaults` prints JOB_SERVER_JAR and EXPANSION_SERVICE_JAR:
the script builds them there.
"""
from pathlib import Path

FLINK_VERSION = "1.19"
JOB_SERVER_DIR = Path.home() / ".cache" / "realtime-ai" / "beam-flink-1.19-job-server-2.62.0"
JOB_SERVER_JAR = JOB_SERVER_DIR / "job-server-launcher.jar"
# Serves KafkaIO (Beam 2.62) for kafka:// inputs; its Java transforms run EMBEDDED in the
# TaskManager. Started on demand by the pipeline (JavaJarExpansionService).
EXPANSION_SERVICE_JAR = JOB_SERVER_DIR / "expansion-service-launcher.jar"
WORKER_POOL = "localhost:50000"


def flink_defaults() -> dict[str, str]:
    """Beam option names and values, to fill in where the command line leaves them unset."""
    return {
        "flink_version": FLINK_VERSION,
        "flink_job_server_jar": str(JOB_SERVER_JAR),
        "environment_type": "EXTERNAL",
        "environment_config": WORKER_POOL,
        "kafka_expansion_service": str(EXPANSION_SERVICE_JAR),
    }


def job_server_jar_exists() -> bool:
    """Whether scripts/flink-cluster.sh has assembled the job server on this machine."""
    return JOB_SERVER_JAR.is_file()


if __name__ == "__main__":
    print(JOB_SERVER_JAR, EXPANSION_SERVICE_JAR)
