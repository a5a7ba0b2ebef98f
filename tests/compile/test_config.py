"""fastgate.compile.config: schema decoding, error positions, semantic checks, proxy_config."""

import json
import os
import socket
import textwrap

import msgspec
import pytest
import yaml

from fastgate.compile.config import (
    Config, ConfigError, EchoIntegration, HttpIntegration, MockIntegration, RouteConfig,
    TargetURL, UpstreamConfig, config_error, default_config_path, format_path, load_config,
    load_config_text, locate, parse_listen_address, parse_route_path, parse_size, parse_target_url,
    proxy_config,
)

LISTEN = "listeners:\n  - address: 127.0.0.1:8080\n"   # lines 1-2 of most documents below


def doc(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def error(text: str, filename: str = "gw.yaml") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, filename)
    return info.value


def assert_error(text, line, column, path, fragment, filename="gw.yaml"):
    e = error(text, filename)
    assert (e.file, e.line, e.column, e.path) == (filename, line, column, path), str(e)
    assert fragment in e.message, str(e)
    prefix = f"{filename}:{line}:{column}: " + (f"{format_path(path)}: " if path else "")
    assert str(e).startswith(prefix), str(e)
    return e


# --- good configs -------------------------------------------------------------

FULL = doc("""
    workers: 4
    listeners:
      - address: 0.0.0.0:8080
        backlog: 2048
      - address: "[::1]:8443"
      - interface: eth0
        port: 8081
        family: both
    admin:
      listen: off
    limits:
      max_url_bytes: 4096
      max_body_bytes: 1_048_576
      keepalive_timeout_ms: 0
    trusted_proxies: [10.0.0.0/8, "fd00::/8", 192.168.1.7]
    via: null
    access_log:
      path: off
      format: json
    upstreams:
      api:
        targets:
          - http://10.0.0.1:9000
          - url: https://api.internal
            weight: 3
        balance: hash
        hash_on: header:X-User
        retries: 2
        total_timeout_ms: 120000
        health_check:
          path: /healthz
          expected_status: [200, 204]
        passive: {max_failures: 0}
    routes:
      - path: /pets/{id}
        method: GET
        host: "*.example.com"
        integration: {type: http, upstream: api}
        path_rewrite: /v1/pets/{id}
        request_headers:
          rename: {X-Old: X-New}
          remove: [Cookie]
          set: {X-User: $request.header.X-Auth}
          append: {X-Trace: "1"}
        timeouts: {first_byte_ms: 500}
        retries: 0
      - path: /api/{proxy+}
        integration: {type: http, url: "http://[::1]:9001"}
        strip_prefix: /api
        max_body_bytes: unlimited
      - path: /hello
        integration:
          type: mock
          status: 201
          headers: {Content-Type: text/plain}
          body: hi $context.requestId
      - path: /echo
        method: POST
        integration: {type: echo}
        response_headers: {set: {X-Echo: "yes"}}
""")


def test_full_config_decodes_into_frozen_structs():
    cfg = load_config_text(FULL, "full.yaml").config
    assert cfg.worker_count() == 4
    assert [l.listen_address() for l in cfg.listeners] == [
        ("0.0.0.0", 8080, socket.AF_INET, None),
        ("::1", 8443, socket.AF_INET6, None),
        (None, 8081, socket.AF_UNSPEC, "eth0"),
    ]
    assert cfg.listeners[0].backlog == 2048
    # YAML 1.2 scalars: `off` is a string, not false
    assert cfg.admin.listen == "off" and cfg.admin.listen_address() is None
    assert cfg.access_log.destination is None and cfg.access_log.format == "json"
    assert cfg.limits.max_body() == 1048576 and cfg.limits.max_url_bytes == 4096
    assert cfg.limits.header_timeout_ms == 10000           # default kept
    assert [str(n) for n in cfg.trusted_networks()] == ["10.0.0.0/8", "fd00::/8", "192.168.1.7/32"]
    assert cfg.via is None

    api = cfg.upstreams["api"]
    assert [t.parsed() for t in api.targets] == [
        TargetURL("http", "10.0.0.1", 9000), TargetURL("https", "api.internal", 443)]
    assert api.targets[1].weight == 3 and api.hash_key() == ("header", "x-user")
    assert api.health_check.expected_status == (200, 204)
    assert api.health_check.interval_ms == 2000
    assert api.passive.max_failures == 0 and api.passive.eject_ms == 10000

    pets, proxy, hello, echo = cfg.routes
    assert pets.route_key == "GET /pets/{id}" and pets.host == "*.example.com"
    assert pets.request_headers.ops() == [
        ("rename", "X-Old", "X-New"), ("remove", "Cookie"),
        ("set", "X-User", "$request.header.X-Auth"), ("append", "X-Trace", "1")]
    assert pets.effective_timeouts(api) == (5000, 500, 120000)
    assert pets.effective_retries(api) == 0 and pets.effective_max_body(cfg.limits) == 1048576
    assert proxy.method == "ANY" and proxy.effective_max_body(cfg.limits) == -1
    name, implicit = cfg.route_upstream(proxy)
    assert name == "http://[::1]:9001"
    assert implicit.targets[0].parsed() == TargetURL("http", "::1", 9001)
    assert proxy.effective_retries(implicit) == 1
    assert cfg.route_upstream(pets) == ("api", api)
    assert cfg.route_upstream(hello) is None
    assert isinstance(hello.integration, MockIntegration)
    assert hello.integration.status == 201 and hello.integration.body == "hi $context.requestId"
    assert isinstance(echo.integration, EchoIntegration)

    with pytest.raises(AttributeError):
        cfg.workers = 1


