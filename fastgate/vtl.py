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
import json
import re
from urllib.parse import quote_plus, unquote_plus

import airspeed

__all__ = ["MappingError", "MockIntegration", "Input", "Util", "jsonpath", "compile_template"]


class MappingError(ValueError):
    """A template that does not compile (at load) or fails to render (per request)."""


def compile_template(text: str, where: str) -> airspeed.Template:
    """Parse once, so a syntax error is a load-time warning naming the template."""
    try:
        t = airspeed.Template(text)
        t.ensure_compiled()
    except airspeed.TemplateSyntaxError as e:
        raise MappingError(f"{where}: mapping template does not parse: {e}") from None
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


def _java_str(value) -> str:
    """How API Gateway's Java renders a value inside a template: JSON-ish, null for None."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Input:
    """$input: the payload and the method request's parameters."""

    def __init__(self, body: str, path: dict, querystring: dict, header: dict):
        self.body = body
        self._params = {"path": path, "querystring": querystring, "header": header}
        self._parsed = None

    def _json(self):
        if self._parsed is None:
            try:
                self._parsed = (json.loads(self.body) if self.body.strip() else {},)
            except ValueError:
                raise MappingError("$input: the body is not JSON") from None
        return self._parsed[0]

    def json(self, path: str) -> str:
        """The JSON text at a JSONPath ($input.json('$.a'))."""
        return json.dumps(jsonpath(self._json(), path), separators=(",", ":"), ensure_ascii=False)

    def path(self, path: str):
        """The object at a JSONPath ($input.path('$.a').size())."""
        return jsonpath(self._json(), path)

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
            return json.loads(_java_str(s))
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
    """The template namespace from a payload 1.0 event (fastgate.functions.events), which
    already holds the request context exactly as API Gateway fills it."""
    query = {k: v[-1] for k, v in (event.get("multiValueQueryStringParameters") or {}).items() if v}
    headers = dict(event.get("headers") or {})
    return {"input": Input(body, dict(event.get("pathParameters") or {}), query, headers),
            "util": UTIL, "context": dict(event.get("requestContext") or {}),
            "stageVariables": dict(event.get("stageVariables") or {})}


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


class MockIntegration:
    """A MOCK integration with mapping templates, compiled once per API stage."""

    def __init__(self, integ: dict, where: str, warn):
        self.where = where
        self.passthrough = (integ.get("passthroughBehavior") or "WHEN_NO_MATCH").upper()
        self.request_templates = {_media_type(ct): compile_template(t, f"{where}.requestTemplates.{ct}")
                                  for ct, t in (integ.get("requestTemplates") or {}).items()
                                  if t is not None}
        self.responses = []           # [(compiled selection regex or None, response dict)]
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
            for name, source in params.items():
                if not name.startswith("method.response.header."):
                    warn(f"{where}: responseParameters {name}: only method.response.header.X "
                         f"can be set; ignored")

    def respond(self, event: dict, body: bytes, content_type: str | None, accept: str | None):
        """(status, [(name, value)], body bytes), or the gateway response type of the failure."""
        text = body.decode("utf-8", "replace")
        ns = variables_of(event, text)
        # 1. the integration request: its template's output carries the mock's statusCode
        if self.request_templates:
            tpl = self.request_templates.get(_media_type(content_type) or "application/json")
            if tpl is None and not content_type:
                tpl = next(iter(self.request_templates.values()))
            if tpl is None:
                if self.passthrough in ("NEVER", "WHEN_NO_TEMPLATES"):
                    return "UNSUPPORTED_MEDIA_TYPE"
                request_out = text
            else:
                try:
                    request_out = tpl.merge(ns)
                except Exception:   # a template error is a 500 to the client, as on AWS
                    return "DEFAULT_5XX"
        elif self.passthrough == "NEVER" and text:
            return "UNSUPPORTED_MEDIA_TYPE"
        else:
            request_out = text
        status = None
        try:
            parsed = json.loads(request_out) if request_out.strip() else None
            if isinstance(parsed, dict) and "statusCode" in parsed:
                status = str(int(parsed["statusCode"]))
        except (ValueError, TypeError):
            pass
        # 2. the integration response the status selects
        chosen = None
        for pattern, method_status, templates, params in self.responses:
            if pattern is None or (status is not None and pattern.fullmatch(status)):
                chosen = (method_status, templates, params)
                break
        if chosen is None:
            return "DEFAULT_5XX"    # "No match for output mapping and no default output mapping"
        method_status, templates, params = chosen
        headers = []
        for name, source in params.items():
            if not name.startswith("method.response.header."):
                continue
            value = _param_value(source, ns)
            if value is not None:
                headers.append((name[len("method.response.header."):].encode(), value.encode()))
        # 3. the response template, chosen by Accept
        ctype, out = "application/json", b""
        if templates:
            picked = None
            for want in (a.split(";", 1)[0].strip().lower() for a in (accept or "").split(",")):
                if want in templates:
                    picked = templates[want]
                    break
            if picked is None:
                picked = templates.get("application/json") or next(iter(templates.values()))
            ctype, tpl = picked
            ns["input"] = Input("", ns["input"]._params["path"], ns["input"]._params["querystring"],
                                ns["input"]._params["header"])
            try:
                out = tpl.merge(ns).encode()
            except Exception:
                return "DEFAULT_5XX"
        if not any(n.lower() == b"content-type" for n, _ in headers):
            headers.insert(0, (b"Content-Type", ctype.encode()))
        return method_status, headers, out


def _param_value(source: str, ns: dict) -> str | None:
    """A responseParameters source: 'static', context.X, stageVariables.X."""
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
    return None
