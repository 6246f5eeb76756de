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
        "numpy>=1.26",
        "pyarrow>=14",
        "google-cloud-pubsub>=2.20",
        "aiohttp>=3.14.4",
        "redis>=5",
        "kafka-python>=2.0",
        # the live dashboard (realtime_ai/dashboard)
        "fastapi>=0.110",
        "uvicorn>=0.29",
        "prometheus-client>=0.20",
    ],
)
