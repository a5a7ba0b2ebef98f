"""Request validation of WebSocket messages (fastgate.phases.websocket.models): the model
selection expression picks a request model, else $default; neither, or not JSON: invalid."""

from __future__ import annotations

import json

import pytest

from fastgate.phases.websocket.models import RouteModels, selection_of

ORDER = {"type": "object", "required": ["qty"], "properties": {"qty": {"type": "integer"}}}


def test_selection_expressions():
    assert selection_of("$default") is None and selection_of("\\$default") is None
    assert selection_of("$request.body.kind") == ("kind",)
    assert selection_of("${request.body.meta.kind}") == ("meta", "kind")
    with pytest.raises(ValueError):
        selection_of("$request.header.x")


def test_the_selected_model_else_default():
    m = RouteModels("$request.body.kind", {"order": "Order", "$default": "Any"},
                    {"Order": json.dumps(ORDER), "Any": {"type": "object"}})
    assert m.valid(True, b'{"kind": "order", "qty": 1}')
    assert not m.valid(True, b'{"kind": "order", "qty": "1"}')
    assert m.valid(True, b'{"kind": "other"}')          # the $default model
    assert not m.valid(True, b'[1, 2]')                  # not an object
    assert not m.valid(True, b'not json')
    assert not m.valid(False, b'\x00\x01')              # binary: no JSON body


def test_no_matching_model_and_no_default_fails():
    m = RouteModels("$request.body.kind", {"order": "Order"}, {"Order": ORDER})
    assert m.valid(True, b'{"kind": "order", "qty": 3}')
    assert not m.valid(True, b'{"kind": "other", "qty": 3}')


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="Nope"):
        RouteModels("$default", {"$default": "Nope"}, {"Order": ORDER})
