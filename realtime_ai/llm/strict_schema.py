"""The strict structured-output subset of JSON Schema that OpenAI and Azure OpenAI accept. Pure.

With `"strict": true` both providers compile the answer schema into a constraint on decoding
and answer 400 to a schema outside the subset they support: every object lists all its
properties in `required` and sets `additionalProperties: false`; the root is an object; no
length, range or count keywords (`maxLength`, `minimum`, `maxItems`, `pattern`, `format`, ...:
Azure OpenAI rejects them all; OpenAI accepts some, on some models only); at most 100 object
properties, 5 levels of nesting and 500 enum values in all. Our answer schemas
(`tasks.SCHEMAS`) keep their limits and `parse_answer` checks them on our side;
`provider_schema` is what is sent, the limits restated as descriptions the model reads.
`problems` is the check both the test server and the tests apply, worded like the providers'
own 400 messages.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Keywords inside the subset both providers accept ("description" is what the model reads).
SUPPORTED_KEYWORDS = frozenset({"type", "properties", "required", "additionalProperties",
                                "items", "enum", "const", "anyOf", "description", "$defs",
                                "$ref"})
MAX_PROPERTIES = 100
MAX_NESTING = 5
MAX_ENUM_VALUES = 500


def _limits_in_words(schema: Mapping[str, Any]) -> str:
    words = []
    if "maxLength" in schema:
        words.append(f"at most {schema['maxLength']} characters")
    if "minimum" in schema and "maximum" in schema:
        words.append(f"from {schema['minimum']} to {schema['maximum']}")
    if "maxItems" in schema:
        words.append(f"at most {schema['maxItems']} items")
    return ", ".join(words)


def provider_schema(schema: Mapping[str, Any]) -> dict:
    """`schema` inside the strict subset: limits become descriptions, checked on our side."""
    sent: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties":
            sent[key] = {name: provider_schema(sub) for name, sub in value.items()}
        elif key == "items":
            sent[key] = provider_schema(value)
        elif key in SUPPORTED_KEYWORDS:
            sent[key] = value
    limits = _limits_in_words(schema)
    if limits:
        sent["description"] = f"{sent['description']} ({limits})" if "description" in sent \
            else limits
    return sent


def problems(schema: Mapping[str, Any]) -> list[str]:
    """What a strict-mode provider rejects in `schema`, in its own words; [] if nothing."""
    found: list[str] = []
    if schema.get("type") != "object" or "anyOf" in schema:
        found.append("In context=(), schema must be a JSON Schema of 'type: \"object\"', got "
                     f"'type: \"{schema.get('type')}\"'.")
    counts = {"properties": 0, "enum": 0}
    _walk(schema, (), 1, counts, found)
    if counts["properties"] > MAX_PROPERTIES:
        found.append(f"A schema may have up to {MAX_PROPERTIES} object properties total; "
                     f"it has {counts['properties']}.")
    if counts["enum"] > MAX_ENUM_VALUES:
        found.append(f"A schema may have up to {MAX_ENUM_VALUES} enum values total; "
                     f"it has {counts['enum']}.")
    return found


def _walk(schema: Mapping[str, Any], context: tuple, depth: int, counts: dict,
          found: list[str]) -> None:
    for key in schema:
        if key not in SUPPORTED_KEYWORDS:
            found.append(f"In context={context}, '{key}' is not permitted.")
    counts["enum"] += len(schema.get("enum", ()))
    if schema.get("type") == "object" or "properties" in schema:
        if depth > MAX_NESTING:
            found.append(f"In context={context}, objects are nested deeper than "
                         f"{MAX_NESTING} levels.")
        properties = schema.get("properties", {})
        counts["properties"] += len(properties)
        if schema.get("additionalProperties") is not False:
            found.append(f"In context={context}, 'additionalProperties' is required to be "
                         "supplied and to be false.")
        missing = [name for name in properties if name not in (schema.get("required") or [])]
        if missing:
            found.append(f"In context={context}, 'required' is required to be supplied and to "
                         "be an array including every key in properties. Missing "
                         f"'{missing[0]}'.")
        for name, sub in properties.items():
            _walk(sub, (*context, "properties", name), depth + 1, counts, found)
    if "items" in schema:
        _walk(schema["items"], (*context, "items"), depth, counts, found)
    for index, option in enumerate(schema.get("anyOf", ())):
        _walk(option, (*context, "anyOf", index), depth, counts, found)