def test_minimal_config_takes_documented_defaults():
    cfg = load_config_text(LISTEN, "min.yaml").config
    assert cfg.workers == "auto" and cfg.worker_count() == (os.cpu_count() or 1)
    assert cfg.admin.listen_address() == ("127.0.0.1", 9901, socket.AF_INET, None)
    assert cfg.access_log.destination == "-" and cfg.via == "fastgate"
    assert cfg.limits.max_body() == 10485760 and cfg.routes == () and cfg.upstreams == {}


def test_default_body_limits_stop_a_byte_a_second_within_a_minute():
    # a byte a second restarts body_timeout forever (slow POST); the rate check answers 408 at
    # the t where grace + t/min_body_rate bytes' worth of time is used up: t = grace + t/rate
    lim = load_config_text(LISTEN, "min.yaml").config.limits
    assert lim.min_body_rate > 1
    assert lim.body_rate_grace_ms / 1000 / (1 - 1 / lim.min_body_rate) < 60
    assert lim.body_deadline_ms == 0      # a large upload on a slow link is no attack


def test_json_config_decodes_like_yaml():
    data = yaml.safe_load(FULL.replace("listen: off", 'listen: "off"').replace("path: off", 'path: "off"'))
    from_json = load_config_text(json.dumps(data, indent="\t"), "full.json").config
    from_yaml = load_config_text(FULL, "full.yaml").config
    assert from_json == from_yaml


def test_load_config_reads_a_file_and_keeps_positions(tmp_path):
    p = tmp_path / "gw.yaml"
    p.write_text(LISTEN + "routes:\n  - path: /x\n    integration: {type: echo}\n")
    loaded = load_config(str(p))
    assert loaded.source.filename == str(p)
    assert locate(loaded.source, ("routes", 0, "integration")) == (5, 5)
    assert locate(loaded.source, ("listeners", 0, "address")) == (2, 5)


def test_missing_file_is_a_config_error(tmp_path):
    e = error_from_file(str(tmp_path / "nope.yaml"))
    assert e.file.endswith("nope.yaml") and "No such file" in e.message


def error_from_file(path):
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


# --- locating errors from later compile steps ----------------------------------

def test_config_error_for_later_compile_steps_points_at_the_deepest_known_key():
    text = LISTEN + doc("""
        routes:
          - path: /x
            integration: {type: echo}
            request_headers:
              set:
                X-A: $bad.variable
    """)
    loaded = load_config_text(text, "gw.yaml")
    e = config_error(loaded.source, ("routes", 0, "request_headers", "set", "X-A"), "bad variable")
    assert str(e) == 'gw.yaml:8:9: routes[0].request_headers.set.X-A: bad variable'
    # deeper than the document went: the nearest marked ancestor
    assert locate(loaded.source, ("routes", 0, "request_headers", "set", "X-A", 3)) == (8, 9)
    assert loaded.error(("routes", 0), "conflict").line == 4
    assert locate(loaded.source, ()) == (1, 1)


# --- type and schema errors: file, line, column, path ----------------------------

def test_unknown_key_is_rejected_with_a_suggestion():
    e = assert_error(LISTEN + "limits:\n  max_body_byte: 5\n", 4, 3,
                     ("limits", "max_body_byte"), "unknown field 'max_body_byte'")
    assert "did you mean 'max_body_bytes'" in e.message


