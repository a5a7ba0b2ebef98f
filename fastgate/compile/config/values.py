"""Values written as strings in the config, parsed: listen addresses, upstream URLs,
route paths, hash keys; and the patterns of names and tokens the checks share. Each
parser raises ValueError naming what is wrong."""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit


# --- parsed forms handed to the runtime ------------------------------------

class ListenAddress(NamedTuple):
    host: str | None          # IP literal or name; None for an interface listener
    port: int
    family: socket.AddressFamily  # AF_INET, AF_INET6, or AF_UNSPEC (name to resolve / both)
    interface: str | None     # Linux interface name, its addresses resolved at bind time


class TargetURL(NamedTuple):
    scheme: str               # "http" | "https"
    host: str                 # name or IP, IPv6 without brackets
    port: int                 # explicit, else 80 / 443

    @property
    def label(self) -> str:
        """host:port as written in Host headers and logs (IPv6 bracketed)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


# --- value parsers (shared by the loader's checks and the runtime helpers) ----

HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?\Z")
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")     # RFC 9110 section 5.6.2
# A mock may not set these: the gateway frames every response itself (RFC 9112 section 6)
FRAMING = frozenset(("content-length", "transfer-encoding", "connection", "keep-alive",
                     "proxy-connection", "te", "trailer", "upgrade", "date"))
CLAIM_NAME = re.compile(r"[A-Za-z0-9_:./-]{1,128}\Z")                 # a JWT claim name (throttle claim:NAME)
INTERFACE = re.compile(r"[^/\s:]{1,15}\Z")                # Linux IFNAMSIZ - 1
UPSTREAM_NAME = re.compile(r"[A-Za-z0-9_.\-]+\Z")


def _check_host(host: str) -> socket.AddressFamily:
    """AF_INET / AF_INET6 for IP literals, AF_UNSPEC for a valid name; ValueError else."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if not HOSTNAME.match(host):
            raise ValueError(f"invalid host {host!r}") from None
        return socket.AF_UNSPEC
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def parse_listen_address(text: str) -> ListenAddress:
    """"127.0.0.1:8080" | "[::1]:8080" | "localhost:8080" -> ListenAddress."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"expected [IPv6]:port, got {text!r}")
        if _check_host(host) != socket.AF_INET6:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address")
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"expected host:port, got {text!r}")
        if ":" in host:
            raise ValueError(f"write an IPv6 address in brackets: [{host}]:{port}")
    family = _check_host(host)
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"port must be 1-65535, got {port!r}")
    return ListenAddress(host, int(port), family, None)


def parse_target_url(url: str) -> TargetURL:
    """"http://host:port" -> TargetURL; ValueError naming what is wrong."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as e:  # urlsplit's own: bad brackets, bad port
        raise ValueError(f"URL {url!r}: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"URL {url!r} must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"URL {url!r} must not carry credentials")
    if parts.path not in ("", "/") or parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError(f"URL {url!r} must have no path, query or fragment "
                         "(use path_rewrite to change the path)")
    if not host:
        raise ValueError(f"URL {url!r} has no host")
    if port == 0:
        raise ValueError(f"URL {url!r} has an invalid port")
    if "[" in parts.netloc:
        if _check_host(host) != socket.AF_INET6:
            raise ValueError(f"URL {url!r}: {host!r} in brackets is not an IPv6 address")
    else:
        _check_host(host)
    return TargetURL(parts.scheme, host, port or (443 if parts.scheme == "https" else 80))


def parse_hash_on(text: str) -> tuple[str, str | None]:
    if text == "client_ip":
        return "client_ip", None
    kind, sep, name = text.partition(":")
    if sep and kind in ("header", "cookie") and TOKEN.match(name):
        return kind, (name.lower() if kind == "header" else name)
    raise ValueError(f"hash_on must be client_ip, header:NAME or cookie:NAME, got {text!r}")


def body_limit(value: int | str) -> int:
    return -1 if value == "unlimited" else int(value)


_SIZE = re.compile(r"(\d+)([kmg]?)", re.I)


def parse_size(text: str) -> int | str:
    """A size as nginx writes one (client_max_body_size): bytes, or a number with k, m or g
    (binary multiples: "512k", "10m", "2g"), or "unlimited" (returned as is, a BodyLimit).
    ValueError otherwise."""
    text = text.strip()
    if text.lower() == "unlimited":
        return "unlimited"
    m = _SIZE.fullmatch(text)
    if m is None:
        raise ValueError(f"{text!r} is not a size: bytes, or a number with k, m or g "
                         "(512k, 10m, 2g), or 'unlimited'")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]


BAD_PATH_CHARS = re.compile(r"[\s?#\x00-\x1f\x7f]")


def parse_route_path(path: str) -> list[tuple[str, str]]:
    """"/pets/{id}" -> [("static", "pets"), ("param", "id")]; kinds: static,
    param, greedy.  ValueError for what API Gateway would refuse."""
    if not path.startswith("/"):
        raise ValueError(f"route path {path!r} must start with '/'")
    bad = BAD_PATH_CHARS.search(path)
    if bad:
        raise ValueError(f"route path {path!r} contains {bad.group()!r} at offset {bad.start()}")
    depth = 0
    for i, ch in enumerate(path):
        depth += (ch == "{") - (ch == "}")
        if depth not in (0, 1):
            raise ValueError(f"unbalanced braces in {path!r} at offset {i}")
    if depth:
        raise ValueError(f"unbalanced braces in {path!r}: '{{' is never closed")
    # segments as the router itself reads them, so the check and the runtime never disagree
    # (one trailing slash ignored, parameter names as the router accepts them)
    from fastgate._core.router import parse_route_path as router_parse
    return router_parse(path)


def route_shape(segments: list[tuple[str, str]]) -> str:
    """The path as the router sees it: parameter names do not make routes differ."""
    return "/" + "/".join({"param": "{}", "greedy": "{+}"}.get(k, v) for k, v in segments)


def is_postgres_url(url: str) -> bool:
    """A state URL naming PostgreSQL (config `state.url`, --state)."""
    return url.startswith(("postgresql://", "postgres://"))


def redact_url(url: str) -> str:
    """The URL without its password, for logs and messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://…"
    if parts.password is not None:
        user, host = parts.netloc.rsplit("@", 1)
        parts = parts._replace(netloc=f"{user.split(':', 1)[0]}:***@{host}")
    query = re.sub(r"(^|&)password=[^&]*", r"\1password=***", parts.query)
    return urlunsplit(parts._replace(query=query))


def check_state_url(url: str) -> None:
    """ValueError when url is not a PostgreSQL connection URL libpq accepts."""
    if not is_postgres_url(url):
        raise ValueError(f"expected a postgresql://USER@HOST/DB URL, got {redact_url(url)!r}")
    import psycopg.conninfo
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error as e:
        raise ValueError(f"invalid PostgreSQL URL {redact_url(url)!r}: {e}") from None
