"""API Gateway mapping templates (Velocity, VTL) and the mock integration that uses them.

A REST API's MOCK integration works in three steps, as API Gateway runs it:

1. the integration request template, chosen by the request's Content-Type (and the
   integration's passthroughBehavior when none matches), is rendered; its output's
   ``statusCode`` picks the integration response (``selectionPattern`` regexes matched
   against the status code, else the default response, the one without a pattern);
2. the chosen response's ``responseParameters`` set method response headers (static
   ``'values'``, ``context.X``, ``stageVariables.X``);
3. its response template, chosen by the request's Accept header (else application/json,
   else the first), is rendered into the body, and the method response status is the
   response's ``statusCode``.

Templates see API Gateway's variables: ``$input`` (``body``, ``json(path)``, ``path(path)``,
``params()`` / ``params(name)``), ``$util`` (``escapeJavaScript``, ``parseJson``,
``urlEncode``, ``urlDecode``, ``base64Encode``, ``base64Decode``), ``$context`` (the
request context of the payload 1.0 event, plus ``error`` for gateway responses) and
``$stageVariables``. Velocity itself is the airspeed package; templates are compiled once
when the API is compiled, and rendered per request only on routes that have them.
"""

from __future__ import annotations

import base64
import decimal
import json
import math
import re
from urllib.parse import quote_plus, unquote_plus

import airspeed

__all__ = ["MappingError", "MockIntegration", "HttpMapping", "Input", "Util", "jsonpath", "compile_template"]


class MappingError(ValueError):
    """A template that does not compile (at load) or fails to render (per request)."""


# PERF: parse trees by their template's text, kept across reloads (and inherited by the
# workers, forked after the supervisor's first compile). A reload of a host serving 1,000
# APIs parsed every mapping template again: 70% of build_snapshot (bench/fleet_propagation.py
# --part reload, bench/RESULTS.md). One tree may serve every route with the same text: a
# merge never changes it (airspeed's evaluate writes only the namespace).
_PARSED: dict[str, airspeed.Template] = {}
PARSED_MAX_CHARS = 32 * 1024 * 1024     # of template text kept; past it the oldest half goes
_parsed_chars = 0


