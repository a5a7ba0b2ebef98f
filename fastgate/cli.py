"""The fastgate command: serve, proxy, check, usage, keys, state."""

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


def serve_loader(args):
    """() -> LoadedConfig for `fastgate serve`: the config (-c, else the packaged one, or an
    empty gateway with --openapi), the command-line overrides, and the APIs served: the
    config's `apis:`, the --openapi document, and the control API's state in the data dir.
    Called again on every reload."""
    from fastgate.control.state import config_state, merge_states, openapi_state
    from fastgate.compile.config import empty_config, default_config_path, load_config, with_overrides

    def loader():
        if args.config:
            loaded = load_config(args.config)
        elif args.openapi:
            loaded = empty_config()
        else:
            loaded = load_config(default_config_path())
        loaded = with_overrides(loaded, listen=args.listen, control=args.control,
                                data_dir=args.data_dir, functions=args.function,
                                function_path=args.function_path,
                                iam_credentials=args.iam_credentials, state=args.state)
        warnings = loaded.warnings
        states = [config_state(loaded, warnings.append)]
        if args.openapi:
            states.append(openapi_state(args.openapi, stages={args.stage or "$default": {}},
                                        warn=warnings.append))
        states.append(stored_state(loaded))
        try:
            loaded.state = merge_states(*states)
        except ValueError as e:
            raise loaded.error(("apis",), str(e)) from None
        return loaded
    return loader


def stored_state(loaded):
    """The control API's state: the data dir's SQLite, or with `state.url` (--state) the
    local copy of the fleet's PostgreSQL state, which the admin process keeps current
    (fastgate.control.fleet): a reload never waits on the network."""
    if loaded.config.state is None:
        from fastgate.control.store import load_state
        return load_state(resolved_data_dir(loaded))
    from fastgate.control.local_copy import LocalCopy
    copied = LocalCopy(resolved_data_dir(loaded)).load()
    return copied[0] if copied is not None else None


def fetch_fleet_state(loaded) -> bool:
    """At start-up, the fleet's state from PostgreSQL into the local copy. Unreachable: the
    copy a previous run saved is served (a warning says which); with no copy either, False."""
    from fastgate.compile.config.values import redact_url
    from fastgate.control.fleet import fetch_copy
    from fastgate.control.local_copy import LocalCopy
    from fastgate.control.store import StoreError
    from fastgate.observability.log import log
    url = loaded.config.state.url
    data_dir = resolved_data_dir(loaded)
    copy = LocalCopy(data_dir)
    try:
        # a host joining a fleet: what its own SQLite still holds is not served any more
        from fastgate.control.store import load_state
        left = sum(1 for _ in load_state(data_dir).entities())
        if left:
            log(f"warning: {data_dir}'s SQLite holds {left} entities that this fleet host does "
                f"not serve (its state is {redact_url(url)}); `fastgate state copy --from "
                f"sqlite:{data_dir} --to URL` moves them")
    except StoreError:
        pass
    try:
        version = fetch_copy(url, copy)
        log(f"state: {redact_url(url)}, version {version} (local copy {copy.path})")
        return True
    except StoreError as e:
        print(f"fastgate: {e}", file=sys.stderr)
        return False
    except Exception as e:      # psycopg.Error, OSError: the database cannot be read now
        import psycopg
        if not isinstance(e, (psycopg.Error, OSError)):
            raise
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        try:
            doc = copy.read()
        except StoreError as bad:
            doc, reason = None, f"{reason}; {bad}"
        if doc is None:
            print(f"fastgate: cannot read the state from {redact_url(url)} ({reason}) and "
                  f"there is no local copy in {copy.path} to serve meanwhile", file=sys.stderr)
            return False
        import time
        saved = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(doc.get("saved", 0)))
        log(f"warning: state: {redact_url(url)} unreachable ({reason}); serving the local "
            f"copy {copy.path} (version {doc['version']}, saved {saved}) until it answers")
        return True


