"""CORS as API Gateway's HTTP APIs do it, for any API: compiled once, applied per request.

The gateway answers a CORS preflight itself, before routing and authorization (a browser's
preflight never carries credentials), and puts its own CORS headers on every other response
to a CORS request, replacing whatever CORS headers the integration sent.

    config = CorsConfig.from_api(api)              # x-amazon-apigateway-cors, or None
    config = CorsConfig.from_dict(yaml_section)    # allow_origins, allow_methods, ...
    config.preflight(method, origin, acr_method, acr_headers) -> None | (204, headers)
    config.response_headers(origin) -> [(name, value)] to add to an actual response
    config.strip_names -> lowercase header names to drop from the integration's response

Origins match exactly (case-insensitively), or as patterns where ``*`` stands for any run of
host and port characters (``https://*.example.com``, ``https://*``). ``*`` alone allows every
origin and answers ``Access-Control-Allow-Origin: *``; with ``allow_credentials`` that is
refused at load, as AWS refuses it, and so is any pattern that would let an arbitrary host
through with credentials (``https://*``): the gateway never reflects an arbitrary origin
together with ``Access-Control-Allow-Credentials: true``.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")   # RFC 9110 §5.6.2 token
# A serialized origin is scheme "://" host [":" port] (RFC 6454 §6.2), or "null".
_ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*://[^/?#@\s]+$")
# What "*" in an origin pattern may stand for: host (including IDNA and IPv6 literals) and port
# characters, never "/", "@", "?" or "#", so a pattern cannot be stretched over another host.
_WILD = r"[a-z0-9._~:\[\]-]*"
# With credentials, a wildcard may only stand for subdomains of a named domain:
# scheme://*.label.label[:port]
_CREDENTIAL_WILDCARD = re.compile(r"^[a-z][a-z0-9+.-]*://\*\.[a-z0-9-]+(\.[a-z0-9-]+)+(:\d+)?$")
_MAX_AGE_RANGE = (-1, 86400)   # s; AWS's range for maxAge (-1: browsers must not cache)

# The response headers CORS owns; the integration's are dropped when CORS is configured.
STRIP_NAMES = frozenset((
    b"access-control-allow-origin", b"access-control-allow-credentials",
    b"access-control-expose-headers", b"access-control-allow-methods",
    b"access-control-allow-headers", b"access-control-max-age"))

_VARY = (b"Vary", b"Origin")
_STAR = (b"Access-Control-Allow-Origin", b"*")
PREFLIGHT_STATUS = 204   # API Gateway HTTP APIs answer preflights 204 No Content


class CorsConfig:
    """One API's CORS configuration, compiled. Immutable; shared by every request."""

    __slots__ = ("allow_origins", "allow_methods", "allow_headers", "expose_headers",
                 "max_age", "allow_credentials", "strip_names", "_any_origin", "_exact",
                 "_patterns", "_methods_value", "_any_method", "_headers_value", "_any_header",
                 "_actual_tail", "_preflight_tail", "_star_actual")

    def __init__(self, *, allow_origins=(), allow_methods=(), allow_headers=(),
                 expose_headers=(), max_age=None, allow_credentials=False):
        self.allow_origins = tuple(_origin(o) for o in _strings(allow_origins, "allow_origins"))
        self.allow_methods = tuple(_token(m, "allow_methods").upper()
                                   for m in _strings(allow_methods, "allow_methods"))
        self.allow_headers = tuple(_token(h, "allow_headers").lower()
                                   for h in _strings(allow_headers, "allow_headers"))
        self.expose_headers = tuple(_token(h, "expose_headers").lower()
                                    for h in _strings(expose_headers, "expose_headers"))
        if not isinstance(allow_credentials, bool):
            raise ValueError(f"cors allow_credentials: must be true or false, not {allow_credentials!r}")
        self.allow_credentials = allow_credentials
        if max_age is not None and (isinstance(max_age, bool) or not isinstance(max_age, int)
                                    or not _MAX_AGE_RANGE[0] <= max_age <= _MAX_AGE_RANGE[1]):
            raise ValueError(f"cors max_age: must be an integer from -1 to 86400 (seconds), "
                             f"not {max_age!r}")
        self.max_age = max_age
        self.strip_names = STRIP_NAMES

        self._any_origin = "*" in self.allow_origins
        if self._any_origin and allow_credentials:
            # AWS's own words for the same refusal (apigatewayv2 CreateApi/UpdateApi).
            raise ValueError("cors: allow_credentials is not supported if allow_origins is '*' "
                             "(browsers refuse credentials with a wildcard origin; list the "
                             "origins instead)")
        self._exact = frozenset(o.encode() for o in self.allow_origins if "*" not in o)
        patterns = [o for o in self.allow_origins if "*" in o and o != "*"]
        if allow_credentials:
            for p in patterns:
                if not _CREDENTIAL_WILDCARD.match(p):
                    raise ValueError(
                        f"cors allow_origins: {p!r} with allow_credentials would let arbitrary "
                        "origins send credentials; with credentials a wildcard may only stand "
                        "for subdomains (https://*.example.com)")
        self._patterns = tuple(
            re.compile("^" + _WILD.join(re.escape(part) for part in p.split("*")) + "$")
            for p in patterns)

        # Everything that does not depend on the request, rendered once.
        self._any_method = "*" in self.allow_methods
        self._methods_value = ",".join(self.allow_methods).encode()
        self._any_header = "*" in self.allow_headers
        self._headers_value = ",".join(self.allow_headers).encode()
        actual = []
        if allow_credentials:
            actual.append((b"Access-Control-Allow-Credentials", b"true"))
        if self.expose_headers:
            actual.append((b"Access-Control-Expose-Headers", ",".join(self.expose_headers).encode()))
        preflight = [h for h in actual if h[0] != b"Access-Control-Expose-Headers"]
        if max_age is not None:
            preflight.append((b"Access-Control-Max-Age", str(max_age).encode()))
        self._actual_tail = tuple(actual) + (_VARY,)
        self._preflight_tail = tuple(preflight) + (_VARY,)
        self._star_actual = [_STAR, *self._actual_tail]

    # --- construction ------------------------------------------------------------------

    @classmethod
    def from_api(cls, api: dict) -> CorsConfig | None:
        """The API's CORS configuration (HTTP API: ``corsConfiguration``, or the OpenAPI
        extension ``x-amazon-apigateway-cors`` kept in ``extensions``), or None."""
        cfg = api.get("corsConfiguration")
        if cfg is None:
            cfg = (api.get("extensions") or {}).get("x-amazon-apigateway-cors")
        if cfg is None:
            return None
        if not isinstance(cfg, dict):
            raise ValueError("x-amazon-apigateway-cors: must be an object")
        names = {"allowOrigins": "allow_origins", "allowMethods": "allow_methods",
                 "allowHeaders": "allow_headers", "exposeHeaders": "expose_headers",
                 "maxAge": "max_age", "allowCredentials": "allow_credentials"}
        return cls(**_known(cfg, names, "x-amazon-apigateway-cors"))

    @classmethod
    def from_dict(cls, cfg: dict) -> CorsConfig:
        """From the YAML config's ``cors:`` section (snake_case, same meaning as AWS's)."""
        if not isinstance(cfg, dict):
            raise ValueError("cors: must be a mapping")
        names = {n: n for n in ("allow_origins", "allow_methods", "allow_headers",
                                "expose_headers", "max_age", "allow_credentials")}
        return cls(**_known(cfg, names, "cors"))

    # --- per request -------------------------------------------------------------------

    def origin_allowed(self, origin: bytes) -> bool:
        if self._any_origin or origin in self._exact:
            return True
        lowered = origin.lower()
        if lowered in self._exact:
            return True
        if self._patterns:
            text = lowered.decode("latin-1")
            return any(p.match(text) for p in self._patterns)
        return False

    def preflight(self, method: bytes, origin: bytes | None, acr_method: bytes | None,
                  acr_headers: bytes | None):
        """None when this is not a CORS preflight (not OPTIONS, or no Origin or
        Access-Control-Request-Method): route it as usual. Else the gateway's own answer,
        ``(204, headers)``, with no body: CORS headers when the origin is allowed, none
        otherwise (the browser then refuses the real request)."""
        if method != b"OPTIONS" or not origin or not acr_method:
            return None
        if not self.origin_allowed(origin):
            return PREFLIGHT_STATUS, [_VARY]
        if self._any_origin:
            headers = [_STAR]
        else:
            headers = [(b"Access-Control-Allow-Origin", origin)]
        # "*" is echoed as the requested method / headers: a literal "*" means nothing to
        # browsers for credentialed requests, the echo works for both.
        if self._any_method:
            headers.append((b"Access-Control-Allow-Methods", acr_method.strip()))
        elif self._methods_value:
            headers.append((b"Access-Control-Allow-Methods", self._methods_value))
        if self._any_header:
            if acr_headers and acr_headers.strip():
                headers.append((b"Access-Control-Allow-Headers", _clean_list(acr_headers)))
        elif self._headers_value:
            headers.append((b"Access-Control-Allow-Headers", self._headers_value))
        headers.extend(self._preflight_tail)
        return PREFLIGHT_STATUS, headers

    def response_headers(self, origin: bytes | None) -> list:
        """The CORS headers for an actual (non-preflight) response. Always ``Vary: Origin``
        (the answer depends on it); the rest only for an allowed origin."""
        if not origin or not self.origin_allowed(origin):
            return [_VARY]
        if self._any_origin:
            return list(self._star_actual)
        return [(b"Access-Control-Allow-Origin", origin), *self._actual_tail]

    def apply(self, response_headers: list, origin: bytes | None) -> list:
        """The integration's response headers with its CORS headers replaced by ours."""
        kept = [h for h in response_headers if h[0].lower() not in STRIP_NAMES]
        kept.extend(self.response_headers(origin))
        return kept

    def __repr__(self) -> str:
        return (f"CorsConfig(allow_origins={list(self.allow_origins)}, "
                f"allow_credentials={self.allow_credentials})")


