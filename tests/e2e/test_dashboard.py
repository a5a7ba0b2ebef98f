"""The dashboard on the admin listener, end to end: a real gateway takes a known mix of
requests, then Debian's chromium (headless, driven by selenium through chromedriver)
opens /dashboard and must show exactly those numbers, the test's own request in the live
tail, live chart points, a 24 h history kept in the data dir, and no console errors.
The JSON endpoints, the event stream and the login rule are checked with plain clients."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import sqlite3
import textwrap
import time
import uuid

import httpx
import pytest

from conftest import ROOT, Gateway, Proc, free_port, wait_port, wait_until

# Debian's chromium and chromium-driver, which `./build.sh test` installs when absent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

N_OK, N_MOCK, N_404, N_500 = 7, 5, 3, 2      # the traffic the test sends


def config(upstream_url: str) -> str:
    return textwrap.dedent(f"""\
        access_log: {{path: 'off'}}
        upstreams:
          backend:
            targets: [{upstream_url}]
            health_check: {{path: /health, interval_ms: 500, timeout_ms: 400}}
        routes:
          - path: /mock
            integration: {{type: mock, body: mocked}}
          - path: /echo/{{proxy+}}
            integration: {{type: http, upstream: backend}}
          - path: /status/{{code}}
            integration: {{type: http, upstream: backend}}
        """)


def send_traffic(g: Gateway) -> str:
    """The known mix; returns the request id of one request with a unique path."""
    marker = f"/echo/tail-{uuid.uuid4().hex[:12]}"
    with httpx.Client(base_url=g.url, timeout=5) as c:
        for _ in range(N_OK - 1):
            assert c.get("/echo/x").status_code == 200
        r = c.get(marker)
        assert r.status_code == 200
        rid = r.headers["x-request-id"]
        for _ in range(N_MOCK):
            assert c.get("/mock").status_code == 200
        for _ in range(N_404):
            assert c.get("/nowhere").status_code == 404
        for _ in range(N_500):
            assert c.get("/status/500").status_code == 500
    return marker, rid


def summary(g: Gateway, **kw) -> dict:
    r = httpx.get(f"http://127.0.0.1:{g.admin_port}/dashboard/api/summary", timeout=5, **kw)
    assert r.status_code == 200, r.text
    return r.json()


def until_summary(g: Gateway, pred, timeout: float = 10.0) -> dict:
    """The first summary pred accepts; on timeout an AssertionError showing the last one."""
    last = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = summary(g)
        if pred(last):
            return last
        time.sleep(0.1)
    raise AssertionError(f"summary never matched: tiles {last.get('tiles')}, "
                         f"by type {last.get('breakdown', {}).get('by_type')}")


@pytest.fixture
def dash(up, tmp_path):
    data = tmp_path / "data"
    # a minute from an earlier run of the gateway: the 24 h chart must show it after a restart
    data.mkdir()
    earlier = int(time.time() // 60 - 30) * 60
    with sqlite3.connect(data / "dashboard.db") as db:
        db.execute("CREATE TABLE minutes (t INTEGER PRIMARY KEY, requests REAL, s4xx REAL, s5xx REAL, "
                   "throttled REAL, p50_ms REAL, p95_ms REAL, p99_ms REAL, integration_p50_ms REAL)")
        db.execute("INSERT INTO minutes VALUES (?, 42, 1, 2, 0, 1.5, 3.0, 4.0, 1.0)", (earlier,))
        db.execute("INSERT INTO minutes VALUES (?, 99, 0, 0, 0, 1, 1, 1, 1)", (earlier - 2 * 86400,))
    g = Gateway(tmp_path, config(up.url), workers=2, env={"FASTGATE_DATA_DIR": str(data)})
    yield g, earlier
    g.stop()


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1800", "--no-first-run", "--disable-background-networking"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def text(driver, css: str) -> str:
    return driver.find_element("css selector", css).text.strip()


def console_errors(driver) -> list:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_page_shows_the_traffic_sent(dash):
    g, earlier = dash
    marker, rid = send_traffic(g)
    total = N_OK + N_MOCK + N_404 + N_500
    # the workers' counters are shared memory: the admin's next tick sees all of them
    until_summary(g, lambda s: s["tiles"]["requests"] == total)

    driver = browser()
    try:
        driver.get(f"http://127.0.0.1:{g.admin_port}/dashboard")
        wait_until(lambda: text(driver, "#tile-requests .value") == str(total), timeout=15)
        assert text(driver, "#tile-errors .sub") == f"4xx {N_404} · 5xx {N_500}"
        assert text(driver, "#tile-errors .value") == f"{round(100 * (N_404 + N_500) / total, 2)}%"
        assert text(driver, "#tile-p50 .value") not in ("", "–")
        assert text(driver, "#tile-integration .value") not in ("", "–")   # the upstream requests

        # API/stage table: the top-level routes form one group; its routes drill down on click
        group = driver.find_element("css selector", '#apis tr.group[data-group="gateway"]')
        assert group.find_element("css selector", "td.requests").text == str(total)
        rows = driver.find_elements("css selector", '#apis tr.route[data-group="gateway"]')
        assert rows and not any(r.is_displayed() for r in rows)
        group.click()
        counts = {r.get_attribute("data-route"): r.find_element("css selector", "td.requests").text
                  for r in driver.find_elements("css selector", '#apis tr.route[data-group="gateway"]')
                  if r.is_displayed()}
        assert counts == {"ANY /echo/{proxy+}": str(N_OK), "ANY /status/{code}": str(N_500),
                          "ANY /mock": str(N_MOCK), "unmatched": str(N_404)}, counts
        top = driver.find_elements("css selector", "#top-routes tbody tr")
        assert top[0].get_attribute("data-route") == "ANY /echo/{proxy+}"
        assert text(driver, '#by-class tr[data-class="5xx"] td.requests') == str(N_500)
        assert text(driver, '#by-class tr[data-class="4xx"] td.requests') == str(N_404)
        assert "healthy" in text(driver, "#upstreams tbody")

        # the live tail has the test's own request, and its filters narrow it down
        row = wait_until(lambda: driver.find_elements("css selector", f'#tail tr[data-request-id="{rid}"]'),
                         timeout=10)[0]
        assert marker in row.text and row.is_displayed()
        driver.find_element("css selector", "#filter-status").send_keys("5xx")
        visible = [r for r in driver.find_elements("css selector", "#tail tbody tr") if r.is_displayed()]
        assert len(visible) == N_500 and all(r.get_attribute("data-status") == "500" for r in visible)
        assert not row.is_displayed()
        driver.find_element("css selector", "#filter-status").clear()
        driver.find_element("css selector", "#filter-route").send_keys(marker[-12:])
        visible = [r for r in driver.find_elements("css selector", "#tail tbody tr") if r.is_displayed()]
        assert [r.get_attribute("data-request-id") for r in visible] == [rid]

        # live charts get a point a second over the event stream; traffic now shows on them
        before = int(driver.find_element("css selector", "#chart-rps").get_attribute("data-points"))
        with httpx.Client(base_url=g.url) as c:
            for _ in range(3):
                c.get("/mock")
        wait_until(lambda: int(driver.find_element("css selector", "#chart-rps")
                               .get_attribute("data-points")) >= before + 3, timeout=10)
        wait_until(lambda: text(driver, "#tile-requests .value") == str(total + 3), timeout=10)
        assert driver.find_elements("css selector", "#chart-rps canvas")
        # the earlier run's minute is on the 24 h chart; the one older than 24 h is not (a
        # minute of this run may be there too when the test crossed a minute boundary)
        history = httpx.get(f"http://127.0.0.1:{g.admin_port}/dashboard/api/history").json()["points"]
        assert history[0]["t"] == earlier and all(p["t"] > time.time() - 86400 for p in history)
        shown = int(driver.find_element("css selector", "#chart-history").get_attribute("data-points"))
        assert 1 <= shown <= len(history)

        assert console_errors(driver) == []
    finally:
        driver.quit()


def test_summary_and_history_endpoints(dash):
    g, earlier = dash
    send_traffic(g)
    total = N_OK + N_MOCK + N_404 + N_500
    s = until_summary(g, lambda s: s["tiles"]["requests"] == total)
    t = s["tiles"]
    assert (t["s2xx"], t["s4xx"], t["s5xx"]) == (N_OK + N_MOCK, N_404, N_500)
    assert t["integration_requests"] == N_OK + N_500 and t["cache_hit_ratio"] is None
    assert t["p50_ms"] <= t["p95_ms"] <= t["p99_ms"]
    (group,) = s["apis"]
    assert (group["api"], group["stage"], group["requests"]) == ("", "", total)
    assert s["upstreams"] == [{"upstream": "backend", "target": s["upstreams"][0]["target"],
                               "checked": True, "healthy": True, "connections": s["upstreams"][0]["connections"]}]
    assert s["keys"]["keys"] == [] and s["keys"]["note"]
    assert s["login"] is False
    # gateway responses by type, from the tail: the 404s are the gateway's own NOT_FOUND
    until_summary(g, lambda s: {r["type"]: r["requests"] for r in s["breakdown"]["by_type"]}
                  == {"NOT_FOUND": N_404}, timeout=5)
    h = httpx.get(f"http://127.0.0.1:{g.admin_port}/dashboard/api/history").json()
    assert h["step_s"] == 60 and h["points"][0]["t"] == earlier
    assert all(p["t"] > time.time() - 86400 for p in h["points"])   # not the 2-day-old minute
    assert h["points"][0]["requests"] == 42
    # files outside the static directory are never served
    for bad in ("/dashboard/static/../dashboard.py", "/dashboard/static/.hidden.js", "/dashboard/nope"):
        assert httpx.get(f"http://127.0.0.1:{g.admin_port}{bad}").status_code == 404


def read_events(port: int, n: int, timeout: float = 10.0) -> tuple[socket.socket, list[tuple[str, dict]]]:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(b"GET /dashboard/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    buf, events = b"", []
    while len(events) < n:
        chunk = s.recv(65536)
        assert chunk, "stream closed"
        buf += chunk
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            if b"HTTP/1.1 200" in block:
                assert b"text/event-stream" in block
                block = block.split(b"\r\n\r\n", 1)[1]
            fields = dict(line.split(b": ", 1) for line in block.split(b"\n") if b": " in line)
            if b"event" in fields:
                events.append((fields[b"event"].decode(), json.loads(fields[b"data"])))
    return s, events


def test_event_stream_serves_several_pages_and_notices_them_leave(dash):
    g, _ = dash
    a, ev_a = read_events(g.admin_port, 1)
    b, ev_b = read_events(g.admin_port, 1)
    assert ev_a[0][0] == ev_b[0][0] == "hello"
    with httpx.Client(base_url=g.url) as c:
        rid = c.get("/mock").headers["x-request-id"]
    seen = []
    for sock in (a, b):
        sock.settimeout(10)
        deadline = time.monotonic() + 10
        buf = b""
        while rid.encode() not in buf and time.monotonic() < deadline:
            buf += sock.recv(65536)
        seen.append(rid.encode() in buf)
    assert seen == [True, True]       # both pages got the tail entry of the same request
    assert summary(g)["streams"] == 2
    a.close()
    b.close()
    wait_until(lambda: summary(g)["streams"] == 0, timeout=5)   # noticed without a write failing
    # closed pages are dropped: a fresh stream still gets its ticks
    c, ev = read_events(g.admin_port, 3)
    assert [e for e, _ in ev] == ["hello", "tick", "tick"]
    assert ev[1][1]["point"] is not None and "tiles" in ev[1][1]
    c.close()


def test_login_required_off_loopback(up, tmp_path):
    """Bound to 0.0.0.0 (every interface, so not loopback) the dashboard asks for the admin
    credentials; the test still connects over 127.0.0.1, as nothing leaves this machine."""
    port, admin_port = free_port(), free_port()
    path = tmp_path / "gateway.yaml"
    path.write_text(f"workers: 1\nlisteners:\n  - address: 127.0.0.1:{port}\n"
                    f"admin:\n  listen: 0.0.0.0:{admin_port}\n" + config(up.url))
    env = {**os.environ, "FASTGATE_ADMIN_ACCESS_KEY_ID": "AKIDDASHBOARD",
           "FASTGATE_ADMIN_SECRET_ACCESS_KEY": "s3cret", "FASTGATE_DATA_DIR": str(tmp_path / "data")}
    p = Proc([str(ROOT / ".venv" / "bin" / "fastgate"), "serve", "-c", str(path)], cwd=str(tmp_path), env=env)
    try:
        wait_port(admin_port, p.proc)
        base = f"http://127.0.0.1:{admin_port}"
        for page in ("/dashboard", "/dashboard/api/summary", "/dashboard/events", "/dashboard/static/dashboard.js"):
            r = httpx.get(base + page, timeout=5)
            assert r.status_code == 401, page
            assert r.headers["www-authenticate"].startswith("Basic ")
        assert httpx.get(base + "/dashboard", auth=("AKIDDASHBOARD", "wrong")).status_code == 401
        assert httpx.get(base + "/dashboard", auth=("someone", "s3cret")).status_code == 401
        r = httpx.get(base + "/dashboard", auth=("AKIDDASHBOARD", "s3cret"))
        assert r.status_code == 200 and "<title>fastgate dashboard</title>" in r.text
        r = httpx.get(base + "/dashboard/api/summary", auth=("AKIDDASHBOARD", "s3cret"))
        assert r.status_code == 200 and r.json()["login"] is True
    finally:
        p.stop()


def test_basic_auth_header_parsing():
    from fastgate.observability.dashboard import basic_auth_ok

    def h(user, password):
        return [("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())]
    assert basic_auth_ok(h("id", "pw"), "id", "pw")
    assert not basic_auth_ok(h("id", "pw"), "id", "other")
    assert not basic_auth_ok(h("id", "pw"), "", "")          # nothing configured: nobody gets in
    assert not basic_auth_ok([("Authorization", "Basic !!!")], "id", "pw")
    assert not basic_auth_ok([("Authorization", "Bearer x")], "id", "pw")
    assert not basic_auth_ok([], "id", "pw")
    assert basic_auth_ok(h("id", "pw:with:colons"), "id", "pw:with:colons")


def test_key_table_shows_usage_against_quota_and_errors(tmp_path, upstream):
    """Per-key rows from the usage table: what the plan's quota has counted this period
    against its limit, and today's requests, throttled, 4xx and 5xx, as sent."""
    from test_usage import KEY, SECRET, deploy   # tests/e2e/test_usage.py
    state = tmp_path / "state"
    g = Gateway(tmp_path, f"""\
        access_log: {{path: 'off'}}
        data_dir: {state}
        """, workers=2, env={"FASTGATE_ADMIN_ACCESS_KEY_ID": KEY, "FASTGATE_ADMIN_SECRET_ACCESS_KEY": SECRET})
    driver = None
    try:
        c, api_id = deploy(g, upstream)
        plan = c.create_usage_plan(name="silver", apiStages=[{"apiId": api_id, "stage": "prod"}],
                                   throttle={"rateLimit": 0.001, "burstLimit": 6},
                                   quota={"limit": 20, "period": "DAY"})
        one = c.create_api_key(name="one", enabled=True)
        two = c.create_api_key(name="two", enabled=True)
        for k in (one, two):
            c.create_usage_plan_key(usagePlanId=plan["id"], keyId=k["id"], keyType="API_KEY")
        with httpx.Client(base_url=f"{g.url}/prod", timeout=10) as h:
            def call(key, path):
                return h.get(path, headers={"x-api-key": key["value"]}).status_code
            # key two's first pass tells the keys are served (403 until then, not metered)
            assert wait_until(lambda: call(two, "/ok") == 200, timeout=15)
            # key one: burst 6 -> 4 ok, a 404, a 500 pass; then 2 throttled
            codes = [call(one, p) for p in ("/ok", "/ok", "/missing", "/broken", "/ok", "/ok", "/ok", "/ok")]
            assert codes == [200, 200, 404, 500, 200, 200, 429, 429], codes

        def row(s, key):
            return next(r for r in s["keys"]["keys"] if r["id"] == key["id"])
        s = until_summary(g, lambda s: row(s, one)["requests"] == 8 and row(s, two)["requests"] == 1)
        r1, r2 = row(s, one), row(s, two)
        assert {k: r1[k] for k in ("plan", "used", "quota_limit", "quota_period", "remaining", "used_pct",
                                   "requests", "throttled", "s4xx", "s5xx", "metered")} == {
            "plan": "silver", "used": 6, "quota_limit": 20, "quota_period": "DAY", "remaining": 14,
            "used_pct": 30.0, "requests": 8, "throttled": 2, "s4xx": 3, "s5xx": 1, "metered": True}
        assert (r2["used"], r2["remaining"], r2["requests"], r2["s4xx"], r2["s5xx"]) == (1, 19, 1, 0, 0)

        driver = browser()
        driver.get(f"http://127.0.0.1:{g.admin_port}/dashboard")

        def cells(key):
            for tr in driver.find_elements("css selector", "#keys tbody tr"):
                tds = [td.text.strip() for td in tr.find_elements("css selector", "td")]
                if tds and tds[0] == key["id"]:
                    return tds
            return None
        wait_until(lambda: cells(one) is not None, timeout=15)
        assert cells(one) == [one["id"], "one", "silver", "6 / 20 per day (30%)", "14", "8", "2", "3", "1"]
        assert cells(two) == [two["id"], "two", "silver", "1 / 20 per day (5%)", "19", "1", "0", "0", "0"]
        assert console_errors(driver) == []
    finally:
        if driver is not None:
            driver.quit()
        g.stop()


