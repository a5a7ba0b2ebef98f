"""A fleet: three fastgate hosts sharing one real PostgreSQL (the control plane's state)
and one real Redis (limits). What boto3 deploys through one host's control API the others
serve; a key revoked on one is refused by all; with PostgreSQL stopped every host keeps
serving, changes get AWS's 503, a host restarted meanwhile serves its local copy, and once
PostgreSQL is back the next change reaches every host.

The hosts poll PostgreSQL only once a minute here, so a change can reach them in time only
by LISTEN/NOTIFY (tests/control/test_store_pg.py covers the poll)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from postgres_server import PostgresServer  # noqa: E402
from redis_server import RedisServer  # noqa: E402

from conftest import FRESH, Gateway, Upstream, free_port, wait_until  # noqa: E402
from test_api_keys import api_doc  # noqa: E402 (a mock API: /paid needs a key, /free not)

KEY, SECRET = "AKIAFASTGATEFLEET1", "fleet-test-secret-key"
ENV = {"FASTGATE_ADMIN_ACCESS_KEY_ID": KEY, "FASTGATE_ADMIN_SECRET_ACCESS_KEY": SECRET}
# generous: the machine is shared; bench/fleet_propagation.py measures the usual figure
# (docs/fleet.md)
PROPAGATION_DEADLINE_S = 10


@pytest.fixture(scope="module")
def pg():
    server = PostgresServer().start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def redis_server():
    r = RedisServer().start()
    yield r
    r.stop()


class Fleet:
    def __init__(self, root: Path, url: str, redis_url: str):
        self.root, self.url, self.redis_url = root, url, redis_url
        self.hosts: dict[str, Gateway] = {}

    def start(self, name: str) -> Gateway:
        d = self.root / name
        d.mkdir(exist_ok=True)
        gw = Gateway(d, f"""\
            access_log: {{path: 'off'}}
            data_dir: {d / 'state'}
            state: {{url: "{self.url}", poll_interval_ms: 60000}}
            redis: {{url: "{self.redis_url}"}}
            """, env=ENV)
        self.hosts[name] = gw
        return gw

    def stop(self) -> None:
        for gw in self.hosts.values():
            gw.stop()


@pytest.fixture
def fleet(tmp_path, pg, redis_server):
    if not pg.pid:      # a test that stopped it failed before starting it again
        pg.start()
    f = Fleet(tmp_path, pg.new_database(), redis_server.url)
    for name in ("a", "b", "c"):
        f.start(name)
    yield f
    f.stop()


def control(gw, retries: int = 3):
    return boto3.client("apigateway", endpoint_url=f"http://127.0.0.1:{gw.admin_port}",
                        region_name="us-east-1", aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                        config=Config(retries={"max_attempts": retries}))


def status(gw, path: str, key: str | None = None) -> int:
    return FRESH.get(gw.url + path, headers={"x-api-key": key} if key else {}).status_code


def served_everywhere(hosts, path: str, code: int, key: str | None = None) -> list[float]:
    """Seconds until each host answers `path` with `code` (AssertionError past the deadline)."""
    t0 = time.monotonic()
    took = []
    for gw in hosts:
        wait_until(lambda: status(gw, path, key) == code, timeout=PROPAGATION_DEADLINE_S, step=0.01)
        took.append(round(time.monotonic() - t0, 3))
    return took


def test_one_host_deploys_all_serve_a_key_revoked_on_another_is_refused_by_all(fleet):
    a, b, c = (fleet.hosts[n] for n in "abc")
    ca, cb = control(a), control(b)
    api_id = ca.import_rest_api(body=api_doc())["id"]
    assert status(b, "/prod/free") == 404
    ca.create_deployment(restApiId=api_id, stageName="prod")
    took = served_everywhere([b, c, a], "/prod/free", 200)
    print(f"\ndeployed on A: served on B, C, A after {took} s")
    assert FRESH.get(c.url + "/prod/free").json() == {"ok": True}
    # B's control API reads what A wrote
    assert [x["id"] for x in cb.get_rest_apis()["items"]] == [api_id]
    assert cb.get_stage(restApiId=api_id, stageName="prod")["deploymentId"]

    # a key and a usage plan whose quota (in the one Redis) counts calls on every host
    key = ca.create_api_key(name="partner", enabled=True)
    plan = ca.create_usage_plan(name="gold", apiStages=[{"apiId": api_id, "stage": "prod"}],
                                quota={"limit": 5, "period": "DAY"})
    ca.create_usage_plan_key(usagePlanId=plan["id"], keyId=key["id"], keyType="API_KEY")
    served_everywhere([a, b, c], "/prod/paid", 200, key["value"])   # one counted call per host
    assert [status(h, "/prod/paid", key["value"]) for h in (b, c, a)] == [200, 200, 429]
    assert status(b, "/prod/paid", key["value"]) == 429

    # revoked on B: refused by all three
    cb.update_api_key(apiKey=key["id"], patchOperations=[
        {"op": "replace", "path": "/enabled", "value": "false"}])
    took = served_everywhere([a, c, b], "/prod/paid", 403, key["value"])
    print(f"key disabled on B: refused on A, C, B after {took} s")
    cb.delete_api_key(apiKey=key["id"])
    served_everywhere([a, b, c], "/prod/paid", 403, key["value"])
    with pytest.raises(ClientError) as e:
        control(c).get_api_key(apiKey=key["id"])
    assert e.value.response["Error"]["Code"] == "NotFoundException"


def test_an_http_api_made_through_apigatewayv2_on_one_host_is_served_by_all(fleet):
    """apigatewayv2's HTTP APIs live in the same store: quick create on C (a $default stage
    deployed automatically), served by A and B by its execute-api host; deleted on A, gone
    everywhere."""
    a, b, c = (fleet.hosts[n] for n in "abc")
    up = Upstream("fleet-v2")
    try:
        v2 = boto3.client("apigatewayv2", endpoint_url=f"http://127.0.0.1:{c.admin_port}",
                          region_name="us-east-1", aws_access_key_id=KEY,
                          aws_secret_access_key=SECRET, config=Config(retries={"max_attempts": 1}))
        api_id = v2.create_api(Name="quick", ProtocolType="HTTP", Target=f"{up.url}/echo")["ApiId"]
        host = {"Host": f"{api_id}.execute-api.localhost"}

        def code(gw) -> int:
            return FRESH.get(gw.url + "/pets", headers=host).status_code
        for gw in (a, b, c):
            wait_until(lambda: code(gw) == 200, timeout=PROPAGATION_DEADLINE_S, step=0.01)
        seen = FRESH.get(b.url + "/pets", headers=host).json()
        assert seen["path"] == "/echo"          # quick create: the URL called as it is
        assert [x["ApiId"] for x in boto3.client(
            "apigatewayv2", endpoint_url=f"http://127.0.0.1:{b.admin_port}", region_name="us-east-1",
            aws_access_key_id=KEY, aws_secret_access_key=SECRET).get_apis()["Items"]] == [api_id]

        boto3.client("apigatewayv2", endpoint_url=f"http://127.0.0.1:{a.admin_port}",
                     region_name="us-east-1", aws_access_key_id=KEY,
                     aws_secret_access_key=SECRET).delete_api(ApiId=api_id)
        for gw in (a, b, c):
            wait_until(lambda: code(gw) in (403, 404), timeout=PROPAGATION_DEADLINE_S, step=0.01)
    finally:
        up.stop()


def test_postgres_down_hosts_serve_writes_get_503_a_restarted_host_serves_its_copy(fleet, pg):
    a, b, c = (fleet.hosts[n] for n in "abc")
    ca = control(a)
    api_id = ca.import_rest_api(body=api_doc())["id"]
    ca.create_deployment(restApiId=api_id, stageName="prod")
    served_everywhere([a, b, c], "/prod/free", 200)

    pg.stop()
    try:
        for gw in (a, b, c):
            assert status(gw, "/prod/free") == 200
        for gw in (a, b):
            with pytest.raises(ClientError) as e:
                control(gw, retries=1).create_deployment(restApiId=api_id, stageName="beta")
            err = e.value.response
            assert err["ResponseMetadata"]["HTTPStatusCode"] == 503
            assert err["Error"]["Code"] == "ServiceUnavailableException"
            assert err["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "1"
            assert "unreachable" in err["Error"]["Message"]
        # apigatewayv2 writes to the same store: refused the same way
        v2 = boto3.client("apigatewayv2", endpoint_url=f"http://127.0.0.1:{c.admin_port}",
                          region_name="us-east-1", aws_access_key_id=KEY,
                          aws_secret_access_key=SECRET, config=Config(retries={"max_attempts": 1}))
        with pytest.raises(ClientError) as e:
            v2.create_api(Name="refused", ProtocolType="HTTP")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert e.value.response["Error"]["Code"] == "ServiceUnavailableException"
        assert v2.get_apis()["Items"] == []
        # reads answer from the host's copy
        assert [x["id"] for x in control(b).get_rest_apis()["items"]] == [api_id]
        ready = httpx.get(f"http://127.0.0.1:{a.admin_port}/ready", timeout=5).json()
        assert ready["status"] == "ok" and ready["writable"] is False

        # C restarts while the database is down: it serves the copy it saved
        c.stop()
        c = fleet.start("c")
        assert status(c, "/prod/free") == 200
        assert "serving the local copy" in c.p.wait_output("serving the local copy", timeout=10)
        assert status(c, "/beta/free") != 200
    finally:
        pg.start()

    # the next change reaches every host, the restarted one too
    cb = control(b)
    t0 = time.monotonic()
    while True:
        try:
            cb.create_deployment(restApiId=api_id, stageName="beta")
            break
        except ClientError as e:    # B retries its connection one second after a failure
            assert e.response["Error"]["Code"] == "ServiceUnavailableException"
            assert time.monotonic() - t0 < PROPAGATION_DEADLINE_S
            time.sleep(0.2)
    took = served_everywhere([a, b, c], "/beta/free", 200)
    print(f"\nafter the outage, deployed on B: served on A, B, C after {took} s")
    ready = httpx.get(f"http://127.0.0.1:{a.admin_port}/ready", timeout=5).json()
    assert ready["status"] == "ok" and "writable" not in ready


# ---- the command line

FASTGATE = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "fastgate")


def run(*args, stdin: str | None = None):
    import subprocess
    return subprocess.run([FASTGATE, *args], capture_output=True, text=True, timeout=60, input=stdin)


def test_state_copy_moves_a_hosts_state_into_the_fleet_and_back(tmp_path, pg):
    """A single host's SQLite (made with `fastgate keys create`) into the fleet's PostgreSQL
    with `fastgate state copy`, a fleet host serving it, and the way back."""
    if not pg.pid:
        pg.start()
    url = pg.new_database()
    one = tmp_path / "one"
    made = run("keys", "create", "partner", "--data-dir", str(one))
    assert made.returncode == 0, made.stderr
    key_id = made.stdout.split("\t")[0]

    r = run("state", "copy", "--from", f"sqlite:{one}", "--to", url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"copied 1 entities from sqlite:{one} to {url} (its version is now 1)"
    listed = run("keys", "list", "--state", url, "--data-dir", str(tmp_path / "fleet-host"))
    assert listed.returncode == 0 and f"{key_id}\tpartner\ttrue" in listed.stdout

    # a destination that holds entities is refused, unless --replace
    again = run("state", "copy", "--from", f"sqlite:{one}", "--to", url)
    assert again.returncode == 1 and "already holds 1 entities; --replace" in again.stderr
    more = run("keys", "create", "second", "--state", url, "--data-dir", str(tmp_path / "fleet-host"))
    assert more.returncode == 0, more.stderr
    back = run("state", "copy", "--from", url, "--to", f"sqlite:{tmp_path / 'back'}")
    assert back.returncode == 0 and "copied 2 entities" in back.stdout
    listed = run("keys", "list", "--data-dir", str(tmp_path / "back"))
    assert {line.split("\t")[1] for line in listed.stdout.splitlines()[1:]} == {"partner", "second"}
    replaced = run("state", "copy", "--from", f"sqlite:{one}", "--to", url, "--replace")
    assert replaced.returncode == 0 and "its version is now 3" in replaced.stdout
    listed = run("keys", "list", "--state", url, "--data-dir", str(tmp_path / "fleet-host"))
    assert [line.split("\t")[1] for line in listed.stdout.splitlines()[1:]] == ["partner"]

    # a host that joins the fleet with its own SQLite state is told it is not served any more
    gw = Gateway(tmp_path, f"""\
        data_dir: {one}
        state: {{url: "{url}"}}
        """, env=ENV)
    try:
        gw.p.wait_output(f"{one}'s SQLite holds 1 entities that this fleet host does not serve")
    finally:
        gw.stop()

    for args, message in (
            (("--from", f"sqlite:{tmp_path / 'nothing'}", "--to", url), "no fastgate state at"),
            (("--from", "mysql://db/x", "--to", url), "expected sqlite:PATH or postgresql://"),
            (("--from", url, "--to", "postgresql://fastgate@127.0.0.1:1/x"), "unreachable")):
        r = run("state", "copy", *args)
        assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_serve_state_flag_and_an_unreachable_database_without_a_copy(tmp_path):
    bad = run("serve", "--state", "mysql://db/x", "--data-dir", str(tmp_path))
    assert bad.returncode == 2
    assert "--state: expected a postgresql://USER@HOST/DB URL, got 'mysql://db/x'" in bad.stderr
    cfg = tmp_path / "g.yaml"
    cfg.write_text("listeners: [{address: 127.0.0.1:1}]\nstate: {url: 'postgresql://u:secret@h/db?x=1'}\n")
    bad = run("serve", "-c", str(cfg))
    assert bad.returncode == 2 and "state.url: invalid PostgreSQL URL" in bad.stderr
    assert "secret" not in bad.stderr
    # nothing listens on port 1: no database, and no copy to serve meanwhile
    down = run("serve", "--state", "postgresql://fastgate:pw@127.0.0.1:1/x",
               "--data-dir", str(tmp_path / "empty"), "--listen", f"127.0.0.1:{free_port()}")
    assert down.returncode == 1 and "Traceback" not in down.stderr
    assert "cannot read the state from postgresql://fastgate:***@127.0.0.1:1/x" in down.stderr
    assert "there is no local copy in" in down.stderr