def resolved_data_dir(loaded) -> str:
    """The control API's state directory: data_dir (or --data-dir), else
    FASTGATE_DATA_DIR, else fastgate.control.store.default_data_dir()."""
    import os
    from fastgate.control.store import default_data_dir
    return os.path.abspath(loaded.config.data_dir or os.environ.get("FASTGATE_DATA_DIR")
                           or default_data_dir())


def admin_environment(loaded) -> None:
    """The admin process (forked later) reads its credentials and data dir from here, so
    the control API writes where the workers read."""
    import os
    config = loaded.config
    if config.admin.credentials is not None:
        os.environ["FASTGATE_ADMIN_ACCESS_KEY_ID"] = config.admin.credentials.access_key_id
        os.environ["FASTGATE_ADMIN_SECRET_ACCESS_KEY"] = config.admin.credentials.secret_access_key
    os.environ["FASTGATE_DATA_DIR"] = resolved_data_dir(loaded)


def cmd_serve(args) -> int:
    from fastgate.compile.config import ConfigError
    from fastgate.process.supervisor import Supervisor
    loader = serve_loader(args)
    try:
        loaded = loader()
        if loaded.config.state is not None:
            if not fetch_fleet_state(loaded):
                return 1
            loaded = loader()      # with the state just read
    except ConfigError as e:
        print(f"fastgate: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:   # an unreadable or invalid --openapi document
        print(f"fastgate: {args.openapi}: {getattr(e, 'strerror', None) or e}", file=sys.stderr)
        return 2
    admin_environment(loaded)   # warnings: the supervisor prints them as it builds the snapshot
    return run_supervisor(Supervisor(loader, watch=not args.no_watch, pid_file=args.pid_file,
                                     watch_extra=(args.openapi,) if args.openapi else ()))


def cmd_proxy(args) -> int:
    from fastgate.compile.config import ConfigError, proxy_config
    from fastgate.process.supervisor import Supervisor
    try:
        loaded = proxy_config(args.listen or ["127.0.0.1:8080"], args.upstream, args.workers,
                              args.access_log, args.control, args.max_body_size)
    except ConfigError as e:
        print(f"fastgate: {e}", file=sys.stderr)
        return 2
    return run_supervisor(Supervisor(lambda: loaded))


def cmd_check(args) -> int:
    from fastgate.compile.config import ConfigError, default_config_path, load_config
    from fastgate.compile.snapshot import build_snapshot, integration_type
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


def _data_dir(args) -> str:
    import os
    from fastgate.control.store import default_data_dir
    return os.path.abspath(args.data_dir or os.environ.get("FASTGATE_DATA_DIR") or default_data_dir())


def cmd_usage_export(args) -> int:
    """Usage per API key, UTC day and API stage, from the data dir's usage table; with
    -c naming a config that has `redis:`, summed over every host that pushes there."""
    from fastgate.control.store import db_path, load_state
    from fastgate.control.usage import UsageStore, export, parse_day
    from fastgate.control.usage_redis import all_hosts_rows
    redis_cfg = loaded = None
    if args.config:
        from fastgate.compile.config import ConfigError, load_config
        try:
            loaded = load_config(args.config)
        except ConfigError as e:
            print(f"fastgate: {e}", file=sys.stderr)
            return 2
        redis_cfg = loaded.config.redis
        if not args.data_dir:
            args.data_dir = resolved_data_dir(loaded)
    data_dir = _data_dir(args)
    if not db_path(data_dir).exists():
        print(f"fastgate: no state in {data_dir}", file=sys.stderr)
        return 2
    try:
        for day, what in ((args.start, "--from"), (args.end, "--to")):
            if day:
                parse_day(day, what)
    except ValueError as e:
        print(f"fastgate: {e}", file=sys.stderr)
        return 2
    # a fleet host's keys are in its copy of the shared state, not in its SQLite
    state = stored_state(loaded) if loaded is not None and loaded.config.state else load_state(data_dir)
    names = {k: doc.get("name", "") for k, doc in
             (state.extra if state else {}).get("apikey", {}).get("", {}).items()}
    store = UsageStore.in_dir(data_dir)
    try:
        rows = all_hosts_rows(store, redis_cfg, args.start, args.end, args.key or None,
                              warn=lambda m: print(f"fastgate: warning: {m}", file=sys.stderr))
    finally:
        store.close()
    sys.stdout.write(export(rows, args.format, names))
    return 0


def cmd_keys(args) -> int:
    """API keys in the data dir (or with --state, in the fleet's PostgreSQL), through the
    control API's own operations. A running gateway picks the change up on its next reload
    (SIGHUP); fleet hosts at once (NOTIFY)."""
    from fastgate.control.errors import ApiError
    from fastgate.control.model import Model
    from fastgate.control.store import Store
    from fastgate.control.store_pg import PgStore, Unavailable
    if args.state:
        from fastgate.compile.config.values import check_state_url
        try:
            check_state_url(args.state)
        except ValueError as e:
            print(f"fastgate: --state: {e}", file=sys.stderr)
            return 2
        store = PgStore(args.state, _data_dir(args))
    else:
        store = Store.in_dir(_data_dir(args))
    try:
        model = Model(store)
        if args.keys_command == "create":
            p = {"name": args.name, "enabled": not args.disabled}
            if args.customer_id:
                p["customerId"] = args.customer_id
            if args.value_stdin:
                p["value"] = sys.stdin.readline().strip()
            key = model.create_api_key(p)
            for plan_id in args.plan or ():
                model.create_usage_plan_key({"usagePlanId": plan_id, "keyId": key["id"],
                                             "keyType": "API_KEY"})
            # the value goes to stdout once, for the operator to hand over; never to a log
            print(f"{key['id']}\t{key['value']}")
        elif args.keys_command == "list":
            print("ID\tNAME\tENABLED\tCUSTOMER")
            position = None
            while True:
                page = model.get_api_keys({"limit": 500, "position": position})
                for k in page["items"]:
                    print(f"{k['id']}\t{k.get('name', '')}\t{str(k['enabled']).lower()}\t"
                          f"{k.get('customerId', '')}")
                position = page.get("position")
                if not position:
                    break
        else:
            model.delete_api_key({"apiKey": args.id})
        return 0
    except ApiError as e:
        print(f"fastgate: {e.message}", file=sys.stderr)
        return 1
    except Unavailable as e:     # --state: the database is down and there is no local copy
        print(f"fastgate: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()


def cmd_state_copy(args) -> int:
    """Every entity of one store into another: a host's SQLite into the fleet's PostgreSQL,
    or back. Running fleet hosts pick the change up at once (NOTIFY); a gateway serving
    the SQLite destination on its next reload (SIGHUP)."""
    from fastgate.control.errors import ApiError
    from fastgate.control.fleet import CopyError, copy_state, describe
    from fastgate.control.store import StoreError
    from fastgate.control.store_pg import Unavailable
    try:
        n, version = copy_state(args.source, args.dest, replace=args.replace)
    except (CopyError, StoreError, Unavailable) as e:
        print(f"fastgate: {e}", file=sys.stderr)
        return 1
    except ApiError as e:
        print(f"fastgate: {e.message}", file=sys.stderr)
        return 1
    print(f"copied {n} entities from {describe(args.source)} to {describe(args.dest)} "
          f"(its version is now {version})")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastgate", description="A self-hosted API gateway.")
    p.add_argument("--version", action="version", version=f"fastgate {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the gateway on a config file (default: the packaged one)")
    s.add_argument("-c", "--config", help="gateway.yaml or .json")
    s.add_argument("--openapi", metavar="FILE",
                   help="serve this OpenAPI 3 / Swagger 2 document (JSON or YAML) as it is")
    s.add_argument("--stage", metavar="NAME",
                   help="stage of the --openapi API (default $default: at the root; else /NAME/...)")
    s.add_argument("--listen", action="append", metavar="HOST:PORT",
                   help="listen here instead of the config's listeners; may repeat")
    s.add_argument("--control", metavar="HOST:PORT|off",
                   help="admin listener (control API, /metrics); default 127.0.0.1:9901")
    s.add_argument("--data-dir", metavar="DIR",
                   help="state directory of the control API (APIs, deployments, stages, domains)")
    s.add_argument("--state", metavar="postgresql://USER@HOST/DB",
                   help="keep the control API's state in this PostgreSQL database, shared by "
                        "every host given the same URL (docs/fleet.md); the data dir keeps "
                        "this host's copy of it")
    s.add_argument("--function", action="append", metavar="NAME=MODULE:CALLABLE",
                   help="run this Lambda-style handler for function NAME (aws_proxy integrations "
                        "name it in their function ARN); may repeat")
    s.add_argument("--function-path", action="append", metavar="DIR",
                   help="directory handlers are imported from; may repeat")
    s.add_argument("--iam-credentials", metavar="FILE",
                   help="SigV4 callers of AWS_IAM routes: CSV access_key_id,secret_access_key,principal_arn")
    s.add_argument("--no-watch", action="store_true",
                   help="do not reload when the config file or the OpenAPI documents it names change")
    s.add_argument("--pid-file", metavar="PATH",
                   help="write the supervisor's PID here (rewritten by the new process on SIGUSR2)")
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
    s.add_argument("--max-body-size", metavar="SIZE|unlimited", default="unlimited",
                   help="largest request body, larger ones get 413: bytes, or with k, m or g "
                        "(512k, 10m, 2g); default unlimited (bodies stream through)")
    s.set_defaults(func=cmd_proxy)

    s = sub.add_parser("check", help="validate a config and print its route table")
    s.add_argument("-c", "--config", help="gateway.yaml or .json")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("usage", help="API key usage per key, day and API stage")
    usage = s.add_subparsers(dest="usage_command", required=True)
    e = usage.add_parser("export", help="print usage as CSV or JSON")
    e.add_argument("--data-dir", metavar="DIR", help="state directory (default: as serve)")
    e.add_argument("-c", "--config", help="gateway config: its data_dir, and with `redis:` "
                   "the usage of every host sharing that Redis")
    e.add_argument("--from", dest="start", metavar="YYYY-MM-DD", help="first day (UTC), inclusive")
    e.add_argument("--to", dest="end", metavar="YYYY-MM-DD", help="last day (UTC), inclusive")
    e.add_argument("--format", choices=("csv", "json"), default="csv")
    e.add_argument("--key", action="append", metavar="ID", help="only this API key id; may repeat")
    e.set_defaults(func=cmd_usage_export)

    s = sub.add_parser("keys", help="create, list or delete API keys in the data dir")
    keys = s.add_subparsers(dest="keys_command", required=True)
    k = keys.add_parser("create", help="create a key; prints its id and value")
    k.add_argument("name")
    k.add_argument("--customer-id")
    k.add_argument("--plan", action="append", metavar="USAGE_PLAN_ID", help="add it to this usage plan")
    k.add_argument("--disabled", action="store_true", help="create it disabled")
    k.add_argument("--value-stdin", action="store_true",
                   help="read the value from stdin (default: generate 40 characters)")
    k = keys.add_parser("list", help="list keys (never their values)")
    k = keys.add_parser("delete", help="delete a key")
    k.add_argument("id")
    for k in keys.choices.values():
        k.add_argument("--data-dir", metavar="DIR", help="state directory (default: as serve)")
        k.add_argument("--state", metavar="postgresql://USER@HOST/DB",
                       help="the fleet's state in PostgreSQL instead of the data dir's (docs/fleet.md)")
    s.set_defaults(func=cmd_keys)

    s = sub.add_parser("state", help="move the control API's state between stores")
    state = s.add_subparsers(dest="state_command", required=True)
    c = state.add_parser("copy", help="copy every API, deployment, stage, domain, key... "
                                      "from one store to another (docs/fleet.md)")
    c.add_argument("--from", dest="source", required=True, metavar="sqlite:PATH|postgresql://...",
                   help="the store read: sqlite:DATA_DIR (or its fastgate.db), or a PostgreSQL URL")
    c.add_argument("--to", dest="dest", required=True, metavar="sqlite:PATH|postgresql://...",
                   help="the store written, in one transaction")
    c.add_argument("--replace", action="store_true",
                   help="the destination may hold entities: it ends up a copy of the source "
                        "(without this, a destination that is not empty is refused)")
    c.set_defaults(func=cmd_state_copy)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)
