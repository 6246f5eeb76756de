"""Flex Template metadata generated from the pipeline's options, so the two cannot drift.

`python -m realtime_ai.pipelines.template > templates/metadata.json` rewrites the committed
file; a test fails when it is stale.
"""
from __future__ import annotations

import json

from realtime_ai.pipelines.options import OPTIONS, Option

TEMPLATE_NAME = "realtime-ai"
TEMPLATE_DESCRIPTION = (
    "Streaming AI inference for payment transactions and service metrics: per-customer "
    "history, model risk scoring with escalation, metric anomaly explanations and dashboard "
    "insights, written to Parquet.")


def _label(name: str) -> str:
    return " ".join(word.upper() if word in ("llm", "url") else word.capitalize()
                    for word in name.split("_"))


def _parameter(option: Option) -> dict:
    parameter = {
        "name": option.name,
        "label": _label(option.name),
        "helpText": option.help_text(),
        "isOptional": not option.required,
    }
    if option.value.regex:
        parameter["regexes"] = [option.value.regex]
    return parameter


def template_metadata() -> dict:
    return {
        "name": TEMPLATE_NAME,
        "description": TEMPLATE_DESCRIPTION,
        "parameters": [_parameter(option) for option in OPTIONS],
    }


if __name__ == "__main__":
    print(json.dumps(template_metadata(), indent=2))
