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
        "openai[aiohttp]>=3.57,<4",  # DefaultAioHttpClient over httpx2
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
