"""The checks on `websocket_apis:` that types cannot say (docs/websocket.md)."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlsplit

SELECTION = re.compile(r"^\$request\.body\.[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
API_KEY_SELECTION = ("$request.header.x-api-key", "$context.authorizer.usageIdentifierKey")
STAGE_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
RESERVED_ROUTES = ("$connect", "$disconnect", "$default")


def status_pattern(key: str):
    """An integration response key that selects by status: /REGEX/ -> the compiled regex."""
    if len(key) < 3 or not (key.startswith("/") and key.endswith("/")):
        raise ValueError(f"expected /REGEX/ matching a status code, e.g. /4\\d\\d/, got {key!r}")
    try:
        return re.compile(key[1:-1])
    except re.error as e:
        raise ValueError(f"{key!r}: {e}") from None


def websocket_api_id(api) -> str:
    """The API's id: its own, else one derived from its name (10 characters, as AWS's)."""
    return api.id or hashlib.sha1(api.name.encode()).hexdigest()[:10]


def check_websocket_apis(checker, cfg) -> None:
    """checker: a fastgate.compile.config.checks.Checker (fail(path, message))."""
    ids: dict[str, int] = {}
    for i, api in enumerate(cfg.websocket_apis):
        p = ("websocket_apis", i)
        api_id = websocket_api_id(api)
        if api_id in ids:
            checker.fail(p + ("id",), f"API id {api_id!r} is already websocket_apis[{ids[api_id]}]'s")
        ids[api_id] = i
        if not SELECTION.match(api.route_selection_expression):
            checker.fail(p + ("route_selection_expression",),
                         "expected $request.body.NAME (a JSON field of the message, dotted for "
                         f"nested ones), got {api.route_selection_expression!r}")
        if api.api_key_selection_expression not in API_KEY_SELECTION:
            checker.fail(p + ("api_key_selection_expression",),
                         f"expected one of {', '.join(API_KEY_SELECTION)}")
        if api.limits.max_frame_bytes > api.limits.max_message_bytes:
            checker.fail(p + ("limits", "max_frame_bytes"), "larger than max_message_bytes")
        for name in api.stages:
            if not STAGE_NAME.match(name):
                checker.fail(p + ("stages", name), "a stage name holds letters, digits, '-' and '_' "
                             "(WebSocket APIs have no $default stage)")
            if api.stages[name].throttle is not None:
                checker.attempt(p + ("stages", name, "throttle", "key"), api.stages[name].throttle.key_kind)
            for key in api.stages[name].method_throttles:
                # a WebSocket API's per-route throttles are keyed by route key
                if key not in api.routes:
                    checker.fail(p + ("stages", name, "method_throttles", key),
                                 f"no route {key!r} (routes: {', '.join(sorted(api.routes))})")
        for key, route in api.routes.items():
            rp = p + ("routes", key)
            if key.startswith("$") and key not in RESERVED_ROUTES:
                checker.fail(rp, f"a route key starting with $ is one of {', '.join(RESERVED_ROUTES)}")
            if not key or len(key) > 128:
                checker.fail(rp, "a route key is 1 to 128 characters")
            integ = route.integration
            kind = type(integ).__struct_config__.tag
            if kind == "function" and integ.function not in cfg.functions:
                checker.fail(rp + ("integration", "function"), f"unknown function {integ.function!r} "
                             f"(defined: {', '.join(sorted(cfg.functions)) or 'none'})")
            if kind in ("http_proxy", "http"):
                parts = urlsplit(integ.url)
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    checker.fail(rp + ("integration", "url"), f"expected an http(s) URL, got {integ.url!r}")
                if not (integ.method.isupper() and integ.method.isalpha()):
                    checker.fail(rp + ("integration", "method"), "an upper-case HTTP method")
            if kind == "http":
                for pattern in integ.response_templates:
                    checker.attempt(rp + ("integration", "response_templates", pattern),
                                    status_pattern, pattern)
            if route.api_key_required and key != "$connect":
                checker.fail(rp + ("api_key_required",), "only $connect checks an API key (as on AWS)")
            if route.auth is not None and key != "$connect":
                checker.fail(rp + ("auth",), "only $connect has an authorizer (as on AWS)")
            if route.model_selection_expression is not None:
                if key in ("$connect", "$disconnect"):
                    checker.fail(rp + ("model_selection_expression",),
                                 "request models validate messages: not on $connect or $disconnect")
                from fastgate.phases.websocket.models import selection_of
                checker.attempt(rp + ("model_selection_expression",), selection_of,
                                route.model_selection_expression)
                for mkey, name in route.request_models.items():
                    if name not in api.models:
                        checker.fail(rp + ("request_models", mkey), f"unknown model {name!r} "
                                     f"(models: {', '.join(sorted(api.models)) or 'none'})")
            elif route.request_models:
                checker.fail(rp + ("request_models",), "needs model_selection_expression")
            if route.route_response_selection_expression is not None and key == "$disconnect":
                checker.fail(rp + ("route_response_selection_expression",),
                             "$disconnect cannot answer: the connection is gone")
