"""Create Pub/Sub topics and subscriptions if missing.

The emulator (scripts/pubsub-emulator.sh) forgets them whenever it restarts, so whoever reads or
writes it creates them first. The google-cloud-pubsub clients, like Beam, talk to
PUBSUB_EMULATOR_HOST when it is set, and to Pub/Sub itself otherwise.

    python -m realtime_ai.io.pubsub_admin PROJECT TOPIC [SUBSCRIPTION]
"""
from __future__ import annotations

import argparse

from google.api_core.exceptions import AlreadyExists
from google.cloud import pubsub_v1

# Beam rejects project ids that fail its pattern ("local" does); this one passes.
EMULATOR_PROJECT = "local-project"
ADMIN_TIMEOUT_SECONDS = 10.0


def ensure_topic(project: str, topic: str) -> str:
    """Create the topic unless it exists; return its path (projects/P/topics/T)."""
    with pubsub_v1.PublisherClient() as publisher:
        path = publisher.topic_path(project, topic)
        try:
            publisher.create_topic(name=path, timeout=ADMIN_TIMEOUT_SECONDS)
        except AlreadyExists:
            pass  # the state we want
    return path


def ensure_subscription(project: str, topic: str, subscription: str,
                        ack_deadline_seconds: int = 60) -> str:
    """Create the topic and a pull subscription on it unless they exist; return the
    subscription's path (projects/P/subscriptions/S). An existing subscription is kept as is."""
    topic_path = ensure_topic(project, topic)
    with pubsub_v1.SubscriberClient() as subscriber:
        path = subscriber.subscription_path(project, subscription)
        try:
            subscriber.create_subscription(name=path, topic=topic_path,
                                           ack_deadline_seconds=ack_deadline_seconds,
                                           timeout=ADMIN_TIMEOUT_SECONDS)
        except AlreadyExists:
            pass  # the state we want
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project")
    parser.add_argument("topic")
    parser.add_argument("subscription", nargs="?")
    args = parser.parse_args(argv)
    if args.subscription:
        print(ensure_subscription(args.project, args.topic, args.subscription))
    else:
        print(ensure_topic(args.project, args.topic))


if __name__ == "__main__":
    main()