def _known(cfg: dict, names: dict, where: str) -> dict:
    unknown = sorted(set(cfg) - set(names))
    if unknown:
        raise ValueError(f"{where}: unknown setting {unknown[0]!r} (expected one of "
                         f"{', '.join(names)})")
    return {names[k]: v for k, v in cfg.items() if v is not None}


def _strings(values, name: str) -> list[str]:
    if isinstance(values, str):
        values = [v.strip() for v in values.split(",")]   # "GET, POST" as a convenience
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"cors {name}: must be a list of strings")
    return [v.strip() for v in values if v.strip()]


def _token(value: str, name: str) -> str:
    if value != "*" and not _TOKEN.match(value):
        raise ValueError(f"cors {name}: {value!r} is not a valid HTTP token")
    return value


def _origin(value: str) -> str:
    if value == "*":
        return value
    # an origin has no path: "https://example.com/" is taken as "https://example.com"
    text = value.lower().rstrip("/")
    if text != "null" and not _ORIGIN.match(text):
        raise ValueError(f"cors allow_origins: {value!r} is not an origin "
                         "(scheme://host[:port], with * for a wildcard, or *)")
    return text


def _clean_list(value: bytes) -> bytes:
    """An echoed Access-Control-Request-Headers: tokens only, lowercased, comma-joined
    (never reflect bytes that are not header names)."""
    names = [n.strip().lower() for n in value.split(b",")]
    return b",".join(n for n in names if n and _TOKEN.match(n.decode("latin-1")))