def test_unknown_key_in_a_list_item_and_in_json():
    assert_error("listeners:\n  - address: 127.0.0.1:8080\n    ssl: true\n", 3, 5,
                 ("listeners", 0, "ssl"), "unknown field 'ssl'")
    text = '{\n\t"listeners": [\n\t\t{"address": "127.0.0.1:8080", "x": 1}\n\t]\n}'
    assert_error(text, 3, 33, ("listeners", 0, "x"), "unknown field 'x'", filename="gw.json")


def test_unknown_key_at_top_level():
    assert_error(LISTEN + "listener: []\n", 3, 1, ("listener",), "did you mean 'listeners'")


def test_wrong_type_and_bounds():
    assert_error(LISTEN + "workers: 0\n", 3, 1, ("workers",), ">= 1, got 0")
    e = assert_error(LISTEN + "workers: many\n", 3, 1, ("workers",), "'many'")
    assert "'auto'" in e.message and "integer" in e.message
    assert_error(LISTEN + "limits:\n  max_headers: '10'\n", 4, 3,
                 ("limits", "max_headers"), "expected `int`, got `str`")
    assert_error(LISTEN + "limits: {max_body_bytes: lots}\n", 3, 10,
                 ("limits", "max_body_bytes"), "'unlimited'")


def test_error_inside_a_named_upstream_names_the_upstream():
    text = LISTEN + doc("""
        upstreams:
          good:
            targets: [http://a:1]
          bad:
            targets: [http://a:1]
            passive: {max_failures: -1}
    """)
    assert_error(text, 8, 15, ("upstreams", "bad", "passive", "max_failures"), ">= 0, got -1")


def test_error_inside_a_header_map_names_the_header():
    text = LISTEN + doc("""
        routes:
          - path: /x
            integration: {type: echo}
            request_headers:
              set:
                X-Ok: fine
                X-Num: 5
    """)
    assert_error(text, 9, 9, ("routes", 0, "request_headers", "set", "X-Num"),
                 "expected `str`, got `int`")


def test_non_string_map_key():
    text = LISTEN + "routes:\n  - path: /x\n    integration: {type: mock, headers: {200: x}}\n"
    assert_error(text, 5, 41, ("routes", 0, "integration", "headers", 200), "as a key")


def test_a_mock_answers_with_a_final_status():
    assert_error(LISTEN + "routes:\n  - path: /x\n    integration: {type: mock, status: 103}\n",
                 5, 31, ("routes", 0, "integration", "status"), "informational")


def test_a_mock_may_not_set_framing_headers():
    # the gateway frames every response: a second Content-Length would make clients refuse it
    for name in ("Content-Length", "transfer-encoding", "Connection", "Date"):
        text = LISTEN + f"routes:\n  - path: /x\n    integration: {{type: mock, headers: {{{name}: '1'}}}}\n"
        assert_error(text, 5, 41, ("routes", 0, "integration", "headers", name),
                     "the gateway's to write")


def test_missing_required_fields():
    assert_error("via: x\n", 1, 1, (), "missing required field 'listeners'")
    assert_error(LISTEN + "routes:\n  - integration: {type: echo}\n", 4, 5,
                 ("routes", 0), "missing required field 'path'")
    assert_error(LISTEN + "upstreams:\n  a: {keepalive: 1}\n", 4, 3,
                 ("upstreams", "a"), "missing required field 'targets'")


def test_integration_type_errors():
    text = LISTEN + "routes:\n  - path: /x\n    integration:\n      type: lambda\n"
    e = assert_error(text, 6, 7, ("routes", 0, "integration", "type"),
                     "unknown integration type 'lambda'")
    assert "http, mock, echo" in e.message
    assert_error(LISTEN + "routes:\n  - path: /x\n    integration: {status: 200}\n", 5, 5,
                 ("routes", 0, "integration"), "missing required field 'type'")
    # fields of one integration type are unknown to another
    e = assert_error(LISTEN + "routes:\n  - path: /x\n    integration:\n      type: echo\n"
                     "      upstream: api\n", 7, 7, ("routes", 0, "integration", "upstream"),
                     "unknown field 'upstream'")
    assert_error(LISTEN + "routes:\n  - path: /x\n    integration: {type: http}\n", 5, 5,
                 ("routes", 0, "integration"), "exactly one of upstream or url")
    assert_error(LISTEN + "routes:\n  - path: /x\n    integration: {type: mock, status: 700}\n",
                 5, 31, ("routes", 0, "integration", "status"), "<= 599")


