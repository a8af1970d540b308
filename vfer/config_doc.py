"""docs/config.md, the reference of every config key, written from the schema
(workflow/schemas/config.schema.yaml): ``python -m vfer.config_doc > docs/config.md``.
tests/test_config.py checks that the file is what this writes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from vfer.config import load_schema

HEADER = """# Configuration reference

Every key of a vfer config, with its type, default and meaning, written from
`workflow/schemas/config.schema.yaml` by `python -m vfer.config_doc > docs/config.md` (a test
checks that the two agree). `config/config.yaml` is the demo's config; a `--configfile`
replaces it. Every object is strict: an unknown or misspelled key stops the run before any
job, naming the key. `<name>` stands for a name you choose (a stream, a network, an input or
a flow variant); `[]` for each item of a list.
"""


def _resolve(node: dict, schema: dict) -> dict:
    """``node`` with its ``$ref`` replaced by the definition, its own keys kept on top."""
    if "$ref" not in node:
        return node
    name = node["$ref"].split("/")[-1]
    return {**schema["$defs"][name], **{k: v for k, v in node.items() if k != "$ref"}}


def _type(node: dict, schema: dict) -> str:
    node = _resolve(node, schema)
    if "anyOf" in node:
        return " or ".join(_type(alt, schema) for alt in node["anyOf"])
    if "enum" in node:
        return "one of " + ", ".join("null" if v is None else str(v) for v in node["enum"])
    kinds = node.get("type", "")
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    if "array" in kinds and isinstance(node.get("items"), dict):
        item = _resolve(node["items"], schema)
        inner = "objects" if "properties" in item else _type(item, schema)
        kinds[kinds.index("array")] = f"list of {inner}"
    if "object" in kinds and isinstance(node.get("additionalProperties"), dict) \
            and "properties" not in node:
        kinds[kinds.index("object")] = "name -> " + _type(node["additionalProperties"], schema)
    bounds = [f"{word} {node[key]}" for key, word in
              (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
               ("exclusiveMaximum", "<")) if key in node]
    return ", ".join([" or ".join(kinds)] + bounds).strip(", ")


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", text).replace("|", "\\|").strip()


def _rows(node: dict, path: str, schema: dict, required: set) -> Iterator[tuple[str, ...]]:
    node = _resolve(node, schema)
    default = "(required)" if path.split(".")[-1] in required else \
        f"`{json.dumps(node['default'])}`" if "default" in node else ""
    yield (f"`{path}`", _cell(_type(node, schema)), default,
           _cell(node.get("description", "")))
    if "properties" in node:
        inner = set(node.get("required", []))
        for key, sub in node["properties"].items():
            yield from _rows(sub, f"{path}.{key}", schema, inner)
    elif isinstance(node.get("additionalProperties"), dict):
        sub = _resolve(node["additionalProperties"], schema)
        if "properties" in sub:
            yield from _rows(sub, f"{path}.<name>", schema, set())
    items = node.get("items")
    if isinstance(items, dict) and "properties" in _resolve(items, schema):
        yield from _rows(items, f"{path}[]", schema, set())


def reference(schema: dict | None = None) -> str:
    """The Markdown reference of every key of ``schema`` (default: vfer's)."""
    schema = schema or load_schema()
    out = [HEADER]
    required = set(schema.get("required", []))
    table = ["| key | type | default | meaning |", "|---|---|---|---|"]
    sections = [("Top level", [k for k, v in schema["properties"].items()
                               if not _nested(_resolve(v, schema))])]
    sections += [(f"`{k}`", [k]) for k, v in schema["properties"].items()
                 if _nested(_resolve(v, schema))]
    for title, keys in sections:
        out += [f"## {title}", "", *table]
        for key in keys:
            out += ["| " + " | ".join(row) + " |"
                    for row in _rows(schema["properties"][key], key, schema, required)]
        out.append("")
    return "\n".join(out)


def _nested(node: dict) -> bool:
    """Whether ``node`` has keys of its own (an object with properties, a map of them, or a
    list of them)."""
    return "properties" in node or isinstance(node.get("additionalProperties"), dict) or \
        isinstance(node.get("items"), dict) and "properties" in node["items"]


if __name__ == "__main__":
    print(reference(), end="")
