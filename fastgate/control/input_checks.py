"""The checks API Gateway's service front end makes on a request before any operation
runs, from the service model: JSON types (SerializationException) and enumerations and
patterns (ValidationException, every failure listed in one message, in AWS's wording).

Where AWS names a member: a body member by the operation's input shape and its path
(``updateMethodResponseInput.patchOperations.1.member.op``, list positions counted from
1), a URI label by its bare name (``statusCode``), body members first. The texts are in
fastgate/control/messages.py.
"""

from __future__ import annotations

import re

from fastgate.control.errors import Serialization, ValidationError
from fastgate.control.messages import (
    ENUM_CONSTRAINT,
    ENUM_ORDER,
    JAVA_CLASSES,
    LIST_ENUM_CONSTRAINT,
    PATTERN_CONSTRAINT,
    SERIALIZATION,
    validation_errors,
)

# the JSON types a shape's value may have (a number for a string is a type error in AWS)
_JSON_TYPES = {"string": (str,), "boolean": (bool,), "integer": (int,), "long": (int,),
               "double": (int, float), "float": (int, float), "list": (list,), "map": (dict,),
               "structure": (dict,), "timestamp": (int, float, str), "blob": (str, bytes)}
_TARGETS = {"string": "String", "boolean": "Boolean", "integer": "Integer", "long": "Long",
            "double": "Double", "float": "Float", "list": "List", "map": "Map",
            "structure": "Map", "timestamp": "Date", "blob": "ByteBuffer"}


def serialization_error(value, kind: str) -> Serialization:
    java = JAVA_CLASSES.get(type(value), type(value).__name__)
    return Serialization(SERIALIZATION.format(java_class=java, target=_TARGETS.get(kind, kind)))


def check_type(shapes: dict, shape_name: str, value) -> None:
    """SerializationException for a value (or any value inside it) of the wrong JSON type."""
    shape = shapes[shape_name]
    kind = shape["type"]
    ok = _JSON_TYPES.get(kind)
    if value is None or ok is None:
        return
    if not isinstance(value, ok) or (isinstance(value, bool) and kind not in ("boolean",)):
        raise serialization_error(value, kind)
    if kind == "list":
        for item in value:
            check_type(shapes, shape["member"]["shape"], item)
    elif kind == "map":
        for item in value.values():
            check_type(shapes, shape["value"]["shape"], item)
    elif kind == "structure":
        members = shape.get("members", {})
        for name, item in value.items():
            if name in members and not members[name].get("location"):
                check_type(shapes, members[name]["shape"], item)


def _constraints(shapes: dict, shape_name: str, value, where: str, errors: list[str]) -> None:
    shape = shapes[shape_name]
    kind = shape["type"]
    if value is None:
        return
    if kind == "string" and isinstance(value, str):
        if "enum" in shape and value not in shape["enum"]:
            allowed = ENUM_ORDER.get(shape_name, tuple(shape["enum"]))
            errors.append(ENUM_CONSTRAINT.format(value=value, where=where, choices=", ".join(allowed)))
        elif "pattern" in shape and not re.fullmatch(shape["pattern"], value):
            errors.append(PATTERN_CONSTRAINT.format(value=value, where=where, pattern=shape["pattern"]))
    elif kind == "list" and isinstance(value, list):
        item_shape = shape["member"]["shape"]
        item = shapes[item_shape]
        if item["type"] == "string" and "enum" in item:
            # a list of enumeration values is reported as a whole: Value '[a, b]'
            if any(v not in item["enum"] for v in value):
                allowed = ENUM_ORDER.get(item_shape, tuple(item["enum"]))
                errors.append(LIST_ENUM_CONSTRAINT.format(
                    value=", ".join(map(str, value)), where=where, choices=", ".join(allowed)))
            return
        for i, v in enumerate(value, 1):
            _constraints(shapes, item_shape, v, f"{where}.{i}.member", errors)
    elif kind == "structure" and isinstance(value, dict):
        for name, m in shape.get("members", {}).items():
            if not m.get("location") and name in value:
                _constraints(shapes, m["shape"], value[name], f"{where}.{name}", errors)


def check_constraints(shapes: dict, operation: str, input_shape: str, params: dict) -> None:
    """ValidationException listing every enumeration and pattern failure of the input."""
    shape = shapes[input_shape]
    prefix = operation[:1].lower() + operation[1:] + "Input"
    errors: list[str] = []
    members = shape.get("members", {})
    for name, m in members.items():
        if not m.get("location") and name in params:
            _constraints(shapes, m["shape"], params[name], f"{prefix}.{name}", errors)
    for name, m in members.items():
        if m.get("location") == "uri" and name in params:
            _constraints(shapes, m["shape"], params[name], name, errors)
    if errors:
        raise ValidationError(validation_errors(errors))