def test_at_least_one_listener():
    assert_error("listeners: []\n", 1, 1, ("listeners",), "length >= 1, got an empty list")


def test_yaml_syntax_error_position():
    e = error("listeners:\n  - address: 127.0.0.1:8080\n  bad: [1\n")
    assert e.file == "gw.yaml" and e.line == 3 and e.path == ()
    e = error("listeners:\n\t- address: x\n")
    assert (e.line, e.column) == (2, 1)


def test_json_syntax_error_positions():
    e = error('{\n  "listeners": [\n    {"address": "127.0.0.1:8080",}\n  ]\n}', "gw.json")
    assert (e.line, e.column) == (3, 34) and "string key" in e.message
    e = error('{"listeners": [] } x', "gw.json")
    assert (e.line, e.column) == (1, 20) and "extra data" in e.message
    e = error('{\n  "via": "line\nbreak"\n}', "gw.json")
    assert (e.line, e.column) == (2, 15) and "control character" in e.message
    e = error('{\n  "via": "unterminated', "gw.json")
    assert (e.line, e.column) == (2, 10) and "Unterminated string" in e.message


def test_duplicate_keys_are_rejected_in_yaml_and_json():
    assert_error(LISTEN + "via: a\nvia: b\n", 4, 1, ("via",), "duplicate key (first at line 3)")
    text = '{\n"listeners": [{"address": "127.0.0.1:1"}],\n"via": "a",\n"via": "b"\n}'
    assert_error(text, 4, 1, ("via",), "duplicate key (first at line 3)", filename="gw.json")


def test_yaml_scalars_follow_yaml_1_2():
    cfg = load_config_text(LISTEN + "admin: {listen: off}\nvia: no\nlimits: {max_headers: 010}\n",
                           "gw.yaml").config
    assert (cfg.admin.listen, cfg.via, cfg.limits.max_headers) == ("off", "no", 10)
    assert_error(LISTEN + "workers: 1.5\n", 3, 1, ("workers",), "got `float` (1.5)")
    assert_error(LISTEN + "workers: -.inf\n", 3, 1, ("workers",), "(-inf)")
    assert_error(LISTEN + "via: !!binary aGk=\n", 3, 6, ("via",), "unsupported YAML tag")


def test_empty_document():
    e = error("# nothing here\n")
    assert e.message == "the document is empty"


def test_yaml_anchors_and_merge_keys_work_and_recursion_is_caught():
    text = LISTEN + doc("""
        upstreams:
          a: &base
            targets: [http://a:1]
            retries: 3
          b:
            <<: *base
            retries: 0
    """)
    cfg = load_config_text(text, "gw.yaml").config
    assert cfg.upstreams["b"].retries == 0 and cfg.upstreams["b"].targets[0].url == "http://a:1"
    e = error("a: &x\n  b: *x\n")
    assert "recursive alias" in e.message


# --- semantic checks -----------------------------------------------------------------

def test_unknown_upstream_lists_the_defined_ones():
    text = LISTEN + doc("""
        upstreams:
          auth: {targets: [http://a:1]}
          api: {targets: [http://b:1]}
        routes:
          - path: /ok
            integration: {type: http, upstream: api}
          - path: /bill
            method: GET
            integration:
              type: http
              upstream: billing
    """)
    e = assert_error(text, 13, 7, ("routes", 1, "integration", "upstream"), "")
    assert e.message == "unknown upstream 'billing' (defined: api, auth)"


@pytest.mark.parametrize("url, fragment", [
    ("ftp://a:1", "http:// or https://"),
    ("http://a:1/v1", "no path"),
    ("http://a:1?x=1", "no path"),
    ("http://user:pw@a:1", "credentials"),
    ("http://a:99999", "Port out of range"),
    ("http://a:0", "invalid port"),
    ("http://:80", "no host"),
    ("http://a_b:80", "invalid host"),
    ("http://[1.2.3.4]:80", "cannot be in brackets"),
    ("http://[::1", "Invalid IPv6 URL"),
])
def test_bad_target_urls(url, fragment):
    text = LISTEN + f"upstreams:\n  a:\n    targets:\n      - http://ok:1\n      - url: '{url}'\n"
    assert_error(text, 7, 9, ("upstreams", "a", "targets", 1, "url"), fragment)


