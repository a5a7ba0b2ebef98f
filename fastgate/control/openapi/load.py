"""Reading an OpenAPI document: JSON or YAML text into a dict, refusing duplicate keys,
with errors that name the file, line and column."""

from __future__ import annotations

import json

import yaml

from fastgate.control.openapi.document import OpenAPIError


class _Loader(yaml.SafeLoader):
    """YAML loader that keeps scalars the way a JSON reader would see them.

    YAML 1.1 turns `version: 2016-09-12T23:19:28Z` into a datetime and `200:` response
    keys into ints; neither survives JSON and OpenAPI means strings in both places.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader, node):
    loader.flatten_mapping(node)
    mapping = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            key = json.dumps(key) if isinstance(key, bool) or key is None else str(key)
        if key in mapping:
            mark = key_node.start_mark
            raise OpenAPIError(
                f"{mark.name}:{mark.line + 1}:{mark.column + 1}: duplicate key {key!r}")
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _json_object_no_duplicates(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise OpenAPIError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def load_document(data: bytes | str, filename: str = "<openapi>") -> dict:
    """Parse JSON or YAML text into a dict; OpenAPIError with file and line on bad syntax."""
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise OpenAPIError(f"{filename}: not UTF-8 text (byte {exc.start})") from None
    if data.lstrip().startswith("{"):
        try:
            doc = json.loads(data, object_pairs_hook=_json_object_no_duplicates)
        except json.JSONDecodeError as exc:
            raise OpenAPIError(
                f"{filename}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
        except OpenAPIError as exc:
            raise OpenAPIError(f"{filename}: invalid JSON: {exc}") from None
    else:
        try:
            doc = yaml.load(data, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark else filename
            raise OpenAPIError(f"{where}: invalid YAML: {exc.problem or exc.context}") from None
        except yaml.YAMLError as exc:
            raise OpenAPIError(f"{filename}: invalid YAML: {exc}") from None
        except OpenAPIError as exc:
            raise OpenAPIError(f"invalid YAML: {exc}".replace("<unicode string>", filename)) from None
    if not isinstance(doc, dict):
        raise OpenAPIError(
            f"{filename}: an OpenAPI document is a JSON/YAML object, not {type(doc).__name__}")
    return doc
