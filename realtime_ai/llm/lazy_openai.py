"""The openai package, imported where it is first used. No Beam.

The model path needs only the package's exception types, and only once a request fails: the
transport raises them, the client and the classifier read them. Importing the package costs
about 0.7 s of CPU (some 700 modules of API types), and in a streaming worker that import ran
inside the first bundle of the step that asks the model, competing for the GIL with the other
steps' first bundles: 5.6 s of the workers' bundle threads in the first 15 s of a Flink job
at 330 events/s (py-spy), while the events behind it waited.
"""
from __future__ import annotations

import importlib
from typing import Any


class _ImportedOnFirstUse:
    def __getattr__(self, name: str) -> Any:
        return getattr(importlib.import_module("openai"), name)


openai = _ImportedOnFirstUse()
