"""The analytics dashboard of the admin listener: /dashboard and what the page reads.

Everything here runs in the admin process, off the request path. The numbers come
from the two shared-memory tables the workers write: SharedMetrics (counters and
latency histograms per route, summed over workers; read through its Prometheus
text, the same view /metrics gives) and the request tail ring
(fastgate._core.tail; the live tail, and the counts per gateway-response type).

    GET /dashboard                 the page (plain HTML + JS + the vendored uPlot)
    GET /dashboard/static/NAME     its files
    GET /dashboard/api/summary     one JSON snapshot: tiles, API/stage/route tables, ...
    GET /dashboard/api/history     the last 24 h, one point a minute (kept in the data dir)
    GET /dashboard/events          server-sent events: one a second, the last second's
                                   figures and the tail entries since the previous event

One ticker task reads both tables once a second, whatever the number of pages open,
and fans the result out to every event stream; it also closes a one-minute point into
the history store at each minute boundary, so the 24 h chart has data for minutes
nobody watched.

Access: an admin listener bound to a loopback address serves the dashboard to anyone
who can connect (only this machine can); bound to any other address it asks for HTTP
basic auth with the admin credentials (FASTGATE_ADMIN_ACCESS_KEY_ID as user,
FASTGATE_ADMIN_SECRET_ACCESS_KEY as password).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import ipaddress
import os
import re
import sqlite3
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from fastgate._core.metrics import BUCKET_BOUNDS_S

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"   # fastgate/static
STATIC_TYPES = {".html": b"text/html; charset=utf-8", ".js": b"text/javascript; charset=utf-8",
                ".css": b"text/css; charset=utf-8"}
# default-src 'self': the page must work with no internet, so nothing may come from elsewhere
# (a CDN link would show as a console error in the browser test). uPlot sizes its
# elements through inline styles.
CSP = b"default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:"

TICK_S = 1.0                  # one live point a second
LIVE_POINTS = 300             # seconds of live points kept for a page that opens now
RECENT_TAIL = 500             # tail entries kept for a page that opens now
HISTORY_S = 24 * 3600         # the history store keeps this much
HISTORY_FILE = "dashboard.db"  # in the data dir, beside the control API's fastgate.db
CLIENT_QUEUE = 30             # events a slow page may fall behind before it is dropped
WRITE_TIMEOUT_S = 10.0        # a page that reads nothing for this long is dropped
THROTTLE_TYPES = ("THROTTLED", "QUOTA_EXCEEDED")
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
N_BUCKETS = len(BUCKET_BOUNDS_S) + 1   # the finite bounds and +Inf


# ---------------------------------------------------------------- access

def tail_mark(ring=None) -> tuple[float, int]:
    """(now in epoch s, the request tail's next ticket): where a Dashboard starts counting.
    ring: the installed one by default."""
    from fastgate._core import tail
    ring = ring if ring is not None else tail.installed()
    return time.time(), ring.head if ring is not None else 0


def is_loopback(host: str) -> bool:
    """Whether a bound address is reachable from this machine only: 127.0.0.0/8, ::1,
    and ::ffff:127.x.y.z. The unspecified 0.0.0.0 / :: is every interface, so no."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False   # a name, not an address: never trusted
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def requires_login(bound_host: str) -> bool:
    """The dashboard asks for the admin credentials unless its listener is loopback-only."""
    return not is_loopback(bound_host)


def basic_auth_ok(headers: list[tuple[str, str]], key_id: str, secret: str) -> bool:
    """Whether an Authorization: Basic header carries key_id:secret (constant-time compare;
    with no credentials configured nothing matches)."""
    if not key_id or not secret:
        return False
    for name, value in headers:
        if name.lower() != "authorization":
            continue
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        # both compares always run: the time taken says nothing about which part was wrong
        ok_user = hmac.compare_digest(user.encode(), key_id.encode())
        ok_password = hmac.compare_digest(password.encode(), secret.encode())
        return bool(sep) and ok_user and ok_password
    return False


# ---------------------------------------------------------------- reading the metrics

@dataclass
class Series:
    """One request series of SharedMetrics: a route of an API stage (or a top-level route)."""
    route: str
    api: str
    stage: str
    status: list[int] = field(default_factory=lambda: [0] * 5)        # by class, 1xx..5xx
    duration: list[int] = field(default_factory=lambda: [0] * N_BUCKETS)   # per bucket, not cumulative
    duration_sum_s: float = 0.0
    integration: list[int] = field(default_factory=lambda: [0] * N_BUCKETS)
    integration_sum_s: float = 0.0

    @property
    def requests(self) -> int:
        return sum(self.status)

    def plus(self, other: "Series") -> "Series":
        return Series(self.route, self.api, self.stage,
                      [a + b for a, b in zip(self.status, other.status)],
                      [a + b for a, b in zip(self.duration, other.duration)],
                      self.duration_sum_s + other.duration_sum_s,
                      [a + b for a, b in zip(self.integration, other.integration)],
                      self.integration_sum_s + other.integration_sum_s)

    def minus(self, old: "Series | None") -> "Series":
        """The growth since old. Counters only grow, so a smaller value means the table was
        made anew (a restarted gateway): then the whole new value is the growth."""
        if old is None or any(n < o for n, o in zip(self.status, old.status)):
            return self
        return Series(self.route, self.api, self.stage,
                      [n - o for n, o in zip(self.status, old.status)],
                      [max(n - o, 0) for n, o in zip(self.duration, old.duration)],
                      max(self.duration_sum_s - old.duration_sum_s, 0.0),
                      [max(n - o, 0) for n, o in zip(self.integration, old.integration)],
                      max(self.integration_sum_s - old.integration_sum_s, 0.0))


@dataclass
class Reading:
    """Everything one render() of the shared metrics says."""
    series: dict[tuple[str, str, str], Series]
    gauges: dict[str, list[tuple[dict, int]]]    # metric name -> [(labels, value)]

    def minus(self, old: "Reading | None") -> "Reading":
        prev = old.series if old is not None else {}
        return Reading({k: s.minus(prev.get(k)) for k, s in self.series.items()}, self.gauges)


_LABEL = re.compile(rb'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|\Z)')
_UNESCAPE = {b"n": "\n", b"\\": "\\", b'"': '"'}
_LE_INDEX = {repr(b): i for i, b in enumerate(BUCKET_BOUNDS_S)} | {"+Inf": len(BUCKET_BOUNDS_S)}


def _labels(text: bytes) -> dict[str, str]:
    out = {}
    for m in _LABEL.finditer(text):
        out[m.group(1).decode()] = re.sub(rb"\\(.)", lambda e: _UNESCAPE.get(e.group(1), "").encode(),
                                          m.group(2)).decode("utf-8", "replace")
    return out


_HIST = {b"fastgate_request_duration_seconds": "duration",
         b"fastgate_integration_duration_seconds": "integration"}


def read_metrics(text: bytes) -> Reading:
    """Parse SharedMetrics.render() (the text exposition format) back into numbers.

    PERF: render() writes each series' label text identically on every line of it, so
    the labels are parsed once per series and every other line is matched by that raw
    text with bytes operations only (1,000 routes: ~40 ms instead of ~500 ms with a
    regex per line; the ticker does this once a second while a page is open)."""
    by_raw: dict[bytes, Series] = {}     # one per label set as rendered (api_key included)
    gauges: dict[str, list[tuple[dict, int]]] = {}
    cumulative: dict[tuple[str, int], list[int]] = {}   # (histogram, id(series)) -> cumulative counts

    def of(raw: bytes) -> Series:
        s = by_raw.get(raw)
        if s is None:
            labels = _labels(raw)
            s = by_raw[raw] = Series(labels.get("route", ""), labels.get("api", ""),
                                     labels.get("stage", ""))
        return s

    for line in text.split(b"\n"):
        if not line or line[0] == 35:   # "#"
            continue
        head, _, value = line.rpartition(b" ")
        brace = head.find(b"{")
        name = head[:brace] if brace >= 0 else head
        raw = head[brace + 1:-1] if brace >= 0 else b""
        if name == b"fastgate_requests_total":
            cut = raw.rfind(b',status_class="')
            cls = raw[cut + 15:cut + 18].decode()
            of(raw[:cut]).status[STATUS_CLASSES.index(cls) if cls in STATUS_CLASSES else 4] = int(value)
        elif name.endswith(b"_bucket") and name[:-7] in _HIST:
            cut = raw.rfind(b',le="')
            s = of(raw[:cut])
            counts = cumulative.setdefault((_HIST[name[:-7]], id(s)), [0] * N_BUCKETS)
            counts[_LE_INDEX.get(raw[cut + 5:-1].decode(), N_BUCKETS - 1)] = int(value)
        elif name.endswith(b"_sum") and name[:-4] in _HIST:
            setattr(of(raw), _HIST[name[:-4]] + "_sum_s", float(value))
        elif name.endswith(b"_count") and name[:-6] in _HIST:
            continue   # the +Inf bucket says the same
        else:
            try:
                gauges.setdefault(name.decode(), []).append((_labels(raw), int(float(value))))
            except ValueError:
                continue
    ids = {id(s): s for s in by_raw.values()}
    for (kind, sid), cum in cumulative.items():
        setattr(ids[sid], kind, [cum[0]] + [max(cum[i] - cum[i - 1], 0) for i in range(1, N_BUCKETS)])
    # a stage that splits by API key renders one series per key (and one for requests
    # without a key) under the same route: the route is their sum
    series: dict[tuple[str, str, str], Series] = {}
    for s in by_raw.values():
        key = (s.route, s.api, s.stage)
        total = series.get(key)
        series[key] = s if total is None else total.plus(s)
    return Reading(series, gauges)


def quantile(q: float, buckets: list[int]) -> float | None:
    """The q-quantile in seconds of a histogram given per bucket (BUCKET_BOUNDS_S and
    +Inf), interpolated linearly inside the bucket as Prometheus' histogram_quantile
    does; the +Inf bucket answers with the highest finite bound. None when empty."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    below = 0
    for i, n in enumerate(buckets):
        if n and below + n >= rank:
            if i == len(BUCKET_BOUNDS_S):
                return BUCKET_BOUNDS_S[-1]
            lower = BUCKET_BOUNDS_S[i - 1] if i > 0 else 0.0
            upper = BUCKET_BOUNDS_S[i]
            return lower + (upper - lower) * (rank - below) / n
        below += n
    return BUCKET_BOUNDS_S[-1]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def figures(series) -> dict:
    """Counts and latency percentiles of a set of series added together."""
    status = [0] * 5
    duration = [0] * N_BUCKETS
    integration = [0] * N_BUCKETS
    duration_sum = 0.0
    for s in series:
        for i in range(5):
            status[i] += s.status[i]
        for i in range(N_BUCKETS):
            duration[i] += s.duration[i]
            integration[i] += s.integration[i]
        duration_sum += s.duration_sum_s
    requests = sum(status)
    return {
        "requests": requests,
        **{f"s{c}": n for c, n in zip(STATUS_CLASSES, status)},
        "error_pct": round(100.0 * (status[3] + status[4]) / requests, 2) if requests else 0.0,
        "p50_ms": _ms(quantile(0.5, duration)),
        "p95_ms": _ms(quantile(0.95, duration)),
        "p99_ms": _ms(quantile(0.99, duration)),
        "mean_ms": _ms(duration_sum / requests) if requests else None,
        "integration_requests": sum(integration),
        "integration_p50_ms": _ms(quantile(0.5, integration)),
        "integration_p95_ms": _ms(quantile(0.95, integration)),
    }


# ---------------------------------------------------------------- history (24 h, one point a minute)

HISTORY_COLUMNS = ("requests", "s4xx", "s5xx", "throttled", "p50_ms", "p95_ms", "p99_ms",
                   "integration_p50_ms")


class HistoryStore:
    """One row a minute in a small SQLite file of the data dir, trimmed to 24 h. A
    separate file from the control API's store: a write a minute here never waits
    behind a control API transaction. The file is created by the first minute that
    had requests, so a gateway nobody sends traffic to leaves no data dir behind."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.conn: sqlite3.Connection | None = None

    def open(self, create: bool) -> bool:
        if self.conn is None and (create or self.path.exists()):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("CREATE TABLE IF NOT EXISTS minutes (t INTEGER PRIMARY KEY, "
                              + ", ".join(f"{c} REAL" for c in HISTORY_COLUMNS) + ")")
        return self.conn is not None

    def add(self, minute_start_s: int, point: dict, now_s: float) -> None:
        if not self.open(create=bool(point.get("requests"))):
            return
        cols = ", ".join(("t",) + HISTORY_COLUMNS)
        marks = ", ".join("?" * (len(HISTORY_COLUMNS) + 1))
        self.conn.execute(f"INSERT OR REPLACE INTO minutes ({cols}) VALUES ({marks})",
                          [minute_start_s] + [point.get(c) for c in HISTORY_COLUMNS])
        self.conn.execute("DELETE FROM minutes WHERE t < ?", (int(now_s - HISTORY_S),))

    def read(self, now_s: float, span_s: int = HISTORY_S) -> list[dict]:
        """The minutes that started in the last span_s seconds, oldest first."""
        if not self.open(create=False):
            return []
        rows = self.conn.execute(f"SELECT t, {', '.join(HISTORY_COLUMNS)} FROM minutes "
                                 "WHERE t >= ? ORDER BY t", (int(now_s - span_s),)).fetchall()
        return [dict(zip(("t",) + HISTORY_COLUMNS, r)) for r in rows]

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# ---------------------------------------------------------------- the dashboard

def averaged_point(t: float, f: dict, span_s: float) -> dict:
    """A live chart point for figures summed over span_s seconds (a minute of the history,
    the minute so far): per-second rates, so it sits on the same axes as the live points."""
    per_s = 1.0 / span_s if span_s > 0 else 0.0
    requests = f.get("requests") or 0
    errors = (f.get("s4xx") or 0) + (f.get("s5xx") or 0)
    return {"t": int(t), "rps": round(requests * per_s, 2), "span_s": int(span_s),
            **{k: round((f.get(k) or 0) * per_s, 2) for k in ("requests", "s4xx", "s5xx", "throttled")},
            "error_pct": round(100.0 * errors / requests, 2) if requests else 0.0,
            **{k: f.get(k) for k in ("p50_ms", "p95_ms", "p99_ms", "integration_p50_ms")}}


def sse(event: str, doc) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(doc) + b"\n\n"


class Dashboard:
    """The admin process's dashboard. admin is the fastgate.process.admin.Admin it serves for:
    it reads admin.metrics, admin.loaded (config and control-plane state) and the
    listener's bound address."""

    def __init__(self, admin, ring=None, data_dir: str | os.PathLike | None = None,
                 since: tuple[float, int] | None = None):
        """since: (epoch s, tail ticket) to count the tail from, taken as the admin process
        started (before its state loaded, which can take seconds while workers serve);
        None: from now."""
        from fastgate._core import tail
        self.admin = admin
        self.ring = ring if ring is not None else tail.installed()
        if data_dir is None:
            from fastgate.control.store import default_data_dir
            data_dir = os.environ.get("FASTGATE_DATA_DIR") or default_data_dir()
        self.data_dir = Path(data_dir)
        self.history = HistoryStore(self.data_dir / HISTORY_FILE)
        bound = admin.sock.getsockname()[0] if admin.sock is not None else "127.0.0.1"
        self.login = requires_login(bound)
        self.key_id = os.environ.get("FASTGATE_ADMIN_ACCESS_KEY_ID", "")
        self.secret = os.environ.get("FASTGATE_ADMIN_SECRET_ACCESS_KEY", "")
        self.clients: set[asyncio.Queue] = set()
        self.points: deque = deque(maxlen=LIVE_POINTS)
        self.recent: deque = deque(maxlen=RECENT_TAIL)
        self.reading: Reading | None = None      # the ticker's latest, for per-second deltas
        self.reading_at = 0.0                    # when it was read, epoch s
        self.started_s, self.tail_seq = since if since is not None else tail_mark(self.ring)
        self.tail_lost = 0
        self.error_types: Counter = Counter()    # gateway-response type -> requests, since start
        self.key_calls: Counter = Counter()      # API key id -> requests seen in the tail
        self.minute = None                       # the minute being summed, epoch s // 60
        self.minute_base: Reading | None = None
        self.minute_throttled = 0
        self.ws_previous: tuple[dict, float] = ({}, 0.0)   # WebSocket counters at the last summary
        self.task: asyncio.Task | None = None

    # --- the ticker ---

    def start(self) -> None:
        self.tick()
        self.task = asyncio.ensure_future(self.run())

    async def run(self) -> None:
        while True:
            # on the second boundary, so the points of two pages line up with the clock
            await asyncio.sleep(TICK_S - time.time() % TICK_S)
            try:
                self.tick()
            except Exception as e:   # a bad tick must not end the live view for good
                from fastgate.observability.log import log
                log(f"dashboard tick failed: {e!r}")

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        for q in list(self.clients):
            self.drop(q)
        self.history.close()

    def read_tail(self) -> tuple[list[dict], int]:
        if self.ring is None:
            return [], 0
        self.tail_seq, entries, lost = self.ring.read_since(self.tail_seq)
        self.tail_lost += lost
        for e in entries:
            if e["error_type"]:
                self.error_types[e["error_type"]] += 1
            if e["key_id"]:
                self.key_calls[e["key_id"]] += 1
        self.recent.extend(entries)
        return entries, lost

    def tick(self, now: float | None = None) -> bytes:
        """Read the tail (always: the by-type counts must see every entry) and, while a
        page is open or a minute ends, the metrics; make the last second's point, send it
        to every page, and close the minute's history point when a minute ended."""
        now = time.time() if now is None else now
        entries, lost = self.read_tail()
        throttled = sum(1 for e in entries if e["error_type"] in THROTTLE_TYPES)
        self.minute_throttled += throttled
        minute = int(now // 60)
        if not self.clients and minute == self.minute:
            # PERF: nobody watches: skip the metrics read (render + parse, ~75 ms a second
            # with 1,000 routes) until the minute ends or a page opens
            return b""
        reading = read_metrics(self.admin.metrics.render())
        point = None
        if self.reading is not None and now - self.reading_at < 1.5 * TICK_S:
            f = figures(reading.minus(self.reading).series.values())
            point = {"t": int(now), "rps": round(f["requests"] / (now - self.reading_at), 2),
                     "throttled": throttled,
                     **{k: f[k] for k in ("requests", "s4xx", "s5xx", "error_pct", "p50_ms", "p95_ms",
                                          "p99_ms", "integration_p50_ms")}}
            self.points.append(point)
        self.reading, self.reading_at = reading, now
        if minute != self.minute:
            if self.minute_base is not None:
                f = figures(reading.minus(self.minute_base).series.values())
                f["throttled"] = self.minute_throttled
                self.history.add(self.minute * 60, f, now)
            self.minute, self.minute_base, self.minute_throttled = minute, reading, 0
        event = sse("tick", {"point": point, "tiles": self.tiles(reading), "tail": entries,
                             "tail_lost": lost})
        for q in list(self.clients):
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:
                self.drop(q)   # it stopped reading; its stream ends and the page reconnects
        return event

    def current(self) -> Reading:
        """The ticker's reading when it is fresh, else a new one (no page was open)."""
        if self.reading is not None and time.time() - self.reading_at < 1.5 * TICK_S:
            return self.reading
        return read_metrics(self.admin.metrics.render())

    def drop(self, q: asyncio.Queue) -> None:
        self.clients.discard(q)
        while not q.empty():
            q.get_nowait()
        q.put_nowait(None)

    # --- snapshots ---

    def backlog(self, reading: Reading | None = None, now: float | None = None) -> list[dict]:
        """The live charts' points for a page that opens now. The per-second points exist
        only while a page watches (the ticker skips the metrics otherwise), so the time
        before them comes from what the admin keeps anyway: the history's minutes of the
        last LIVE_POINTS seconds, and the current minute so far, each as one point of
        per-second averages (span_s says over how long)."""
        now = time.time() if now is None else now
        live = list(self.points)
        until = live[0]["t"] if live else now
        out = [averaged_point(m["t"] + 30, m, 60) for m in self.history.read(now, LIVE_POINTS + 60)
               if m["t"] + 60 <= until and m["t"] + 60 > now - LIVE_POINTS]
        if not live and reading is not None and self.minute_base is not None:
            start = self.minute * 60
            if now - start >= 2:
                f = figures(reading.minus(self.minute_base).series.values())
                f["throttled"] = self.minute_throttled
                out.append(averaged_point((start + now) / 2, f, now - start))
        return out + live

    def tiles(self, reading: Reading) -> dict:
        f = figures(reading.series.values())
        last = self.points[-1] if self.points and self.points[-1]["t"] >= time.time() - 2 else None
        throttled = sum(self.error_types[t] for t in THROTTLE_TYPES)
        # stage caches: lookups by result, every API stage with a cache, since start
        cache = Counter()
        for labels, n in reading.gauges.get("fastgate_cache_requests_total", ()):
            cache[labels.get("result", "")] += n
        hits = cache["hit"] + cache["redis_hit"]
        lookups = hits + cache["miss"]
        return {**f, "rps": last["rps"] if last else 0.0, "throttled": throttled,
                "cache_hits": hits, "cache_misses": cache["miss"],
                "cache_hit_ratio": round(hits / lookups, 4) if lookups else None,
                "open_connections": sum(v for _, v in reading.gauges.get("fastgate_open_connections", ())),
                "uptime_s": int(time.time() - self.started_s)}

    def summary(self) -> dict:
        reading = self.current()
        loaded = getattr(self.admin, "loaded", None)
        state = getattr(loaded, "state", None)
        groups: dict[tuple[str, str], list[Series]] = {}
        for s in reading.series.values():
            groups.setdefault((s.api, s.stage), []).append(s)
        names = {api_id: doc.get("name", "") for api_id, doc in (state.apis.items() if state else ())}
        apis = []
        all_routes = []
        for (api, stage), members in sorted(groups.items()):
            routes = []
            for s in sorted(members, key=lambda s: s.route):
                row = {"route": s.route, "api": api, "stage": stage, **figures([s])}
                routes.append(row)
                if s.requests:
                    all_routes.append(row)
            apis.append({"api": api, "name": names.get(api, "" if api else "gateway routes"),
                         "stage": stage, **figures(members), "routes": routes})
        return {
            "tiles": self.tiles(reading),
            "apis": apis,
            "top_routes": sorted(all_routes, key=lambda r: -r["requests"])[:10],
            "slowest_routes": sorted(all_routes, key=lambda r: -(r["p95_ms"] or 0))[:10],
            "breakdown": self.breakdown(reading),
            "upstreams": self.upstreams(reading, loaded),
            "websockets": self.websockets(reading),
            "stages": self.stages(state),
            "keys": self.keys(state),
            "tail": list(self.recent)[-200:],
            "tail_lost": self.tail_lost,
            "tail_available": self.ring is not None,
            "points": self.backlog(reading),
            "login": self.login,
            "streams": len(self.clients),    # event streams open now (pages watching)
        }

    def breakdown(self, reading: Reading) -> dict:
        f = figures(reading.series.values())
        from fastgate._core.responses import GATEWAY_RESPONSES
        types = []
        for t, n in sorted(self.error_types.items(), key=lambda kv: -kv[1]):
            status = GATEWAY_RESPONSES.get(t, (0,))[0]
            types.append({"type": t, "status": status, "requests": n,
                          "kind": "throttle" if t in THROTTLE_TYPES else
                          ("5xx" if status >= 500 else "4xx")})
        return {"by_class": {c: f[f"s{c}"] for c in STATUS_CLASSES}, "by_type": types,
                # by_type is counted from the tail, as the admin read it since it started:
                # exact unless entries were lost (more than the ring's size in one second)
                "by_type_exact": self.tail_lost == 0, "since_s": int(self.started_s)}

    def websockets(self, reading: Reading, now: float | None = None) -> list[dict]:
        """Each WebSocket API stage: open connections, connects, messages both ways (totals,
        and per second since the previous summary) and errors."""
        now = time.time() if now is None else now
        rows: dict[tuple[str, str], dict] = {}

        def row(labels) -> dict:
            key = (labels.get("api", ""), labels.get("stage", ""))
            return rows.setdefault(key, {"api": key[0], "stage": key[1], "connections": 0,
                                         "connects": 0, "messages_in": 0, "messages_out": 0,
                                         "errors": 0})
        for labels, v in reading.gauges.get("fastgate_websocket_connections", ()):
            row(labels)["connections"] += v
        for labels, v in reading.gauges.get("fastgate_websocket_connect_total", ()):
            row(labels)["connects"] += v
        for labels, v in reading.gauges.get("fastgate_websocket_messages_total", ()):
            row(labels)["messages_" + labels.get("direction", "in")] += v
        for labels, v in reading.gauges.get("fastgate_websocket_errors_total", ()):
            row(labels)["errors"] += v
        prev, prev_at = self.ws_previous
        for key, r in rows.items():
            before = prev.get(key)
            span = now - prev_at
            for d in ("in", "out"):
                r[f"{d}_per_s"] = round((r[f"messages_{d}"] - before[f"messages_{d}"]) / span, 2) \
                    if before is not None and span > 0 else None
        self.ws_previous = ({k: dict(r) for k, r in rows.items()}, now)
        return [rows[k] for k in sorted(rows)]

    @staticmethod
    def upstreams(reading: Reading, loaded) -> list[dict]:
        health = {(lab.get("upstream"), lab.get("target")): v
                  for lab, v in reading.gauges.get("fastgate_upstream_healthy", ())}
        conns = {(lab.get("upstream"), lab.get("target")): v
                 for lab, v in reading.gauges.get("fastgate_upstream_connections", ())}
        out = []
        config = getattr(loaded, "config", None)
        for name, up in sorted((config.upstreams if config is not None else {}).items()):
            checked = up.health_check is not None
            for t in up.targets:
                key = (name, t.url)
                out.append({"upstream": name, "target": t.url, "checked": checked,
                            "healthy": (health.get(key, 1) != 0) if checked else None,
                            "connections": conns.get(key, 0)})
        return out

    @staticmethod
    def stages(state) -> list[dict]:
        out = []
        if state is None:
            return out
        for api_id, stages in sorted(state.stages.items()):
            api = state.apis.get(api_id, {})
            deployments = state.deployments.get(api_id, {})
            for name, stage in sorted(stages.items()):
                dep_id = stage.get("deploymentId")
                canary = stage.get("canarySettings") or None
                out.append({
                    "api": api_id, "name": api.get("name", ""), "stage": name,
                    "deployment": dep_id,
                    "deployed": (deployments.get(dep_id) or {}).get("createdDate"),
                    "description": (deployments.get(dep_id) or {}).get("description", ""),
                    "canary": {"deployment": canary.get("deploymentId"),
                               "percent": canary.get("percentTraffic", 0)} if canary else None,
                    "deployments": len(deployments)})
        return out

    def keys(self, state) -> dict:
        """Per-key usage against the key's usage-plan quota, where the control API keeps
        API keys (state.extra "apikey", "usageplan", "usageplankey"). From the usage
        table (fastgate.control.usage; with `redis:`, every host's): `used` is what GetUsage
        counts in the quota's current period on the plan's stages, `remaining` what the
        plan's limit leaves of it; requests, throttled, 4xx and 5xx are today's (UTC) on
        every stage. Without a usage table yet, `used` is the requests seen in the tail
        since the admin started."""
        extra = getattr(state, "extra", None) or {}
        keys = extra.get("apikey", {}).get("", {})
        if not keys and not self.key_calls:
            return {"keys": [], "note": "no API keys: create some with the control API "
                                        "(CreateApiKey, CreateUsagePlan) to see their usage here"}
        plans = extra.get("usageplan", {}).get("", {})
        plan_of = {key_id: plans.get(plan_id) for plan_id, members in extra.get("usageplankey", {}).items()
                   for key_id in members}
        metered = self.metered_usage(plan_of, sorted(set(keys) | set(self.key_calls)))
        rows = []
        for key_id in sorted(set(keys) | set(self.key_calls)):
            key = keys.get(key_id, {})
            plan = plan_of.get(key_id) or {}
            quota = plan.get("quota") or {}
            m = metered.get(key_id)
            used = m["used"] if m is not None else self.key_calls.get(key_id, 0)
            limit = quota.get("limit")
            rows.append({"id": key_id, "name": key.get("name", ""), "enabled": key.get("enabled", True),
                         "plan": plan.get("name") or plan.get("id"), "quota_limit": limit,
                         "quota_period": quota.get("period"), "used": used,
                         "remaining": max(limit - used, 0) if limit is not None else None,
                         "used_pct": round(100.0 * used / limit, 1) if limit else None,
                         **{k: (m or {}).get(k, 0) for k in ("requests", "throttled", "s4xx", "s5xx")},
                         "metered": m is not None, "seen": self.key_calls.get(key_id, 0)})
        return {"keys": rows, "note": ""}

    def metered_usage(self, plan_of: dict, key_ids: list[str]) -> dict:
        """key id -> {used: quota_used in its quota's current period on its plan's stages,
        requests, throttled, s4xx, s5xx: today's}, from the usage table the API keys'
        meter flushes into fastgate.db; {} when there is none yet."""
        from fastgate.compile.keys import period_bounds
        from fastgate.control.store import db_path
        from fastgate.control.usage import ROW_COLUMNS, UsageStore, in_plan, utc_day
        from fastgate.control.usage_redis import all_hosts_rows
        path = db_path(self.data_dir)
        if not path.exists():
            return {}
        now = int(time.time())
        today = utc_day(now)
        earliest = min((period_bounds(((p or {}).get("quota") or {}).get("period", "DAY"), now)[0]
                        for p in plan_of.values()), default=now)
        col = {c: ROW_COLUMNS.index(c) for c in ("requests", "throttled", "status_4xx",
                                                 "status_5xx", "quota_used")}
        try:
            store = UsageStore(path)
            try:
                redis_cfg = getattr(getattr(self.admin, "loaded", None), "config", None)
                rows = all_hosts_rows(store, getattr(redis_cfg, "redis", None),
                                      utc_day(min(earliest, now)), today, key_ids)
            finally:
                store.close()
        except sqlite3.Error:
            return {}   # the file is busy: the table shows the tail's counts this time
        out: dict[str, dict] = {}
        for r in rows:
            plan = plan_of.get(r[0]) or {}
            m = out.setdefault(r[0], {"used": 0, "requests": 0, "throttled": 0, "s4xx": 0, "s5xx": 0})
            period = (plan.get("quota") or {}).get("period", "DAY")
            stages = {(s["apiId"], s["stage"]) for s in plan.get("apiStages") or ()}
            if r[1] >= utc_day(period_bounds(period, now)[0]) and in_plan(r, stages):
                m["used"] += r[col["quota_used"]]
            if r[1] == today:
                m["requests"] += r[col["requests"]]
                m["throttled"] += r[col["throttled"]]
                m["s4xx"] += r[col["status_4xx"]]
                m["s5xx"] += r[col["status_5xx"]]
        return out

    # --- HTTP ---

    async def serve(self, reader, writer, method: bytes, target: bytes, query: bytes,
                    headers: list[tuple[str, str]], close: bool) -> bool:
        """Answer one request for /dashboard or below; False when the connection is
        done with (an event stream ends only when the page goes away)."""
        send = self.admin.send_raw
        if self.login and not basic_auth_ok(headers, self.key_id, self.secret):
            await send(writer, 401, b"application/json", orjson.dumps({"message": (
                "the dashboard asks for the admin credentials (FASTGATE_ADMIN_ACCESS_KEY_ID and "
                "FASTGATE_ADMIN_SECRET_ACCESS_KEY) when the admin listener is not on loopback")}),
                close, method == b"HEAD", [(b"WWW-Authenticate", b'Basic realm="fastgate", charset="UTF-8"')])
            return not close
        if method not in (b"GET", b"HEAD"):
            await send(writer, 405, b"application/json", b'{"message":"Method Not Allowed"}', close, False,
                       [(b"Allow", b"GET, HEAD")])
            return not close
        head = method == b"HEAD"
        nostore = [(b"Cache-Control", b"no-store")]
        if target in (b"/dashboard", b"/dashboard/"):
            body = (STATIC_DIR / "dashboard.html").read_bytes()
            await send(writer, 200, STATIC_TYPES[".html"], body, close, head,
                       nostore + [(b"Content-Security-Policy", CSP)])
        elif target.startswith(b"/dashboard/static/"):
            name = target[len(b"/dashboard/static/"):].decode("latin-1")
            path = STATIC_DIR / name
            # one flat directory: a name with a slash or a leading dot is never served
            if "/" in name or name.startswith(".") or path.suffix not in STATIC_TYPES or not path.is_file():
                await send(writer, 404, b"application/json", b'{"message":"Not Found"}', close, head)
            else:
                await send(writer, 200, STATIC_TYPES[path.suffix], path.read_bytes(), close, head,
                           [(b"Cache-Control", b"no-cache")])
        elif target == b"/dashboard/api/summary":
            await send(writer, 200, b"application/json", orjson.dumps(self.summary()), close, head, nostore)
        elif target == b"/dashboard/api/history":
            doc = {"step_s": 60, "points": self.history.read(time.time())}
            await send(writer, 200, b"application/json", orjson.dumps(doc), close, head, nostore)
        elif target == b"/dashboard/events" and not head:
            await self.stream(reader, writer)
            return False
        else:
            await send(writer, 404, b"application/json", b'{"message":"Not Found"}', close, head)
        return not close

    async def stream(self, reader, writer) -> None:
        """One event-stream page: a backlog of live points first, then each tick."""
        q: asyncio.Queue = asyncio.Queue(CLIENT_QUEUE)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Cache-Control: no-store\r\nConnection: close\r\n\r\n"
                     b"retry: 2000\n\n" + sse("hello", {"points": self.backlog(self.current())}))
        self.clients.add(q)
        # The page sends nothing after its request: the read ends when it goes away (EOF
        # or reset), which is how a closed tab is noticed even between two ticks.
        gone = asyncio.ensure_future(reader.read(1))
        try:
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
            while True:
                get = asyncio.ensure_future(q.get())
                done, _ = await asyncio.wait((get, gone), return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    return
                event = get.result()
                if event is None:
                    return
                writer.write(event)
                await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            return
        finally:
            self.clients.discard(q)
            gone.cancel()