def test_bad_route_url_and_duplicate_targets():
    assert_error(LISTEN + "routes:\n  - path: /x\n    integration: {type: http, url: 'http://a/x'}\n",
                 5, 31, ("routes", 0, "integration", "url"), "no path")
    assert_error(LISTEN + "upstreams:\n  a: {targets: [http://a:80, 'http://a']}\n", 4, 30,
                 ("upstreams", "a", "targets", 1), "same target as targets[0]")


def test_bad_cidrs():
    assert_error(LISTEN + "trusted_proxies:\n  - 10.0.0.0/8\n  - 10.0.0.0/33\n", 5, 5,
                 ("trusted_proxies", 1), "not an IP address or CIDR")
    e = assert_error(LISTEN + "trusted_proxies: [10.1.2.3/8]\n", 3, 19,
                     ("trusted_proxies", 0), "host bits set")
    assert "'10.0.0.0/8'" in e.message


@pytest.mark.parametrize("address, fragment", [
    ("127.0.0.1:0", "port must be 1-65535"),
    ("127.0.0.1:http", "port must be 1-65535"),
    ("127.0.0.1", "expected host:port"),
    ("::1:8080", "in brackets"),
    ("[127.0.0.1]:80", "not an IPv6"),
    ("bad_host:80", "invalid host"),
])
def test_bad_listener_addresses(address, fragment):
    assert_error(f"listeners:\n  - address: '{address}'\n", 2, 5,
                 ("listeners", 0, "address"), fragment)


def test_listener_shapes():
    assert_error("listeners:\n  - backlog: 5\n", 2, 5, ("listeners", 0), "either address")
    assert_error("listeners:\n  - interface: eth0\n", 2, 5, ("listeners", 0), "needs a port")
    assert_error("listeners:\n  - address: 127.0.0.1:80\n    port: 81\n", 3, 5,
                 ("listeners", 0, "port"), "goes with interface")
    assert_error("listeners:\n  - interface: eth0/1\n    port: 80\n", 2, 5,
                 ("listeners", 0, "interface"), "invalid interface name")
    assert_error("listeners:\n  - address: 127.0.0.1:80\n  - address: 127.0.0.1:80\n", 3, 5,
                 ("listeners", 1), "listeners[0] already")
    assert_error(LISTEN + "admin: {listen: '127.0.0.1:8080'}\n", 3, 9,
                 ("admin", "listen"), "same address as listeners[0]")
    assert_error(LISTEN + "admin: {listen: 'nowhere'}\n", 3, 9, ("admin", "listen"), "host:port")


def test_duplicate_routes_ignore_parameter_names_and_host_case():
    text = LISTEN + doc("""
        routes:
          - path: /pets/{id}
            host: API.example.com
            integration: {type: echo}
          - path: /pets/{id}
            method: GET
            integration: {type: echo}
          - path: /pets/{petId}
            host: api.example.com
            integration: {type: echo}
    """)
    e = assert_error(text, 10, 5, ("routes", 2), "duplicate route ANY /pets/{petId}")
    assert "routes[0], line 4" in e.message


@pytest.mark.parametrize("path, fragment", [
    ("/a/{proxy+}/b", "must be the last segment"),
    ("/a/{id", "unbalanced braces"),
    ("/a/id}", "unbalanced braces"),
    ("/a/{{id}}", "unbalanced braces"),
    ("/a/x{id}", "whole segment"),
    ("/a/{}", "whole segment"),
    ("/{id}/{id}", "appears twice"),
    ("a/b", "start with '/'"),
    ("/a//b", "empty segment"),
    ("/a b", "contains ' '"),
    ("/a?x", "contains '?'"),
])
def test_bad_route_paths(path, fragment):
    text = LISTEN + f"routes:\n  - method: GET\n    path: '{path}'\n    integration: {{type: echo}}\n"
    assert_error(text, 5, 5, ("routes", 0, "path"), fragment)


def test_route_path_parsing():
    assert parse_route_path("/") == []
    assert parse_route_path("/pets/{id}/{proxy+}") == [
        ("static", "pets"), ("param", "id"), ("greedy", "proxy")]


