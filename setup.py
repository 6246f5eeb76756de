"""Installs realtime_ai; also usable as Dataflow's --setup_file to ship it to workers."""
import setuptools

setuptools.setup(
    name="realtime-ai",
    version="0.1.0",
    description="Streaming AI inference for live data: one Apache Beam pipeline.",
    packages=setuptools.find_packages(include=["realtime_ai", "realtime_ai.*"]),
    package_data={"realtime_ai": ["llm/data/*.json", "dashboard/static/*.html"]},
    python_requires=">=3.10",
    install_requires=[
        "apache-beam[gcp]==2.77.0",
        # its exception types (llm/transport.py raises them) and the dashboard's streamed answers
        "openai[aiohttp]>=3.57,<4",
        # the CA bundle the model transport trusts, as the openai client did
        "certifi>=2024.7.4",  # CVE-2024-39689, CVE-2023-37920, CVE-2022-23491
        # Floors at or above the release fixing each known advisory (PyPI advisory database,
        # GitHub advisories), listed in tests/test_dependency_floors.py.
        "numpy>=1.26",
        "pyarrow>=23.0.1",  # CVE-2023-47248 (code execution reading Parquet), CVE-2026-25087
        "google-cloud-pubsub>=2.20",
        "aiohttp>=3.14.5",  # PYSEC-2026-4369, GHSA-2g87-pp6c-29x5, GHSA-5wr8-gcqf-gqf3
        "redis>=5",
        "kafka-python>=2.3.2",  # CVE-2026-10142, CVE-2026-10143
        # the live dashboard (realtime_ai/dashboard)
        "fastapi>=0.110",
        "uvicorn>=0.29",
        "prometheus-client>=0.20",
    ],
)
