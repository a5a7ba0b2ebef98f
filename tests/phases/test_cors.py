"""fastgate.phases.cors: API Gateway HTTP API's CORS configuration (http-api-cors, the
x-amazon-apigateway-cors extension), preflights answered by the gateway, actual responses."""

import pytest

from fastgate.phases.cors import STRIP_NAMES, CorsConfig

EXAMPLE = "https://www.example.com"


def hdict(headers):
    out = {}
    for name, value in headers:
        assert name.lower() not in out, f"{name!r} twice"
        out[name.lower()] = value
    return out


def test_from_api_reads_the_openapi_extension():
    api = {"extensions": {"x-amazon-apigateway-cors": {
        "allowOrigins": [EXAMPLE], "allowMethods": ["GET", "post"],
        "allowHeaders": ["Authorization", "X-Api-Id"], "exposeHeaders": ["Date", "x-api-id"],
        "maxAge": 300, "allowCredentials": True}}}
    cfg = CorsConfig.from_api(api)
    status, headers = cfg.preflight(b"OPTIONS", EXAMPLE.encode(), b"POST", b"authorization")
    assert status == 204
    assert hdict(headers) == {
        b"access-control-allow-origin": EXAMPLE.encode(),
        b"access-control-allow-methods": b"GET,POST",
        b"access-control-allow-headers": b"authorization,x-api-id",
        b"access-control-allow-credentials": b"true",
        b"access-control-max-age": b"300",
        b"vary": b"Origin"}
    assert hdict(cfg.response_headers(EXAMPLE.encode())) == {
        b"access-control-allow-origin": EXAMPLE.encode(),
        b"access-control-allow-credentials": b"true",
        b"access-control-expose-headers": b"date,x-api-id",
        b"vary": b"Origin"}
    assert CorsConfig.from_api({"extensions": {}}) is None
    # the apigatewayv2 API object's own field works too
    assert CorsConfig.from_api({"corsConfiguration": {"allowOrigins": ["*"]}}).allow_origins == ("*",)


def test_from_dict_is_the_same_in_snake_case():
    cfg = CorsConfig.from_dict({"allow_origins": [EXAMPLE], "allow_methods": ["GET"],
                                "max_age": 10})
    assert hdict(cfg.preflight(b"OPTIONS", EXAMPLE.encode(), b"GET", None)[1]) == {
        b"access-control-allow-origin": EXAMPLE.encode(),
        b"access-control-allow-methods": b"GET",
        b"access-control-max-age": b"10", b"vary": b"Origin"}
    with pytest.raises(ValueError, match="unknown setting 'allowOrigins'"):
        CorsConfig.from_dict({"allowOrigins": ["*"]})


def test_not_a_preflight_is_routed():
    cfg = CorsConfig.from_dict({"allow_origins": ["*"]})
    assert cfg.preflight(b"GET", b"https://a.com", b"GET", None) is None
    assert cfg.preflight(b"OPTIONS", None, b"GET", None) is None          # no Origin
    assert cfg.preflight(b"OPTIONS", b"https://a.com", None, None) is None  # no ACRM
    assert cfg.preflight(b"OPTIONS", b"https://a.com", b"", None) is None


def test_disallowed_origin_gets_no_cors_headers():
    cfg = CorsConfig.from_dict({"allow_origins": [EXAMPLE], "allow_methods": ["GET"]})
    status, headers = cfg.preflight(b"OPTIONS", b"https://evil.com", b"GET", None)
    assert status == 204 and headers == [(b"Vary", b"Origin")]
    assert cfg.response_headers(b"https://evil.com") == [(b"Vary", b"Origin")]
    assert cfg.response_headers(None) == [(b"Vary", b"Origin")]


def test_any_origin_answers_star_and_never_with_credentials():
    cfg = CorsConfig.from_dict({"allow_origins": ["*"], "allow_methods": ["*"],
                                "allow_headers": ["*"]})
    _, headers = cfg.preflight(b"OPTIONS", b"https://anything.test", b"PATCH",
                               b"X-Custom, content-type, bad\r\nname")
    assert hdict(headers) == {
        b"access-control-allow-origin": b"*",
        b"access-control-allow-methods": b"PATCH",       # "*" echoes the requested method
        b"access-control-allow-headers": b"x-custom,content-type",   # only tokens are echoed
        b"vary": b"Origin"}
    assert hdict(cfg.response_headers(b"null"))[b"access-control-allow-origin"] == b"*"
    # AWS: "allow-credentials is not supported if 'allow-origin' is *"
    with pytest.raises(ValueError, match="allow_credentials is not supported if allow_origins is '\\*'"):
        CorsConfig.from_dict({"allow_origins": ["https://a.com", "*"], "allow_credentials": True})