def history_db(data, rows) -> None:
    """dashboard.db as an earlier run of the gateway left it: (t, requests, 4xx, 5xx, p95)."""
    data.mkdir(exist_ok=True)
    with sqlite3.connect(data / "dashboard.db") as db:
        db.execute("CREATE TABLE minutes (t INTEGER PRIMARY KEY, requests REAL, s4xx REAL, s5xx REAL, "
                   "throttled REAL, p50_ms REAL, p95_ms REAL, p99_ms REAL, integration_p50_ms REAL)")
        for t, requests, s4xx, s5xx, p95 in rows:
            db.execute("INSERT INTO minutes VALUES (?, ?, ?, ?, 0, 1.0, ?, ?, 1.0)",
                       (t, requests, s4xx, s5xx, p95, p95 * 2))


def test_cache_tile_and_live_charts_that_open_filled(up, tmp_path):
    """The cache tile shows the stage caches' hit ratio (it said "no response cache" whatever
    happened), and live charts opened now start with the minutes the admin kept instead of
    empty (they filled one point a second from the page's opening)."""
    data = tmp_path / "data"
    minute = int(time.time() // 60) * 60
    # the two minutes before the last one, from an earlier run: inside the live charts' 5 minutes
    history_db(data, [(minute - 180, 600, 60, 6, 4.0), (minute - 120, 1200, 30, 0, 6.0)])
    (tmp_path / "api.json").write_text(json.dumps({
        "swagger": "2.0", "info": {"title": "Cached", "version": "1"},
        "paths": {"/pets": {"get": {"x-amazon-apigateway-integration": {
            "type": "http_proxy", "httpMethod": "GET", "uri": f"{up.url}/echo/pets"}}}}}))
    g = Gateway(tmp_path, config(up.url) + textwrap.dedent("""\
        apis:
          - {openapi: api.json, id: cachedash, stages: {prod: {cache_ttl_s: 300}}}
        """), env={"FASTGATE_DATA_DIR": str(data)})
    driver = None
    try:
        with httpx.Client(base_url=g.url, timeout=5) as c:
            caches = [c.get("/prod/pets").headers["x-cache"] for _ in range(4)]
        assert caches == ["Miss", "Hit", "Hit", "Hit"]
        s = until_summary(g, lambda s: s["tiles"]["cache_hits"] == 3)
        assert (s["tiles"]["cache_misses"], s["tiles"]["cache_hit_ratio"]) == (1, 0.75)
        # the backlog a page gets: each kept minute as per-second averages, then the minute so far
        first, second = s["points"][:2]
        assert (first["t"], first["rps"], first["s4xx"], first["p95_ms"]) == (minute - 150, 10.0, 1.0, 4.0)
        assert (second["t"], second["rps"], second["s4xx"], second["span_s"]) == (minute - 90, 20.0, 0.5, 60)

        driver = browser()
        opened = time.time()
        driver.get(f"http://127.0.0.1:{g.admin_port}/dashboard")
        wait_until(lambda: text(driver, "#tile-cache .value") == "75.0%", timeout=15)
        assert text(driver, "#tile-cache .sub") == "3 hits · 1 miss"
        # the charts hold the kept minutes from the start, before a second of live points
        times = driver.execute_script("return live.t.slice()")
        assert len(times) >= 2 and times[:2] == [minute - 150, minute - 90], times
        assert int(driver.find_element("css selector", "#chart-rps").get_attribute("data-points")) >= 2
        assert "one point a minute" in text(driver, "#live-note")
        # live points follow them, one a second
        wait_until(lambda: driver.execute_script("return live.t[live.t.length - 1]") >= opened, timeout=10)
        driver.save_screenshot(str(tmp_path / "dashboard.png"))
        assert console_errors(driver) == []
    finally:
        if driver is not None:
            driver.quit()
        g.stop()
