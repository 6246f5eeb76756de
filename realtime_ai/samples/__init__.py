"""Sample events for demos and tests: `python -m realtime_ai.samples --help`."""
