"""The fastgate command: serve, proxy, check."""

from __future__ import annotations

import argparse
import sys

from fastgate import __version__


def run_supervisor(supervisor) -> int:
    try:
        return supervisor.run()
    except OSError as e:   # a listener that cannot be bound, an interface that is not there
        print(f"fastgate: {e.strerror or e}", file=sys.stderr)
        return 1


def cmd_serve(args) -> int:
    from fastgate.config import ConfigError, default_config_path, load_config
    from fastgate.supervisor import Supervisor
    path = args.config or default_config_path()
    try:
        load_config(path)
    except ConfigError as e:
        print(f"fastgate: {e}", file=sys.stderr)
        return 2
    return run_supervisor(Supervisor(lambda: load_config(path)))


def cmd_proxy(args) -> int:
    from fastgate.config import ConfigError, proxy_config
    from fastgate.supervisor import Supervisor
    try:
        loaded = proxy_config(args.listen or ["127.0.0.1:8080"], args.upstream, args.workers,
                              args.access_log, args.control)
    except ConfigError as e:
        print(f"fastgate: {e}", file=sys.stderr)
        return 2
    return run_supervisor(Supervisor(lambda: loaded))


def cmd_check(args) -> int:
    from fastgate.config import ConfigError, default_config_path, load_config
    from fastgate.snapshot import build_snapshot, integration_type
    path = args.config or default_config_path()
    try:
        loaded = load_config(path)
        snapshot = build_snapshot(loaded, None, open_logs=False)
    except ConfigError as e:
        print(f"fastgate: {e}", file=sys.stderr)
        return 2
    print(f"{path}: OK, {len(snapshot.routes)} routes, {len(loaded.config.upstreams)} upstreams")
    rows = [("HOST", "METHOD", "PATH", "INTEGRATION")]
    for host, method, route_path, route in snapshot.router.routes():
        rc = loaded.config.routes[route.index]
        integ = rc.integration
        target = integration_type(integ)
        if target == "http":
            target = f"http -> {integ.upstream or integ.url}"
        elif target == "mock":
            target = f"mock {integ.status}"
        rows.append((host, method, route_path, target))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastgate", description="A self-hosted API gateway.")
    p.add_argument("--version", action="version", version=f"fastgate {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the gateway on a config file (default: the packaged one)")
    s.add_argument("-c", "--config", help="gateway.yaml or .json")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("proxy", help="one-line reverse proxy, no config file")
    s.add_argument("--listen", action="append", metavar="HOST:PORT",
                   help="address to listen on (default 127.0.0.1:8080); may repeat")
    s.add_argument("--upstream", action="append", required=True, metavar="URL",
                   help="http(s)://host:port; repeat for a round-robin group")
    s.add_argument("--workers", default="auto", help="worker processes, or 'auto' (= CPU count)")
    s.add_argument("--access-log", metavar="PATH|-", default=None,
                   help="write an access log to PATH, or '-' for stdout (default: off)")
    s.add_argument("--control", metavar="HOST:PORT|off", default="127.0.0.1:9901",
                   help="admin listener for /metrics (default 127.0.0.1:9901), or 'off'")
    s.set_defaults(func=cmd_proxy)

    s = sub.add_parser("check", help="validate a config and print its route table")
    s.add_argument("-c", "--config", help="gateway.yaml or .json")
    s.set_defaults(func=cmd_check)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)
