"""Topic, subscription and pull helpers for tests against the Pub/Sub emulator."""
import uuid

from realtime_ai.io.pubsub_admin import EMULATOR_PROJECT, ensure_subscription


def topic_with_subscription(prefix):
    from google.cloud import pubsub_v1

    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"  # the emulator may outlive one test run
    subscription = ensure_subscription(EMULATOR_PROJECT, topic, f"{topic}-reader")
    return f"projects/{EMULATOR_PROJECT}/topics/{topic}", pubsub_v1.SubscriberClient(), subscription


def pull_all(subscriber, subscription):
    messages = []
    while True:
        response = subscriber.pull(subscription=subscription, max_messages=500, timeout=5)
        if not response.received_messages:
            return messages
        messages += [m.message for m in response.received_messages]
        subscriber.acknowledge(subscription=subscription,
                               ack_ids=[m.ack_id for m in response.received_messages])
