"""The checks on a decoded config that types cannot say: URLs, addresses, CIDRs, route
paths, references between sections."""

from __future__ import annotations

import ipaddress
import os
import re

from fastgate.compile.config.schema import (
    Config,
    FunctionIntegration,
    HeaderOps,
    HttpIntegration,
    MockIntegration,
    RouteConfig,
    UpstreamConfig,
)
from fastgate.compile.config.source import ConfigSource, Path, config_error
from fastgate.compile.config.values import (
    BAD_PATH_CHARS,
    FRAMING,
    HOSTNAME,
    INTERFACE,
    TOKEN,
    UPSTREAM_NAME,
    TargetURL,
    check_state_url,
    parse_hash_on,
    parse_listen_address,
    parse_route_path,
    parse_target_url,
    route_shape,
)


class Checker:
    """One pass over a decoded Config; the first problem raises ConfigError at its place."""

    def __init__(self, config: Config, source: ConfigSource):
        self.config = config
        self.source = source

    def fail(self, path: Path, message: str):
        raise config_error(self.source, path, message)

    def attempt(self, path: Path, fn, *args):
        try:
            return fn(*args)
        except ValueError as e:
            self.fail(path, str(e))

    def run(self) -> None:
        cfg = self.config
        bound: dict[tuple, int] = {}
        for i, lst in enumerate(cfg.listeners):
            p = ("listeners", i)
            if (lst.address is None) == (lst.interface is None):
                self.fail(p, "give either address (host:port) or interface with port")
            if lst.address is not None:
                for extra in ("port", "family"):
                    if getattr(lst, extra) is not None:
                        self.fail(p + (extra,), f"{extra} goes with interface; address already "
                                  "names the port and family")
                addr = self.attempt(p + ("address",), parse_listen_address, lst.address)
                key = (addr.host, addr.port)
            else:
                if not INTERFACE.match(lst.interface):
                    self.fail(p + ("interface",), f"invalid interface name {lst.interface!r}")
                if lst.port is None:
                    self.fail(p, "an interface listener needs a port")
                key = (f"%{lst.interface}", lst.port)
            if key in bound:
                self.fail(p, f"listens where listeners[{bound[key]}] already does")
            bound[key] = i
        if cfg.admin.listen != "off":
            addr = self.attempt(("admin", "listen"), parse_listen_address, cfg.admin.listen)
            if (addr.host, addr.port) in bound:
                self.fail(("admin", "listen"),
                          f"same address as listeners[{bound[addr.host, addr.port]}]")
        for i, cidr in enumerate(cfg.trusted_proxies):
            try:
                ipaddress.ip_network(cidr)
            except ValueError:
                try:
                    net = ipaddress.ip_network(cidr, strict=False)
                except ValueError:
                    self.fail(("trusted_proxies", i), f"not an IP address or CIDR: {cidr!r}")
                self.fail(("trusted_proxies", i),
                          f"{cidr!r} has host bits set; did you mean {str(net)!r}?")
        if cfg.via is not None and not TOKEN.match(cfg.via):
            self.fail(("via",), f"must be a token (no spaces), got {cfg.via!r}; "
                      "null turns the Via header off")
        if cfg.access_log.path == "":
            self.fail(("access_log", "path"), 'empty path; use "-" for stdout or null for none')
        if not cfg.access_log.format:
            self.fail(("access_log", "format"), "empty format")
        for i, lst in enumerate(cfg.listeners):
            if lst.tls is not None:
                self.check_tls(("listeners", i, "tls"), lst.tls.certificate, lst.tls.key, None)
        for i, dom in enumerate(cfg.domains):
            p = ("domains", i)
            if (dom.certificate is None) != (dom.key is None):
                self.fail(p + ("key" if dom.key is None else "certificate",),
                          "certificate and key go together")
            if dom.truststore is not None and dom.certificate is None:
                self.fail(p + ("truststore",), "mutual TLS needs the domain's own certificate and key")
            if dom.certificate is not None:
                self.check_tls(p, dom.certificate, dom.key, dom.truststore)
        for name, up in cfg.upstreams.items():
            self.check_upstream(name, up)
        if cfg.throttle is not None:
            self.attempt(("throttle", "key"), cfg.throttle.key_kind)
        if cfg.state is not None:
            self.attempt(("state", "url"), check_state_url, cfg.state.url)
        if cfg.tracing is not None:
            from fastgate.observability.tracing_export import parse_spec
            self.attempt(("tracing",), parse_spec, cfg.tracing)
        for i, route in enumerate(cfg.routes):
            if route.throttle is not None:
                self.attempt(("routes", i, "throttle", "key"), route.throttle.key_kind)
        for name, fn in cfg.functions.items():
            fp = ("functions", name)
            if (fn.handler is None) == (fn.remote is None):
                self.fail(fp, "a function needs exactly one of handler (module:callable) or remote")
            if fn.handler is not None:
                from fastgate.phases.functions.loader import parse_handler
                self.attempt(fp + ("handler",), parse_handler, fn.handler)
            if fn.remote is not None and not re.match(r"^https?://[^/]+/?$", fn.remote.endpoint):
                self.fail(fp + ("remote", "endpoint"),
                          f"expected http(s)://host[:port], got {fn.remote.endpoint!r}")
        if cfg.websocket_apis:
            from fastgate.compile.config.websocket import check_websocket_apis
            check_websocket_apis(self, cfg)
        seen: dict[tuple, int] = {}
        for i, route in enumerate(cfg.routes):
            key = self.check_route(i, route)
            if key in seen:
                j = seen[key]
                line = self.source.locate(("routes", j))[0]
                where = f"routes[{j}]" + (f", line {line}" if line else "")
                self.fail(("routes", i), f"duplicate route {route.route_key} for host "
                          f"{route.host!r}: same as {where}")
            seen[key] = i

    def check_tls(self, path: Path, certificate: str, key: str, truststore: str | None) -> None:
        """The files are readable PEMs and the key belongs to the certificate."""
        from fastgate.compile.tls import TLSError, check_key_pair, read_pem, server_context
        base = os.path.dirname(os.path.abspath(self.source.filename)) \
            if os.path.exists(self.source.filename) else os.getcwd()
        files = {"certificate": certificate, "key": key, "truststore": truststore}
        try:
            pems = {f: read_pem(os.path.join(base, v), f) for f, v in files.items() if v is not None}
            check_key_pair(pems["certificate"], pems["key"], f"certificate {certificate}",
                           f"key {key}")
            server_context(pems["certificate"], pems["key"], truststore_pem=pems.get("truststore"))
        except TLSError as e:
            self.fail(path + (e.field,), str(e))

    def check_upstream(self, name: str, up: UpstreamConfig) -> None:
        p = ("upstreams", name)
        if not UPSTREAM_NAME.match(name):
            self.fail(p, f"upstream name {name!r} may hold only letters, digits, '_', '.', '-'")
        urls: dict[TargetURL, int] = {}
        for i, t in enumerate(up.targets):
            parsed = self.attempt(p + ("targets", i, "url"), parse_target_url, t.url)
            if parsed in urls:
                self.fail(p + ("targets", i), f"same target as targets[{urls[parsed]}]; "
                          "raise its weight instead")
            urls[parsed] = i
        if up.hash_on is not None:
            if up.balance != "hash":
                self.fail(p + ("hash_on",), "hash_on needs balance: hash")
            self.attempt(p + ("hash_on",), parse_hash_on, up.hash_on)
        hc = up.health_check
        if hc is not None:
            if not hc.path.startswith("/") or BAD_PATH_CHARS.search(hc.path.replace("?", "")):
                self.fail(p + ("health_check", "path"), f"invalid check path {hc.path!r}")
            if hc.timeout_ms > hc.interval_ms:
                self.fail(p + ("health_check", "timeout_ms"),
                          f"timeout_ms ({hc.timeout_ms}) exceeds interval_ms ({hc.interval_ms})")
            if hc.host is not None and not HOSTNAME.match(hc.host.rsplit(":", 1)[0]):
                self.fail(p + ("health_check", "host"), f"invalid host {hc.host!r}")

    def check_headers(self, path: Path, ops: HeaderOps | None) -> None:
        if ops is None:
            return
        for section in ("set", "append", "rename"):
            for name, value in getattr(ops, section).items():
                if not TOKEN.match(name):
                    self.fail(path + (section, name), f"invalid header name {name!r}")
                if section == "rename" and not TOKEN.match(value):
                    self.fail(path + (section, name), f"invalid header name {value!r}")
                if any(c in value for c in "\r\n\x00"):
                    self.fail(path + (section, name), "header values may not hold CR, LF or NUL")
        for i, name in enumerate(ops.remove):
            if not TOKEN.match(name):
                self.fail(path + ("remove", i), f"invalid header name {name!r}")

    def check_route(self, i: int, route: RouteConfig) -> tuple:
        p = ("routes", i)
        segments = self.attempt(p + ("path",), parse_route_path, route.path)
        if route.method != "ANY" and not (TOKEN.match(route.method) and route.method.isupper()):
            hint = f"; write {route.method.upper()!r}" if TOKEN.match(route.method) else ""
            self.fail(p + ("method",), f"method must be an upper-case HTTP method or ANY, "
                      f"got {route.method!r}{hint}")
        host = route.host
        if host != "*":
            bare = host[2:] if host.startswith("*.") else host
            if ":" in bare:
                self.fail(p + ("host",), f"host {host!r}: patterns match the Host header "
                          "without its port")
            if "*" in bare or not HOSTNAME.match(bare):
                self.fail(p + ("host",), f"host must be a name, *.domain or *, got {host!r}")
        integ = route.integration
        ip = p + ("integration",)
        if isinstance(integ, HttpIntegration):
            if (integ.upstream is None) == (integ.url is None):
                self.fail(ip, "an http integration needs exactly one of upstream or url")
            if integ.upstream is not None and integ.upstream not in self.config.upstreams:
                defined = ", ".join(sorted(self.config.upstreams)) or "none"
                self.fail(ip + ("upstream",),
                          f"unknown upstream {integ.upstream!r} (defined: {defined})")
            if integ.url is not None:
                self.attempt(ip + ("url",), parse_target_url, integ.url)
        else:
            for name in ("timeouts", "retries"):
                if getattr(route, name) is not None:
                    self.fail(p + (name,), f"{name} apply to http integrations only")
            if isinstance(integ, FunctionIntegration) and integ.function not in self.config.functions:
                defined = ", ".join(sorted(self.config.functions)) or "none"
                self.fail(ip + ("function",), f"unknown function {integ.function!r} (defined: {defined})")
            if isinstance(integ, (FunctionIntegration, MockIntegration)):
                # only http and echo integrations are sent a path; a function's event carries the
                # request path next to the route's resource, as API Gateway's does (docs/config.md)
                why = ("its event carries the request path, as on API Gateway: strip a base path "
                       "in the function" if isinstance(integ, FunctionIntegration)
                       else "a mock answers without one")
                for name in ("strip_prefix", "path_rewrite"):
                    if getattr(route, name) is not None:
                        self.fail(p + (name,), f"{name} changes the path sent to an http integration; "
                                  f"{why}")
            if isinstance(integ, MockIntegration):
                if integ.status < 200:
                    self.fail(ip + ("status",), f"{integ.status} is informational: a mock "
                              "answers with a final status, 200-599")
                for name, value in integ.headers.items():
                    if not TOKEN.match(name):
                        self.fail(ip + ("headers", name), f"invalid header name {name!r}")
                    if name.lower() in FRAMING:
                        self.fail(ip + ("headers", name), f"{name} is the gateway's to write")
                    if any(c in value for c in "\r\n\x00"):
                        self.fail(ip + ("headers", name), "header values may not hold CR, LF or NUL")
        if route.path_rewrite is not None and route.strip_prefix is not None:
            self.fail(p + ("strip_prefix",), "use path_rewrite or strip_prefix, not both")
        if route.path_rewrite is not None:
            self.check_rewrite(p + ("path_rewrite",), route.path_rewrite, segments)
        if route.strip_prefix is not None:
            prefix = route.strip_prefix
            if not prefix.startswith("/") or prefix == "/" or prefix.endswith("/"):
                self.fail(p + ("strip_prefix",), f"strip_prefix must look like /api "
                          f"(leading '/', no trailing '/'), got {prefix!r}")
            static = "/" + "/".join(v for k, v in segments[:prefix.count("/")] if k == "static")
            if static != prefix:
                self.fail(p + ("strip_prefix",), f"{prefix!r} is not a prefix of the static "
                          f"start of the route path {route.path!r}")
        self.check_headers(p + ("request_headers",), route.request_headers)
        self.check_headers(p + ("response_headers",), route.response_headers)
        return host.lower(), route.method, route_shape(segments)

    def check_rewrite(self, path: Path, rewrite: str, segments: list) -> None:
        if not rewrite.startswith("/"):
            self.fail(path, f"path_rewrite must start with '/', got {rewrite!r}")
        depth = 0
        for ch in rewrite:
            depth += (ch == "{") - (ch == "}")
            if depth not in (0, 1):
                break
        if depth:
            self.fail(path, f"unbalanced braces in {rewrite!r}")
        params = {v for k, v in segments if k != "static"}
        # "$$" and "${variable}" are template syntax, not path parameters
        for m in re.finditer(r"\$\$|\$\{[^}]*\}|\{([^{}]*)\}", rewrite):
            if m.group(1) is None:
                continue
            name = m.group(1).rstrip("+")
            if name not in params:
                known = ", ".join(sorted(params)) or "none"
                self.fail(path, f"path_rewrite uses {{{m.group(1)}}}, which the route path does "
                          f"not capture (parameters: {known})")
