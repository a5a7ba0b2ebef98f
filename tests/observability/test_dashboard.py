"""fastgate.observability.dashboard off the network: who must log in, reading the metrics text back,
percentiles from histogram buckets, and the 24 h history store."""

import sqlite3

import pytest

from fastgate._core.metrics import BUCKET_BOUNDS_S, SharedMetrics
from fastgate.observability.dashboard import (HISTORY_S, HistoryStore, figures, is_loopback, quantile, read_metrics,
                                requires_login)


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("127.255.255.254", True), ("::1", True),
    ("::ffff:127.0.0.1", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.1", False), ("192.168.1.5", False),
    ("fe80::1%eth0", False), ("2001:db8::1", False), ("localhost", False), ("", False)])
def test_who_must_log_in(host, loopback):
    assert is_loopback(host) is loopback
    assert requires_login(host) is not loopback


def test_read_metrics_gives_back_what_was_recorded():
    m = SharedMetrics.create(16)
    pets = m.request_series("GET /pets", "a1b2c3", "prod")
    odd = m.request_series('GET /x"y\\z', "", "")      # label escaping survives the round trip
    for latency in (0.0003, 0.002, 0.002, 0.04):
        m.record(pets, 200, latency, latency / 2)
    m.record(pets, 503, 0.7)
    m.record(odd, 404, 0.001)
    m.set(m.gauge_series("fastgate_upstream_healthy", {"upstream": "u", "target": "http://t"}), 1)
    r = read_metrics(m.render())
    s = r.series[("GET /pets", "a1b2c3", "prod")]
    assert s.status == [0, 4, 0, 0, 1] and s.requests == 5
    assert sum(s.duration) == 5 and sum(s.integration) == 4
    assert s.duration[0] == 1 and s.duration[BUCKET_BOUNDS_S.index(0.0025)] == 2
    assert s.duration_sum_s == pytest.approx(0.7443)
    assert r.series[('GET /x"y\\z', "", "")].status[3] == 1
    assert r.gauges["fastgate_upstream_healthy"] == [({"target": "http://t", "upstream": "u"}, 1)]
    # growth between two readings is what the live charts plot
    before = r
    m.record(pets, 200, 0.002)
    delta = read_metrics(m.render()).minus(before).series[("GET /pets", "a1b2c3", "prod")]
    assert delta.status == [0, 1, 0, 0, 0] and sum(delta.duration) == 1
    # a new table (a restarted gateway) counts from zero: the new value is the growth
    assert read_metrics(SharedMetrics.create(4).render()).minus(r).series == {}


def test_read_metrics_sums_the_series_of_a_stage_split_by_api_key():
    """A stage with api_key_label renders a route once per key plus once for requests
    without a key: the route is the sum of all of them, not the last one rendered."""
    m = SharedMetrics.create(16)
    route = m.request_series("GET /pets", "a1", "prod", api_key_label=True)
    k1, k2 = m.key_series(route, b"key1"), m.key_series(route, b"key2")
    for _ in range(3):
        m.record(k1, 200, 0.001)
    m.record(k1, 503, 0.2, 0.1)
    for _ in range(2):
        m.record(k2, 429, 0.002)
    m.record(route, 403, 0.0003)               # no key (refused before one was identified)
    text = m.render()
    assert text.count(b'fastgate_requests_total{') >= 3 * 5     # three label sets really rendered
    r = read_metrics(text)
    s = r.series[("GET /pets", "a1", "prod")]
    assert s.status == [0, 3, 0, 3, 1] and s.requests == 7
    assert sum(s.duration) == 7 and sum(s.integration) == 1
    assert s.duration_sum_s == pytest.approx(0.2073)
    assert figures(r.series.values())["requests"] == 7
    m.record(k2, 200, 0.001)
    delta = read_metrics(m.render()).minus(r).series[("GET /pets", "a1", "prod")]
    assert delta.status == [0, 1, 0, 0, 0] and sum(delta.duration) == 1


def test_quantile_interpolates_like_histogram_quantile():
    buckets = [0] * (len(BUCKET_BOUNDS_S) + 1)
    assert quantile(0.5, buckets) is None
    buckets[1] = 10          # ten requests in (0.5 ms, 1 ms]
    assert quantile(0.5, buckets) == pytest.approx(0.00075)
    assert quantile(1.0, buckets) == pytest.approx(0.001)
    buckets[0] = 10          # and ten in (0, 0.5 ms]
    assert quantile(0.25, buckets) == pytest.approx(0.00025)
    assert quantile(0.75, buckets) == pytest.approx(0.00075)
    only_inf = [0] * len(BUCKET_BOUNDS_S) + [3]
    assert quantile(0.99, only_inf) == BUCKET_BOUNDS_S[-1]   # +Inf: the highest finite bound