def test_route_field_checks():
    base = LISTEN + "routes:\n  - path: /api/{id}\n    integration: {type: echo}\n"
    assert_error(base + "    method: get\n", 6, 5, ("routes", 0, "method"), "write 'GET'")
    assert_error(base + "    host: a.com:80\n", 6, 5, ("routes", 0, "host"), "without its port")
    assert_error(base + "    host: a.*.com\n", 6, 5, ("routes", 0, "host"), "*.domain")
    assert_error(base + "    path_rewrite: /v1/{idx}\n", 6, 5, ("routes", 0, "path_rewrite"),
                 "does not capture (parameters: id)")
    assert_error(base + "    path_rewrite: /v1/{id\n", 6, 5, ("routes", 0, "path_rewrite"),
                 "unbalanced")
    assert_error(base + "    strip_prefix: /v2\n", 6, 5, ("routes", 0, "strip_prefix"),
                 "not a prefix")
    assert_error(base + "    strip_prefix: /api/\n", 6, 5, ("routes", 0, "strip_prefix"),
                 "no trailing")
    assert_error(base + "    strip_prefix: /api\n    path_rewrite: /x\n", 6, 5,
                 ("routes", 0, "strip_prefix"), "not both")
    assert_error(base + "    retries: 2\n", 6, 5, ("routes", 0, "retries"), "http integrations only")
    assert_error(base + "    request_headers:\n      rename: {X-A: 'bad name'}\n", 7, 16,
                 ("routes", 0, "request_headers", "rename", "X-A"), "invalid header name")
    assert_error(base + "    response_headers:\n      set: {'X:A': v}\n", 7, 13,
                 ("routes", 0, "response_headers", "set", "X:A"), "invalid header name")


def test_a_function_or_mock_route_refuses_a_path_change():
    # only http and echo integrations are sent a path: on a function (whose event carries the
    # request path, as API Gateway's does) or a mock the option would be silently ignored
    fn = LISTEN + ("functions:\n  f: {handler: app:handler}\n"
                   "routes:\n  - path: /api/{proxy+}\n    integration: {type: function, function: f}\n")
    assert_error(fn + "    strip_prefix: /api\n", 8, 5, ("routes", 0, "strip_prefix"),
                 "strip a base path in the function")
    assert_error(fn + "    path_rewrite: /{proxy}\n", 8, 5, ("routes", 0, "path_rewrite"),
                 "changes the path sent to an http integration")
    mock = LISTEN + "routes:\n  - path: /api/{proxy+}\n    integration: {type: mock}\n"
    assert_error(mock + "    strip_prefix: /api\n", 6, 5, ("routes", 0, "strip_prefix"),
                 "a mock answers without one")
    for integration in ("{type: echo}", "{type: http, url: 'http://127.0.0.1:9000'}"):
        load_config_text(LISTEN + "routes:\n  - path: /api/{proxy+}\n    strip_prefix: /api\n"
                         f"    integration: {integration}\n")


def test_upstream_checks():
    up = LISTEN + "upstreams:\n  a:\n    targets: [http://a:1]\n"
    assert_error(up + "    hash_on: client_ip\n", 6, 5, ("upstreams", "a", "hash_on"),
                 "needs balance: hash")
    assert_error(up + "    balance: hash\n    hash_on: query:x\n", 7, 5,
                 ("upstreams", "a", "hash_on"), "header:NAME")
    assert_error(up + "    balance: random\n", 6, 5, ("upstreams", "a", "balance"),
                 "'round_robin', 'least_conn', 'hash'")
    assert_error(up + "    health_check: {interval_ms: 100, timeout_ms: 500}\n", 6, 38,
                 ("upstreams", "a", "health_check", "timeout_ms"), "exceeds interval_ms")
    assert_error(up + "    health_check: {path: healthz}\n", 6, 20,
                 ("upstreams", "a", "health_check", "path"), "invalid check path")
    assert_error(up + "    health_check: {expected_status: []}\n", 6, 20,
                 ("upstreams", "a", "health_check", "expected_status"), "length >= 1")
    assert_error(LISTEN + "upstreams:\n  'a b': {targets: [http://a:1]}\n", 4, 3,
                 ("upstreams", "a b"), "may hold only")


def test_via_and_access_log_checks():
    assert_error(LISTEN + "via: 'a b'\n", 3, 1, ("via",), "token")
    assert_error(LISTEN + "access_log: {path: ''}\n", 3, 14, ("access_log", "path"), "empty path")


def test_error_string_quotes_awkward_keys():
    assert format_path(("upstreams", "a.b", "targets", 0)) == 'upstreams["a.b"].targets[0]'
    assert format_path(("routes", 2, "request_headers", "set", "X-A")) == \
        "routes[2].request_headers.set.X-A"


