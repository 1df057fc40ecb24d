"""JSON Schema of manifest.json, generated from the manifest dataclasses (the one source of
truth), published as docs/manifest.schema.json.

Usage: python -m edgepack_runtime.manifest_schema > docs/manifest.schema.json
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

from .manifest import SCHEMA_VERSION, Manifest
from .verdict import RECORD, RECORD_REQUIRED, Verdict

__all__ = ["manifest_schema"]

_SCALARS: dict[type, dict[str, Any]] = {bool: {"type": "boolean"}, int: {"type": "integer", "minimum": 0},
                                        float: {"type": "number"}, str: {"type": "string"}, dict: {"type": "object"}}


def _schema(hint: Any, definitions: dict[str, Any]) -> dict[str, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        (inner,) = [a for a in args if a is not type(None)]
        return {"anyOf": [_schema(inner, definitions), {"type": "null"}]}
    if origin is tuple:
        return {"type": "array", "items": _schema(args[0], definitions)}
    if origin is dict:  # dict[str, Any]: a free-form table
        return {"type": "object"}
    if hint is Verdict:  # the manifest records the build's verdict, not every field
        return _verdict_record(definitions)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):  # a hint is a class, never an instance
        name = hint.__name__
        if name not in definitions:
            definitions[name] = {}  # placeholder: a dataclass refers to itself only through this
            hints = typing.get_type_hints(hint)
            fields = dataclasses.fields(hint)
            definitions[name] = {
                "type": "object",
                "description": (hint.__doc__ or "").strip().split("\n\n")[0].replace("\n", " "),
                "properties": {f.name: _schema(hints[f.name], definitions) for f in fields},
                "required": [f.name for f in fields if f.default is dataclasses.MISSING
                             and f.default_factory is dataclasses.MISSING],
                # Unknown keys: damage within the minors a reader knows, ignored from newer ones.
                "additionalProperties": True,
            }
        return {"$ref": f"#/$defs/{name}"}
    return dict(_SCALARS[hint])


def _verdict_record(definitions: dict[str, Any]) -> dict[str, Any]:
    """The keys of Verdict.to_record: `passed` for `result`, the required ones never null."""
    hints = typing.get_type_hints(Verdict)

    def key(name: str) -> dict[str, Any]:
        if name == "passed":
            return {"type": "boolean"}
        schema = _schema(hints[name], definitions)
        return schema["anyOf"][0] if name in RECORD_REQUIRED and "anyOf" in schema else schema

    definitions["Verdict"] = {
        "type": "object",
        "description": "One artifact's outputs against PyTorch on the golden inputs, as the build judged them.",
        "properties": {name: key(name) for name in RECORD},
        "required": list(RECORD_REQUIRED),
        "additionalProperties": True,
    }
    return {"$ref": "#/$defs/Verdict"}


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of manifest.json at this runtime's SCHEMA_VERSION."""
    definitions: dict[str, Any] = {}
    root = _schema(Manifest, definitions)
    definitions["Manifest"]["properties"]["schema_version"] = {
        "anyOf": [{"type": "string", "pattern": r"^\d+\.\d+$"}, {"type": "integer", "minimum": 1}],
        "description": f'"MAJOR.MINOR" ({SCHEMA_VERSION} here); an integer before 2.1'}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://edgepack.dev/schemas/manifest-{SCHEMA_VERSION}.json",
            "title": f"edgepack bundle manifest, schema {SCHEMA_VERSION}", **root, "$defs": definitions}


if __name__ == "__main__":
    print(json.dumps(manifest_schema(), indent=2))