def test_figures_add_series_up():
    m = SharedMetrics.create(8)
    a, b = m.request_series("GET /a"), m.request_series("GET /b")
    for _ in range(3):
        m.record(a, 200, 0.001)
    m.record(b, 500, 0.001, 0.0005)
    f = figures(read_metrics(m.render()).series.values())
    assert (f["requests"], f["s2xx"], f["s5xx"], f["error_pct"], f["integration_requests"]) == (4, 3, 1, 25.0, 1)


def test_history_is_kept_across_reopening_and_trimmed_to_a_day(tmp_path):
    path = tmp_path / "data" / "dashboard.db"
    h = HistoryStore(path)
    now = 1_800_000_000.0
    h.add(int(now) - 120, {"requests": 0}, now)
    assert not path.exists()      # an idle gateway creates no data dir
    h.add(int(now) - 120, {"requests": 5, "s5xx": 1, "p95_ms": 2.5}, now)
    h.add(int(now) - 60, {"requests": 0}, now)   # once the file exists, quiet minutes are points too
    h.close()
    h = HistoryStore(path)
    assert [(p["t"], p["requests"], p["s5xx"], p["p95_ms"]) for p in h.read(now)] == [
        (int(now) - 120, 5, 1, 2.5), (int(now) - 60, 0, None, None)]
    later = now + HISTORY_S - 90   # a day on: the first minute is out, the second just in
    assert [p["t"] for p in h.read(later)] == [int(now) - 60]
    h.add(int(later) - 60, {"requests": 1}, later)
    h.close()
    with sqlite3.connect(path) as db:     # trimmed on disk, not only hidden
        assert [t for (t,) in db.execute("SELECT t FROM minutes ORDER BY t")] == [int(now) - 60, int(later) - 60]


def test_the_live_backlog_fills_the_time_before_the_live_points(tmp_path):
    """A page that opens gets the history's minutes of the last 5 minutes and the minute so
    far as per-second averages (the per-second points exist only while a page watches)."""
    from fastgate.observability.dashboard import Dashboard

    class Admin:
        sock = None
        metrics = SharedMetrics.create(16)

    d = Dashboard(Admin(), ring=None, data_dir=tmp_path)
    minute = 1_800_000_000                   # a minute boundary
    now = minute + 30.0
    d.history.add(minute - 360, {"requests": 60}, now)        # ended more than 5 minutes ago
    d.history.add(minute - 240, {"requests": 120, "s5xx": 6, "p95_ms": 3.0}, now)
    d.history.add(minute - 120, {"requests": 0}, now)
    d.history.add(minute - 60, {"requests": 30}, now)
    series = Admin.metrics.request_series("GET /pets", "", "")
    d.minute, d.minute_base = minute // 60, read_metrics(Admin.metrics.render())
    for _ in range(45):
        Admin.metrics.record(series, 200, 0.002)
    points = d.backlog(read_metrics(Admin.metrics.render()), now)
    assert [(p["t"], p["rps"], p["span_s"]) for p in points] == [
        (minute - 210, 2.0, 60), (minute - 90, 0.0, 60), (minute - 30, 0.5, 60), (minute + 15, 1.5, 30)]
    assert (points[0]["s5xx"], points[0]["error_pct"], points[0]["p95_ms"]) == (0.1, 5.0, 3.0)
    # with live points, only the minutes that ended before the first of them
    d.points.append({"t": minute - 100, "rps": 1.0})
    assert [p["t"] for p in d.backlog(None, now)] == [minute - 210, minute - 100]


def test_the_tail_is_counted_from_the_admin_process_start_not_from_the_dashboard(tmp_path):
    """The error-type breakdown counts the requests the workers served while the admin
    process loaded its state, before it made its Dashboard: from the supervisor's mark."""
    from fastgate._core.tail import TailRing
    from fastgate.observability.dashboard import Dashboard

    class Admin:
        sock = None
        metrics = SharedMetrics.create(16)

    ring = TailRing.create(16)
    ring.write(status=404, error="NOT_FOUND")              # before the admin process started
    since = (1_800_000_000.0, ring.head)
    ring.write(status=404, error="NOT_FOUND")              # while it loads its state
    ring.write(status=502, error="INTEGRATION_FAILURE")
    d = Dashboard(Admin(), ring=ring, data_dir=tmp_path / "a", since=since)
    ring.write(status=404, error="NOT_FOUND")              # once it is up
    d.read_tail()
    b = d.breakdown(read_metrics(Admin.metrics.render()))
    assert {r["type"]: r["requests"] for r in b["by_type"]} == {"NOT_FOUND": 2, "INTEGRATION_FAILURE": 1}
    assert (b["since_s"], b["by_type_exact"]) == (1_800_000_000, True)
    # without a mark a dashboard counts from its own making
    later = Dashboard(Admin(), ring=ring, data_dir=tmp_path / "b")
    later.read_tail()
    assert later.breakdown(read_metrics(Admin.metrics.render()))["by_type"] == []