# --- parsers used by the runtime -------------------------------------------------------

def test_parse_helpers():
    assert parse_listen_address("localhost:80") == ("localhost", 80, socket.AF_UNSPEC, None)
    assert parse_target_url("https://[2001:db8::1]:8443/") == TargetURL("https", "2001:db8::1", 8443)
    assert TargetURL("https", "2001:db8::1", 8443).label == "[2001:db8::1]:8443"
    assert parse_target_url("http://Example.com").port == 80


# --- proxy_config ---------------------------------------------------------------------

def test_proxy_config_builds_one_round_robin_group_and_catch_all_routes():
    loaded = proxy_config(["127.0.0.1:8080", "[::1]:8080"],
                          ["http://127.0.0.1:9000", "http://127.0.0.1:9001"], "3", None, "off")
    cfg = loaded.config
    assert cfg.worker_count() == 3 and cfg.admin.listen_address() is None
    assert cfg.access_log.destination is None
    assert [l.listen_address().port for l in cfg.listeners] == [8080, 8080]
    (name, group), = cfg.upstreams.items()
    assert group.balance == "round_robin"
    assert [t.url for t in group.targets] == ["http://127.0.0.1:9000", "http://127.0.0.1:9001"]
    assert sorted(r.route_key for r in cfg.routes) == ["ANY /", "ANY /{proxy+}"]
    assert all(cfg.route_upstream(r) == (name, group) for r in cfg.routes)


def test_proxy_config_defaults_and_access_log():
    cfg = proxy_config(["127.0.0.1:8080"], ["http://h:1"], access_log="-").config
    assert cfg.workers == "auto" and cfg.access_log.destination == "-"
    assert cfg.admin.listen == "127.0.0.1:9901"
    assert cfg.limits.max_body() == -1     # a plain reverse proxy streams any body


def test_proxy_config_max_body_size():
    cfg = proxy_config(["127.0.0.1:8080"], ["http://h:1"], max_body_size="512k").config
    assert cfg.limits.max_body() == 512 * 1024
    assert all(r.effective_max_body(cfg.limits) == 512 * 1024 for r in cfg.routes)


@pytest.mark.parametrize("text, size", [("0", 0), ("1048576", 1048576), ("512k", 512 << 10),
                                        ("10m", 10 << 20), ("10M", 10 << 20), ("2g", 2 << 30),
                                        (" 3K ", 3 << 10), ("unlimited", "unlimited"),
                                        ("Unlimited", "unlimited")])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "k", "-1", "1.5m", "10mb", "10 m", "1t", "ten", "0x10"])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


@pytest.mark.parametrize("args, message", [
    (([], ["http://h:1"]), "--listen: at least one --listen"),
    ((["127.0.0.1:1"], []), "--upstream: at least one --upstream"),
    ((["127.0.0.1:1"], ["ftp://h"]), "--upstream: URL 'ftp://h'"),
    ((["127.0.0.1:0"], ["http://h:1"]), "--listen: port must be"),
    ((["127.0.0.1:1"], ["http://h:1"], "0"), "--workers:"),
    ((["127.0.0.1:1"], ["http://h:1"], "auto", None, "127.0.0.1:1"), "--control: same address"),
    ((["127.0.0.1:1"], ["http://h:1"], "auto", None, "off", "10x"), "--max-body-size: '10x' is not a size"),
])
def test_proxy_config_errors_name_the_flag(args, message):
    with pytest.raises(ConfigError) as info:
        proxy_config(*args)
    assert str(info.value).startswith(f"fastgate proxy: {message}"), str(info.value)


# --- the packaged default ---------------------------------------------------------------

def test_packaged_default_loads_and_answers_without_upstreams():
    loaded = load_config(default_config_path())
    cfg = loaded.config
    assert cfg.listeners[0].listen_address() == ("127.0.0.1", 8080, socket.AF_INET, None)
    assert cfg.admin.listen == "127.0.0.1:9901" and cfg.access_log.destination == "-"
    routes = {r.route_key: r for r in cfg.routes}
    health = routes["GET /health"].integration
    assert isinstance(health, MockIntegration) and json.loads(health.body) == {"status": "ok"}
    for key in ("ANY /echo", "ANY /echo/{proxy+}"):
        assert isinstance(routes[key].integration, EchoIntegration)
        assert routes[key].request_headers.ops() == [
            ("set", "X-Gateway-Request-Id", "$context.requestId")]
    assert not any(isinstance(r.integration, HttpIntegration) for r in cfg.routes)


