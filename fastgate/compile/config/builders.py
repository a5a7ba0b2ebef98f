"""Configs made rather than read: the command line's overrides of a loaded config,
`fastgate proxy`'s config, the empty config of `fastgate serve --openapi`, and where
the packaged default config is."""

from __future__ import annotations

import os
import re

import msgspec

from fastgate.compile.config.load import LoadedConfig, build
from fastgate.compile.config.schema import FunctionConfig, ListenerConfig, StateConfig
from fastgate.compile.config.source import ConfigError, ConfigSource
from fastgate.compile.config.values import check_state_url, parse_listen_address, parse_size


def with_overrides(loaded: LoadedConfig, *, listen: list[str] | None = None,
                   control: str | None = None, data_dir: str | None = None,
                   functions: list[str] | None = None, function_path: list[str] | None = None,
                   iam_credentials: str | None = None, state: str | None = None,
                   flag_source: str = "fastgate serve") -> LoadedConfig:
    """The config with command-line flags applied (--listen, --control, --data-dir,
    --state URL, --function NAME=module:callable, --function-path DIR); a bad flag value is a
    ConfigError naming the flag."""
    config = loaded.config
    changes = {}
    if functions:
        from fastgate.phases.functions.loader import parse_handler
        table = dict(config.functions)
        for spec in functions:
            name, sep, handler = spec.partition("=")
            try:
                if not sep or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
                    raise ValueError(f"expected NAME=module:callable, got {spec!r}")
                parse_handler(handler)
            except ValueError as e:
                raise ConfigError(flag_source, 0, 0, ("--function",), str(e)) from None
            table[name] = FunctionConfig(handler=handler)
        changes["functions"] = table
    if function_path:
        changes["function_path"] = tuple(os.path.abspath(p) for p in function_path) + \
            config.function_path
    try:
        if listen:
            for a in listen:
                parse_listen_address(a)
            changes["listeners"] = tuple(ListenerConfig(address=a) for a in listen)
        if control is not None:
            if control != "off":
                parse_listen_address(control)
            changes["admin"] = msgspec.structs.replace(config.admin, listen=control)
    except ValueError as e:
        flag = "--listen" if "admin" not in changes and listen else "--control"
        raise ConfigError(flag_source, 0, 0, (flag,), str(e)) from None
    if data_dir is not None:
        changes["data_dir"] = data_dir
    if state is not None:
        try:
            check_state_url(state)
        except ValueError as e:
            raise ConfigError(flag_source, 0, 0, ("--state",), str(e)) from None
        changes["state"] = (msgspec.structs.replace(config.state, url=state) if config.state
                            else StateConfig(url=state))
    if iam_credentials is not None:
        changes["iam_credentials"] = os.path.abspath(iam_credentials)
    if not changes:
        return loaded
    out = LoadedConfig(msgspec.structs.replace(config, **changes), loaded.source, loaded.state)
    out.warnings = loaded.warnings
    return out


def empty_config() -> LoadedConfig:
    """A gateway with a listener and no routes (`fastgate serve --openapi`)."""
    return build({"listeners": [{"address": "127.0.0.1:8080"}]}, ConfigSource("fastgate serve", {}))


def default_config_path() -> str:
    """The packaged default config (fastgate/default.yaml)."""
    package = os.path.dirname(os.path.abspath(__file__))      # fastgate/compile/config
    return os.path.join(os.path.dirname(os.path.dirname(package)), "default.yaml")


# Where `fastgate proxy` errors point: the flag that produced the value.
_PROXY_FLAGS = (
    (("listeners",), "--listen"),
    (("upstreams",), "--upstream"),
    (("workers",), "--workers"),
    (("admin",), "--control"),
    (("access_log",), "--access-log"),
    (("limits",), "--max-body-size"),
)


def proxy_config(listen: list[str], upstreams: list[str], workers: int | str = "auto",
                 access_log: str | None = None, control: str = "127.0.0.1:9901",
                 max_body_size: str = "unlimited") -> LoadedConfig:
    """The config of ``fastgate proxy``: every request, any method and path, to
    one round-robin group of ``upstreams``.  ``access_log``: a path, "-" for
    stdout, None or "off" for none (the default).  ``control``: host:port of
    the admin API or "off".  ``max_body_size``: parse_size() text; a plain
    reverse proxy streams bodies of any size unless told otherwise.  Errors
    name the flag instead of a file line."""
    if isinstance(workers, str) and workers.isdigit():
        workers = int(workers)
    try:
        max_body = parse_size(max_body_size)
    except ValueError as e:
        raise ConfigError("fastgate proxy", 0, 0, ("--max-body-size",), str(e)) from None
    data = {
        "workers": workers,
        "listeners": [{"address": a} for a in listen],
        "admin": {"listen": control},
        "access_log": {"path": None if access_log in (None, "off") else access_log},
        "limits": {"max_body_bytes": max_body},
        "upstreams": {"proxy": {"targets": [{"url": u} for u in upstreams]}},
        "routes": [
            {"path": "/{proxy+}", "method": "ANY", "integration": {"type": "http", "upstream": "proxy"}},
            {"path": "/", "method": "ANY", "integration": {"type": "http", "upstream": "proxy"}},
        ],
    }
    source = ConfigSource("fastgate proxy", {})
    try:
        return build(data, source)
    except ConfigError as e:
        flag = next((f for prefix, f in _PROXY_FLAGS if e.path[:1] == prefix), None)
        if flag is None:
            raise
        detail = e.message
        if flag == "--listen" and not listen:
            detail = "at least one --listen address is required"
        elif flag == "--upstream" and not upstreams:
            detail = "at least one --upstream URL is required"
        raise ConfigError("fastgate proxy", 0, 0, (flag,), detail) from None
