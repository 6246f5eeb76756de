"""Prompt tokens per transaction, and whether the compact risk lines change any decision.

Tokens as issue #17 measured them: 4 characters a token over every message's text, the first
500 sample transactions with their real features, unpacked and packed 10 per request, beside
an article-style prompt. Decisions: every sample transaction's risk from the local model on
the data itself and on what the test server reads back from our request, compared at the
alert threshold (0.8) and exactly.

    python benchmarks/prompt_tokens.py
"""
from __future__ import annotations

import json

from llm_throughput import REPO, article_prompt, risk_data

from realtime_ai.llm import base, local_model, tasks

MEASURED = 500
PACKED = 10
ALERT_THRESHOLD = 0.8


def tokens_per_transaction(data: list[dict]) -> dict:
    sample = data[:MEASURED]
    unpacked = sum(tasks.estimate_tokens(tasks.build_messages(base.TRANSACTION_RISK, item))
                   for item in sample)
    packed = sum(tasks.estimate_tokens(tasks.build_messages(
        base.TRANSACTION_RISK_PACKED, {"transactions": sample[i:i + PACKED]}))
        for i in range(0, len(sample), PACKED))
    article = sum(tasks.estimate_tokens(article_prompt(item)) for item in sample)
    return {"unpacked": round(unpacked / len(sample), 1),
            f"packed_{PACKED}": round(packed / len(sample), 1),
            "article_style": round(article / len(sample), 1)}


def decisions(data: list[dict]) -> dict:
    labelled = {json.loads(line)["transaction_id"]
                for line in open(REPO / "samples" / "transactions_labels.jsonl")}
    counts = {"transactions": len(data), "alert_changed": 0, "score_changed": 0,
              "labelled_alerts": 0, "labelled_alert_changed": 0}
    for i in range(0, len(data), PACKED):
        batch = data[i:i + PACKED]
        _, read = tasks.request_task_and_data(
            tasks.build_messages(base.TRANSACTION_RISK_PACKED, {"transactions": batch}),
            tasks.response_format(base.TRANSACTION_RISK_PACKED))
        for sent, received in zip(batch, read["transactions"], strict=True):
            before = local_model.transaction_risk(sent)["risk_score"]
            after = local_model.transaction_risk(received)["risk_score"]
            changed = (before >= ALERT_THRESHOLD) != (after >= ALERT_THRESHOLD)
            counts["score_changed"] += before != after
            counts["alert_changed"] += changed
            if sent["transaction"]["transaction_id"] in labelled:
                counts["labelled_alerts"] += before >= ALERT_THRESHOLD
                counts["labelled_alert_changed"] += changed
    return counts


def main() -> None:
    data = risk_data(sum(1 for _ in open(REPO / "samples" / "transactions.jsonl")))
    print(json.dumps({"prompt_tokens_per_transaction": tokens_per_transaction(data),
                      "decisions": decisions(data)}, indent=2))


if __name__ == "__main__":
    main()
