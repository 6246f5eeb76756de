"""The endpoint's API key, read from the environment alike on the launcher and on workers."""
from __future__ import annotations

import os
import re
from collections.abc import Mapping

# What an HTTP Authorization header can carry: printable ASCII, no spaces.
_KEY_CHARACTERS = re.compile(r"[\x21-\x7e]+")


class InvalidApiKey(ValueError):
    """A key no endpoint could accept; the message names the variable, never the key."""


def api_key(variable: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """The key in `variable` without surrounding whitespace (a key mounted from a secret file
    ends with a newline), or None when unset or blank. InvalidApiKey when what remains holds
    whitespace, control or non-ASCII characters."""
    key = environ.get(variable, "").strip()
    if not key:
        return None
    if not _KEY_CHARACTERS.fullmatch(key):
        position = next(i for i, char in enumerate(key) if not _KEY_CHARACTERS.fullmatch(char))
        raise InvalidApiKey(
            f"{variable} holds a space, control or non-ASCII character inside the key (at "
            f"character {position + 1} of {len(key)}); set it to the key alone")
    return key
