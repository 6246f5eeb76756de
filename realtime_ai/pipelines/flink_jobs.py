"""Cancelling a Beam job's Flink job through Flink's REST API.

The Beam 2.62 Flink job server answers a cancel request for a streaming job with CANCELLED but
leaves the Flink job running: every `--max_run_seconds` run kept its task slots until the
cluster stopped, and later jobs failed for want of slots. The Flink job carries the Beam job's
name, which is the Beam job id without its `_<uuid>` suffix.
"""
from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from typing import Any

from apache_beam.runners.portability.flink_runner import MAGIC_HOST_NAMES, FlinkRunner

# Flink job states that still hold (or wait for) task slots.
ACTIVE_STATES = frozenset({"INITIALIZING", "CREATED", "RUNNING", "RESTARTING", "FAILING"})
REST_TIMEOUT_SECONDS = 10.0


def flink_job_name(beam_job_id: str) -> str:
    return beam_job_id.rsplit("_", 1)[0]


def active_job_ids(overview: Mapping[str, Any], name: str) -> list[str]:
    """Ids of the active jobs called `name` in a /jobs/overview answer."""
    return [job["jid"] for job in overview.get("jobs", [])
            if job.get("name") == name and job.get("state") in ACTIVE_STATES]


def active_jobs(flink_master: str, name: str) -> list[str]:
    """Ids of the cluster's active jobs called `name`; OSError if the cluster does not answer."""
    url = f"{FlinkRunner.add_http_scheme(flink_master)}/jobs/overview"
    with urllib.request.urlopen(url, timeout=REST_TIMEOUT_SECONDS) as response:
        return active_job_ids(json.load(response), name)


def cancel_flink_jobs(flink_master: str, beam_job_id: str) -> list[str]:
    """Cancels the active Flink jobs of a Beam job; returns their ids. OSError if the
    cluster does not answer. An embedded cluster ([auto], Beam's default, or [local]) has no
    REST API and runs inside the job server, which Beam stops at exit: nothing to cancel."""
    if flink_master.strip() in MAGIC_HOST_NAMES:
        return []
    cancelled = active_jobs(flink_master, flink_job_name(beam_job_id))
    for job_id in cancelled:
        request = urllib.request.Request(
            f"{FlinkRunner.add_http_scheme(flink_master)}/jobs/{job_id}?mode=cancel",
            method="PATCH")
        with urllib.request.urlopen(request, timeout=REST_TIMEOUT_SECONDS):
            pass
    return cancelled
