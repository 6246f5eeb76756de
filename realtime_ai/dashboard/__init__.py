"""The live dashboard (an app, not Beam): `python -m realtime_ai.dashboard --help`."""