def compile_template(text: str, where: str) -> airspeed.Template:
    """Parse once, so a syntax error is a load-time warning naming the template."""
    global _parsed_chars
    t = _PARSED.get(text)
    if t is not None:
        return t
    try:
        t = airspeed.Template(text)
        t.ensure_compiled()
    except airspeed.TemplateSyntaxError as e:
        raise MappingError(f"{where}: mapping template does not parse: {e}") from None
    if _parsed_chars + len(text) > PARSED_MAX_CHARS:
        for old in list(_PARSED)[:len(_PARSED) // 2 + 1]:     # the oldest first (insertion order)
            _parsed_chars -= len(old)
            del _PARSED[old]
    _PARSED[text] = t
    _parsed_chars += len(text)
    return t


_PATH_TOKEN = re.compile(r"\.([A-Za-z_$][\w$-]*)|\[(\d+|\*)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]|\.\*")


def jsonpath(value, path: str):
    """The value at a JSONPath in API Gateway's subset ($, .name, ['name'], [index], [*], .*);
    a wildcard gives a list; a missing member gives None."""
    path = path.strip()
    if not path.startswith("$"):
        raise MappingError(f"JSONPath {path!r} must start with $")
    values, multi, i = [value], False, 1
    while i < len(path):
        m = _PATH_TOKEN.match(path, i)
        if m is None:
            raise MappingError(f"JSONPath {path!r}: cannot read from column {i}")
        name = m.group(1) or m.group(3) or m.group(4)
        out = []
        for v in values:
            if m.group(2) == "*" or m.group(0) == ".*":
                multi = True
                out.extend(v.values() if isinstance(v, dict) else v if isinstance(v, list) else ())
            elif m.group(2) is not None:
                idx = int(m.group(2))
                if isinstance(v, list) and idx < len(v):
                    out.append(v[idx])
            elif isinstance(v, dict) and name in v:
                out.append(v[name])
        values, i = out, m.end()
    if multi:
        return values
    return values[0] if values else None


class JsonList(list):
    """A JSON array of the payload ($input.path, $util.parseJson). API Gateway's JSON
    arrays print as compact JSON, items and all (`[{"c":5}]`), where a Velocity list
    made in the template prints as Java's `[1, 2]`."""

    def __str__(self) -> str:
        return json.dumps(self, separators=(",", ":"), ensure_ascii=False)


# the methods Velocity templates call on lists (.size(), .get(i) ...) work on these too
airspeed.__additional_methods__.setdefault(JsonList, airspeed.__additional_methods__[list])


def _from_json(value):
    """A parsed JSON value with its arrays as JsonList (objects stay dicts: Java's map
    printing is the same for the payload's and the template's)."""
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return JsonList(_from_json(v) for v in value)
    return value


def _java_str(value) -> str:
    """A value as API Gateway's Velocity (Java) prints it: null as nothing, true/false,
    maps as Java's {a=1, b=[1, 2]}, lists as [1, 2], the payload's arrays as JSON."""
    if value is None:
        return ""
    return _java_inner(value)


def _java_inner(value) -> str:
    # toString of a value inside a map or list: a null member is "null"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, JsonList):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_java_inner(k)}={_java_inner(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_java_inner(v) for v in value) + "]"
    if isinstance(value, float):
        return _java_double(value)
    return str(value)


def _java_double(x: float) -> str:
    """Java's Double.toString: "1.5", "100.0" within 1e-3 <= |x| < 1e7 (as Python's repr),
    else computerized scientific notation with at least one fraction digit: "1.0E-5",
    "1.2345678E7" (Python: 1e-05, 12345678.0)."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0 or 1e-3 <= abs(x) < 1e7:
        return repr(x)
    _, digits, exp = decimal.Decimal(repr(abs(x))).as_tuple()   # shortest round-trip digits
    exponent = exp + len(digits) - 1
    text = "".join(map(str, digits)).rstrip("0") or "0"
    return f"{'-' if x < 0 else ''}{text[0]}.{text[1:] or '0'}E{exponent}"


def _print_reference(self, stream, namespace, loader):
    """airspeed's FormalReference.evaluate_raw, printing as API Gateway does: Java's
    toString (_java_str), and a null reference as nothing, quiet or not (Velocity would
    print the reference's own text; API Gateway prints nothing)."""
    if self.expression is None:         # a lone "$" is text
        stream.write(self.my_text())
        return
    value = self.expression.calculate(namespace, loader)
    if value is None and self.alternate is not None:
        value = self.alternate.calculate(namespace, loader)
    stream.write(_java_str(value))


# Velocity's printing is airspeed's, and fastgate is its only user in the process
airspeed.FormalReference.evaluate_raw = _print_reference


class Input:
    """$input: the payload and the method request's parameters."""

    def __init__(self, body: str, path: dict, querystring: dict, header: dict):
        self.body = body
        self._params = {"path": path, "querystring": querystring, "header": header}
        self._parsed = None

    def with_body(self, body: str) -> "Input":
        """The same parameters with another payload (an integration response's)."""
        return Input(body, *self._params.values())

    def _json(self):
        if self._parsed is None:
            try:
                self._parsed = (_from_json(json.loads(self.body)) if self.body.strip() else {},)
            except ValueError:
                raise MappingError("$input: the body is not JSON") from None
        return self._parsed[0]

    def json(self, path: str) -> str:
        """The JSON text at a JSONPath ($input.json('$.a'))."""
        return json.dumps(jsonpath(self._json(), path), separators=(",", ":"), ensure_ascii=False)

    def path(self, path: str):
        """The object at a JSONPath ($input.path('$.a').size())."""
        found = jsonpath(self._json(), path)
        return JsonList(found) if type(found) is list else found   # a wildcard's matches

    def params(self, name: str | None = None):
        """params(): {path, querystring, header}; params(x): path, then query, then header."""
        if name is None:
            return self._params
        for where in ("path", "querystring", "header"):
            table = self._params[where]
            if where == "header":
                for k, v in table.items():
                    if k.lower() == name.lower():
                        return v
            elif name in table:
                return table[name]
        return ""


_JS_ESCAPES = {"\\": "\\\\", '"': '\\"', "'": "\\'", "/": "\\/", "\b": "\\b",
               "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


class Util:
    """$util, with API Gateway's semantics (and its oddities: escapeJavaScript turns ' into
    \\', which is not valid inside JSON — AWS does the same)."""

    @staticmethod
    def escapeJavaScript(s) -> str:
        out = []
        for ch in _java_str(s):
            if ch in _JS_ESCAPES:
                out.append(_JS_ESCAPES[ch])
            elif ord(ch) < 0x20 or ord(ch) > 0x7E:
                out.append("".join(f"\\u{u:04X}" for u in _utf16(ch)))
            else:
                out.append(ch)
        return "".join(out)

    @staticmethod
    def parseJson(s):
        try:
            return _from_json(json.loads(_java_str(s)))
        except ValueError:
            raise MappingError("$util.parseJson: not JSON") from None

    @staticmethod
    def urlEncode(s) -> str:
        return quote_plus(_java_str(s), safe="*")

    @staticmethod
    def urlDecode(s) -> str:
        return unquote_plus(_java_str(s))

    @staticmethod
    def base64Encode(s) -> str:
        return base64.b64encode(_java_str(s).encode()).decode()

    @staticmethod
    def base64Decode(s) -> str:
        return base64.b64decode(_java_str(s).encode()).decode("utf-8", "replace")


def _utf16(ch: str):
    code = ord(ch)
    if code < 0x10000:
        return (code,)
    code -= 0x10000
    return (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF))


UTIL = Util()


def variables_of(event: dict, body: str) -> dict:
    """The template namespace from a payload 1.0 event (fastgate.phases.functions.events), which
    already holds the request context exactly as API Gateway fills it."""
    query = {k: v[-1] for k, v in (event.get("multiValueQueryStringParameters") or {}).items() if v}
    headers = dict(event.get("headers") or {})
    return {"input": Input(body, dict(event.get("pathParameters") or {}), query, headers),
            "util": UTIL, "context": dict(event.get("requestContext") or {}),
            "stageVariables": dict(event.get("stageVariables") or {})}


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


class _Templates:
    """What mock and http (non-proxy) integrations share: the integration request's
    templates with passthroughBehavior, and the integration responses."""

    def __init__(self, integ: dict, where: str, warn):
        self.where = where
        self.passthrough = (integ.get("passthroughBehavior") or "WHEN_NO_MATCH").upper()
        self.request_templates = {_media_type(ct): compile_template(t, f"{where}.requestTemplates.{ct}")
                                  for ct, t in (integ.get("requestTemplates") or {}).items()
                                  if t is not None}
        self.responses = []           # [(compiled selection regex or None, status, templates, params)]
        default = None
        for key, resp in (integ.get("integrationResponses") or integ.get("responses") or {}).items():
            pattern = resp.get("selectionPattern")
            templates = {_media_type(ct): (ct, compile_template(t or "", f"{where}.responses.{key}.{ct}"))
                         for ct, t in (resp.get("responseTemplates") or {}).items()}
            entry = (re.compile(pattern) if pattern else None,
                     int(resp.get("statusCode", 200)), templates,
                     dict(resp.get("responseParameters") or {}))
            if pattern:
                self.responses.append(entry)
            elif default is None:
                default = entry
        if default is not None:
            self.responses.append(default)
        for _, _, _, params in self.responses:
            for name in params:
                if not name.startswith("method.response.header."):
                    warn(f"{where}: responseParameters {name}: only method.response.header.X "
                         f"can be set; ignored")

    def map_request(self, ns: dict, text: str, content_type: str | None):
        """The integration request body (str), or the gateway response type refusing it."""
        if self.request_templates:
            tpl = self.request_templates.get(_media_type(content_type) or "application/json")
            if tpl is None and not content_type:
                tpl = next(iter(self.request_templates.values()))
            if tpl is None:
                if self.passthrough in ("NEVER", "WHEN_NO_TEMPLATES"):
                    return "UNSUPPORTED_MEDIA_TYPE"
                return text
            try:
                return tpl.merge(ns)
            except Exception:   # a template error is a 500 to the client, as on AWS
                return "DEFAULT_5XX"
        if self.passthrough == "NEVER" and text:
            return "UNSUPPORTED_MEDIA_TYPE"
        return text

    def choose(self, status: str | None):
        """(method status, templates, params) of the integration response `status` selects."""
        for pattern, method_status, templates, params in self.responses:
            if pattern is None or (status is not None and pattern.fullmatch(status)):
                return method_status, templates, params
        return None

    @staticmethod
    def render_response(ns: dict, templates: dict, accept: str | None):
        """(content type, body bytes) from the response template Accept picks; None: none."""
        if not templates:
            return None
        picked = None
        for want in (a.split(";", 1)[0].strip().lower() for a in (accept or "").split(",")):
            if want in templates:
                picked = templates[want]
                break
        if picked is None:
            picked = templates.get("application/json") or next(iter(templates.values()))
        ctype, tpl = picked
        return ctype, tpl.merge(ns).encode()


class MockIntegration(_Templates):
    """A MOCK integration with mapping templates, compiled once per API stage."""

    def respond(self, event: dict, body: bytes, content_type: str | None, accept: str | None):
        """(status, [(name, value)], body bytes), or the gateway response type of the failure."""
        text = body.decode("utf-8", "replace")
        ns = variables_of(event, text)
        # 1. the integration request: its template's output carries the mock's statusCode
        request_out = self.map_request(ns, text, content_type)
        if request_out in GATEWAY_ERRORS:
            return request_out
        status = None
        try:
            parsed = json.loads(request_out) if request_out.strip() else None
            if isinstance(parsed, dict) and "statusCode" in parsed:
                status = str(int(parsed["statusCode"]))
        except (ValueError, TypeError):
            pass
        # 2. the integration response the status selects
        chosen = self.choose(status)
        if chosen is None:
            return "DEFAULT_5XX"    # "No match for output mapping and no default output mapping"
        method_status, templates, params = chosen
        # 3. headers, then the response template chosen by Accept; a mock's integration
        # response has no payload
        ns["input"] = ns["input"].with_body("")
        headers = response_headers(params, ns, {}, "")
        try:
            rendered = self.render_response(ns, templates, accept)
        except Exception:
            return "DEFAULT_5XX"
        ctype, out = rendered if rendered is not None else ("application/json", b"")
        if not any(n.lower() == b"content-type" for n, _ in headers):
            headers.insert(0, (b"Content-Type", ctype.encode()))
        return method_status, headers, out


class HttpMapping(_Templates):
    """An http (non-proxy) integration's mapping: the request body through its template
    before it goes upstream, the upstream response through the integration response its
    status code selects (status, mapped headers, response template) before it goes back."""

    def __init__(self, integ: dict, where: str, warn):
        super().__init__(integ, where, warn)
        self.maps_request = bool(self.request_templates) or self.passthrough == "NEVER"

    def request(self, event: dict, body: bytes, content_type: str | None):
        """The body to send upstream (bytes), or the gateway response type refusing it."""
        text = body.decode("utf-8", "replace")
        out = self.map_request(variables_of(event, text), text, content_type)
        if out in GATEWAY_ERRORS:
            return out
        return out.encode() if out is not text else body

    def response(self, event: dict, status: int, headers: list, body: bytes, accept: str | None):
        """(status, [(name, value)], body) for the client, or a gateway response type."""
        chosen = self.choose(str(status))
        if chosen is None:
            return "DEFAULT_5XX"    # "No match for output mapping and no default output mapping"
        return self.map_response(chosen, event, headers, body, accept)

    def map_response(self, chosen: tuple, event: dict, headers: list, body: bytes, accept: str | None):
        """The integration response `chosen` (choose()'s) applied to an answer."""
        method_status, templates, params = chosen
        text = body.decode("utf-8", "replace")
        ns = variables_of(event, "")
        ns["input"] = ns["input"].with_body(text)
        upstream = {}
        for name, value in headers:
            upstream.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
        out_headers = response_headers(params, ns, upstream, text)
        try:
            rendered = self.render_response(ns, templates, accept)
        except Exception:
            return "DEFAULT_5XX"
        if rendered is None:     # no template: the body passes through
            ctype, out = upstream.get("content-type", "application/json"), body
        else:
            ctype, out = rendered
        if not any(n.lower() == b"content-type" for n, _ in out_headers):
            out_headers.insert(0, (b"Content-Type", ctype.encode("latin-1")))
        return method_status, out_headers, out


GATEWAY_ERRORS = ("UNSUPPORTED_MEDIA_TYPE", "DEFAULT_5XX")


def response_headers(params: dict, ns: dict, upstream: dict, body: str) -> list:
    headers = []
    for name, source in params.items():
        if not name.startswith("method.response.header."):
            continue
        value = _param_value(source, ns, upstream, body)
        if value is not None:
            headers.append((name[len("method.response.header."):].encode(), value.encode()))
    return headers


def _param_value(source: str, ns: dict, upstream: dict, body: str) -> str | None:
    """A responseParameters source: 'static', context.X, stageVariables.X,
    integration.response.header.X, integration.response.body[.JSONPath]."""
    source = source.strip()
    if len(source) >= 2 and source[0] == source[-1] == "'":
        return source[1:-1]
    if source.startswith("context."):
        value = ns["context"]
        for part in source[len("context."):].split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return None if value is None else _java_str(value)
    if source.startswith("stageVariables."):
        return ns["stageVariables"].get(source[len("stageVariables."):])
    if source.startswith("integration.response.header."):
        return upstream.get(source[len("integration.response.header."):].lower())
    if source == "integration.response.body":
        return body
    if source.startswith("integration.response.body."):
        try:
            value = jsonpath(json.loads(body), "$" + source[len("integration.response.body"):])
        except (ValueError, MappingError):
            return None
        if value is None:
            return None
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return None