def test_header_ops_compile_with_the_runtime_transform():
    from fastgate._core import headers
    route = load_config_text(FULL, "full.yaml").config.routes[0]
    transform = headers.HeaderTransform(route.request_headers.ops())
    assert [op[0] for op in transform.ops] == ["rename", "remove", "set", "append"]


def test_schema_is_strict_at_the_struct_level():
    # the runtime may build Structs directly; they must refuse what the loader refuses
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"path": "/", "integration": {"type": "echo"}, "nope": 1}, RouteConfig)
    with pytest.raises(TypeError):
        UpstreamConfig([])           # keyword-only
    assert Config.__struct_config__.frozen


def test_every_option_is_documented():
    import fastgate.compile.config.schema as mod
    docs = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "config.md")).read()
    structs = [v for v in vars(mod).values()
               if isinstance(v, type) and issubclass(v, msgspec.Struct) and v.__module__ == mod.__name__]
    missing = sorted({f for s in structs for f in s.__struct_fields__ if f"`{f}`" not in docs})
    assert not missing, f"options missing from docs/config.md: {missing}"


def test_large_route_table_loads_with_libyaml():
    """A 3,000-route file loads, composed by libyaml's parser (how fast: bench/bench_config.py)."""
    from fastgate.compile.config import source
    routes = "".join(f"  - path: /r{i}/{{id}}\n    method: GET\n    integration: {{type: echo}}\n"
                     for i in range(3000))
    cfg = load_config_text(LISTEN + "routes:\n" + routes, "big.yaml").config
    assert len(cfg.routes) == 3000 and cfg.routes[2999].path == "/r2999/{id}"
    assert issubclass(source._Loader, yaml.CSafeLoader)     # the pure-Python parser is ~4x slower


def test_throttle_keys():
    base = LISTEN + "routes:\n  - path: /x\n    integration: {type: mock}\n"
    for key in ("client_ip", "header:X-Tenant", "claim:sub", "claim:custom:tenant_id"):
        load_config_text(base + f"    throttle: {{rate: 1, burst: 1, key: '{key}'}}\n", "gw.yaml")
    assert_error(base + "    throttle: {rate: 1, burst: 1, key: 'claim:a b'}\n", 6, 35,
                 ("routes", 0, "throttle", "key"), '"claim:NAME"')
    assert_error(base + "    throttle: {rate: 1, burst: 1, key: 'query:x'}\n", 6, 35,
                 ("routes", 0, "throttle", "key"), '"header:NAME"')


# --- websocket_apis: request models and route throttles ------------------------------

WS = LISTEN + doc("""
    websocket_apis:
      - name: orders
        models:
          Order: {type: object, required: [qty]}
        stages:
          prod: {method_throttles: {order: {rate: 5, burst: 5}}}
        routes:
          order:
            integration: {type: mock, body: ok}
            model_selection_expression: $request.body.kind
            request_models: {$default: Order}
    """)


def test_websocket_request_models_and_route_throttles():
    cfg = load_config_text(WS, "gw.yaml").config
    route = cfg.websocket_apis[0].routes["order"]
    assert route.request_models == {"$default": "Order"}
    assert cfg.websocket_apis[0].stages["prod"].method_throttles["order"].burst == 5


@pytest.mark.parametrize("old, new, fragment", [
    ("{$default: Order}", "{$default: Nope}", "unknown model 'Nope'"),
    ("$request.body.kind", "$request.header.kind", "unsupported model selection expression"),
    ("{order: {rate", "{nowhere: {rate", "no route 'nowhere'"),
])
def test_websocket_request_models_refused(old, new, fragment):
    e = error(WS.replace(old, new))
    assert fragment in e.message, str(e)


def test_websocket_http_response_templates_by_status():
    text = WS.replace("integration: {type: mock, body: ok}",
                      'integration: {type: http, url: "http://127.0.0.1:9/x", '
                      'response_templates: {"/4\\\\d\\\\d/": nope}}')
    route = load_config_text(text, "gw.yaml").config.websocket_apis[0].routes["order"]
    assert route.integration.response_templates == {"/4\\d\\d/": "nope"}
    e = error(text.replace('"/4\\\\d\\\\d/"', '"404"'))
    assert "expected /REGEX/" in e.message, str(e)
