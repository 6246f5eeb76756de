"""Flex Template metadata generated from the pipeline's options, so the two cannot drift.

`python -m realtime_ai.pipelines.template > templates/metadata.json` rewrites the committed
file; a test fails when it is stale.
"""
from __future__ import annotations

import argparse
import json
import re

from realtime_ai.pipelines.options import options_parser

TEMPLATE_NAME = "realtime-ai"
TEMPLATE_DESCRIPTION = (
    "Streaming AI inference for payment transactions and service metrics: per-customer "
    "history, model risk scoring with escalation, metric anomaly explanations and dashboard "
    "insights, written to Parquet.")
# Options a job cannot run without; every other one has a default.
REQUIRED = frozenset({"output"})

_NUMBER_REGEX = {int: r"^[0-9]+$", float: r"^[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"}


def _option_actions() -> list[argparse.Action]:
    return list(options_parser(add_help=False)._actions)


def _label(name: str) -> str:
    return " ".join(word.upper() if word in ("llm", "url") else word.capitalize()
                    for word in name.split("_"))


def _parameter(action: argparse.Action) -> dict:
    parameter = {
        "name": action.dest,
        "label": _label(action.dest),
        "helpText": re.sub(r"\s+", " ", action.help).strip(),
        "isOptional": action.dest not in REQUIRED,
    }
    if action.choices:
        parameter["regexes"] = ["^(" + "|".join(map(re.escape, action.choices)) + ")$"]
    elif action.type in _NUMBER_REGEX:
        parameter["regexes"] = [_NUMBER_REGEX[action.type]]
    return parameter


def template_metadata() -> dict:
    return {
        "name": TEMPLATE_NAME,
        "description": TEMPLATE_DESCRIPTION,
        "parameters": [_parameter(action) for action in _option_actions()],
    }


if __name__ == "__main__":
    print(json.dumps(template_metadata(), indent=2))
