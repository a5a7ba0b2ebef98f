"""A route's request models (AWS's request validation for WebSocket APIs): the route's
model selection expression picks one of its request models for each message, whose JSON
schema the message must satisfy before the integration is called."""

from __future__ import annotations

import re

import orjson

from fastgate.phases.validation import model_validators

DEFAULT = "$default"
_BODY_FIELD = re.compile(r"^\$(?:\{request\.body\.([A-Za-z0-9_\-.]+)\}|request\.body\.([A-Za-z0-9_\-.]+))$")


def selection_of(expr: str) -> tuple[str, ...] | None:
    """A model selection expression: `$default` (escaped `\\$default` as AWS writes it) ->
    None, the $default model; `$request.body.NAME` -> the JSON path ("NAME",). Raises
    ValueError."""
    if expr in (DEFAULT, "\\" + DEFAULT):
        return None
    m = _BODY_FIELD.match(expr or "")
    if m is None:
        raise ValueError(f"unsupported model selection expression {expr!r}: use $default or "
                         "$request.body.NAME")
    return tuple((m.group(1) or m.group(2)).split("."))


class RouteModels:
    def __init__(self, expression: str, request_models: dict[str, str], schemas: dict):
        """request_models: selection key -> model name; schemas: model name -> JSON schema.
        Raises ValueError (an unknown model, a schema that does not compile)."""
        self.selection = selection_of(expression)
        names = set(request_models.values())
        unknown = sorted(names - set(schemas))
        if unknown:
            raise ValueError(f"request model {unknown[0]!r} does not exist")
        validators = model_validators({n: schemas[n] for n in names}, names)
        self.validators = {key: validators[name] for key, name in request_models.items()}

    def valid(self, text: bool, payload) -> bool:
        """Whether the message passes: JSON (a binary message is not), and valid against the
        selected model, else the $default one; neither: invalid, as AWS says."""
        if not text:
            return False
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return False
        validator = None
        if self.selection is not None:
            value = doc
            for name in self.selection:
                value = value.get(name) if isinstance(value, dict) else None
            if isinstance(value, str):
                validator = self.validators.get(value)
        if validator is None:
            validator = self.validators.get(DEFAULT)
        return validator is not None and validator.is_valid(doc)