@pytest.mark.parametrize("pattern,origin,allowed", [
    ("https://*.example.com", "https://app.example.com", True),
    ("https://*.example.com", "https://a.b.example.com", True),
    ("https://*.example.com", "https://example.com", False),
    ("https://*.example.com", "http://app.example.com", False),
    ("https://*.example.com", "https://evil.com/.example.com", False),
    ("https://*.example.com", "https://evil.com@x.example.com", False),
    ("https://*.example.com", "https://app.example.com.evil.com", False),
    ("https://*", "https://localhost:3000", True),          # AWS's "any origin that begins with https://"
    ("https://*", "http://localhost:3000", False),
    ("http://localhost:*", "http://localhost:5173", True),
    ("https://www.example.com/", "https://www.example.com", True),   # trailing "/" ignored
    ("https://WWW.Example.com", "https://www.example.com", True),
    ("null", "null", True),
])
def test_origin_patterns(pattern, origin, allowed):
    cfg = CorsConfig.from_dict({"allow_origins": [pattern]})
    assert cfg.origin_allowed(origin.encode()) is allowed
    echoed = hdict(cfg.response_headers(origin.encode())).get(b"access-control-allow-origin")
    assert echoed == (origin.encode() if allowed else None)


def test_credentials_never_reflect_arbitrary_origins():
    ok = CorsConfig.from_dict({"allow_origins": ["https://*.example.com", EXAMPLE],
                               "allow_credentials": True})
    assert hdict(ok.response_headers(b"https://a.example.com")) == {
        b"access-control-allow-origin": b"https://a.example.com",
        b"access-control-allow-credentials": b"true", b"vary": b"Origin"}
    for broad in ("https://*", "https://*.com", "https://*example.com", "https://a*.example.com"):
        with pytest.raises(ValueError, match="arbitrary origins"):
            CorsConfig.from_dict({"allow_origins": [broad], "allow_credentials": True})


@pytest.mark.parametrize("cfg,match", [
    ({"allow_origins": ["example.com"]}, "not an origin"),
    ({"allow_origins": ["https://a.com/path"]}, "not an origin"),
    ({"allow_origins": "https://a.com"}, None),         # a comma-separated string is accepted
    ({"allow_methods": ["GE T"]}, "not a valid HTTP token"),
    ({"allow_headers": ["x\r\ny"]}, "not a valid HTTP token"),
    ({"max_age": 86401}, "from -1 to 86400"),
    ({"max_age": "300"}, "from -1 to 86400"),
    ({"allow_credentials": "yes"}, "true or false"),
    ({"allow_origins": [1]}, "list of strings"),
])
def test_config_errors(cfg, match):
    if match is None:
        CorsConfig.from_dict(cfg)
    else:
        with pytest.raises(ValueError, match=match):
            CorsConfig.from_dict(cfg)


def test_apply_overrides_backend_cors_headers():
    cfg = CorsConfig.from_dict({"allow_origins": [EXAMPLE], "expose_headers": ["x-id"]})
    upstream = [(b"Content-Type", b"text/plain"), (b"Access-Control-Allow-Origin", b"*"),
                (b"access-control-allow-credentials", b"true"), (b"Vary", b"Accept-Encoding"),
                (b"Access-Control-Max-Age", b"9999")]
    out = cfg.apply(upstream, EXAMPLE.encode())
    assert out == [(b"Content-Type", b"text/plain"), (b"Vary", b"Accept-Encoding"),
                   (b"Access-Control-Allow-Origin", EXAMPLE.encode()),
                   (b"Access-Control-Expose-Headers", b"x-id"), (b"Vary", b"Origin")]
    # a disallowed origin loses the backend's CORS headers too
    assert [h for h in cfg.apply(upstream, b"https://evil.com") if h[0].lower() in STRIP_NAMES] == []


def test_max_age_minus_one_and_zero_are_sent():
    for age in (-1, 0):
        cfg = CorsConfig.from_dict({"allow_origins": ["*"], "max_age": age})
        assert hdict(cfg.preflight(b"OPTIONS", b"https://a.com", b"GET", None)[1])[
            b"access-control-max-age"] == str(age).encode()
