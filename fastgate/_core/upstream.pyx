# cython: language_level=3, boundscheck=False, wraparound=False
"""Upstream groups, keep-alive pools and load balancing; see upstream.pxd."""

import ipaddress
import os
import socket
import sys
from bisect import bisect_left
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE

from fastgate._core.pipeline cimport RequestContext

RING_POINTS_PER_WEIGHT = 160   # points on the hash ring per unit of weight (ketama uses 160)


cdef inline unsigned int fnv1a(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    cdef unsigned int h = 2166136261u
    cdef Py_ssize_t i
    for i in range(n):
        h ^= p[i]
        h *= 16777619u
    # fmix32 from MurmurHash3: FNV alone clusters short similar keys on the ring
    h ^= h >> 16
    h *= 0x85ebca6bu
    h ^= h >> 13
    h *= 0xc2b2ae35u
    h ^= h >> 16
    return h


def hash_key(bytes key):
    """The ring hash, for tests."""
    return fnv1a(<const unsigned char*>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))


cdef int address_family(str host):
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return 0


cdef class Target:
    def __init__(self, group, str url, str scheme, str host, int port, int weight=1,
                 int max_idle=128, ssl=None, str server_hostname=None):
        self.group = group
        self.url = url
        self.scheme = scheme
        self.host = host
        self.port = port
        self.family = address_family(host)
        self.weight = weight if weight > 0 else 1
        default_port = 443 if scheme == "https" else 80
        hostpart = f"[{host}]" if ":" in host else host
        self.label = f"{hostpart}:{port}".encode()
        self.host_header = (hostpart if port == default_port else f"{hostpart}:{port}").encode()
        self.ssl = ssl
        self.server_hostname = server_hostname or host
        self.idle = []
        self.max_idle = max_idle
        self.healthy = True
        self.health_slot = -1
        self.conn_slot = -1
        self.own_conn_slot = -1

    def __repr__(self):
        return f"<Target {self.url} weight={self.weight} active={self.active} idle={self.n_idle}>"

    @property
    def idle_count(self):
        return self.n_idle

    cdef bint available(self, double now):
        return self.healthy and self.ejected_until <= now

    cdef object pop_idle(self):
        """The most recently used idle connection, or None. The caller checks it is alive
        (a typed call there; here it would be a Python one) and pops again if not."""
        cdef object conn
        if self.n_idle == 0:
            return None
        self.n_idle -= 1
        conn = self.idle[self.n_idle]
        self.idle[self.n_idle] = None
        return conn

    cdef bint push_idle(self, object conn):
        """Keep conn for reuse; False when the pool is full or retired (the caller closes it)."""
        # PERF: the list never shrinks, so a pool that empties and fills again per request
        # allocates nothing (bench/ir_per_request.py: list append and pop resized it each time)
        if self.retired or self.n_idle >= self.max_idle:
            return False
        if self.n_idle < len(self.idle):
            self.idle[self.n_idle] = conn
        else:
            self.idle.append(conn)
        self.n_idle += 1
        return True

    cdef void forget_idle(self, object conn):
        # O(pool size), and only when an idle connection is closed by the peer
        cdef int i
        for i in range(self.n_idle):
            if self.idle[i] is conn:
                del self.idle[i]
                self.n_idle -= 1
                return

    cdef void opened(self):
        self.open += 1
        if self.metrics is not None:
            self.metrics.gauge_add(self.conn_slot, 1)
            self.metrics.gauge_add(self.own_conn_slot, 1)

    cdef void closed(self):
        self.open -= 1
        if self.metrics is not None:
            self.metrics.gauge_add(self.conn_slot, -1)
            self.metrics.gauge_add(self.own_conn_slot, -1)

    cdef void record_success(self):
        self.failures = 0

    cdef void record_failure(self, double now, str reason):
        cdef UpstreamGroup g = <UpstreamGroup>self.group
        self.failures += 1
        if g.max_failures > 0 and self.failures >= g.max_failures:
            self.ejected_until = now + g.eject_time
            # an operator must see why a target stopped taking traffic, and for how long
            print(f"fastgate[{os.getpid()}]: upstream {g.name!r}: target {self.label.decode()} ejected for "
                  f"{g.eject_time:g} s after {self.failures} consecutive failures (last: {reason})",
                  file=sys.stderr, flush=True)
            self.failures = 0

    def failed(self, double now, str reason="failed"):
        """record_failure for the control plane and tests."""
        self.record_failure(now, reason)

    def succeeded(self):
        self.record_success()

    cpdef close_idle(self):
        """Close every idle connection and keep no more (snapshot retired, or shutdown)."""
        self.retired = True
        idle, self.idle = self.idle[:self.n_idle], []
        self.n_idle = 0
        for conn in idle:
            conn.close()


cdef class UpstreamGroup:
    def __init__(self, str name, int balance=BALANCE_ROUND_ROBIN, int hash_on=HASH_CLIENT_IP,
                 str hash_name="", int max_failures=0, double eject_time=10.0):
        self.name = name
        self.targets = []
        self.balance = balance
        self.hash_on = hash_on
        # header names compare case-insensitively, cookie names do not (RFC 6265)
        self.hash_name = (hash_name.lower() if hash_on == HASH_HEADER else hash_name).encode()
        self.max_failures = max_failures
        self.eject_time = eject_time
        self.ring_keys = []
        self.ring_targets = []

    def add_target(self, str url, str scheme, str host, int port, int weight=1,
                   int max_idle=128, ssl=None, str server_hostname=None):
        t = Target(self, url, scheme, host, port, weight, max_idle, ssl, server_hostname)
        self.targets.append(t)
        self._build_ring()
        return t

    def _build_ring(self):
        points = []
        for t in self.targets:
            for i in range((<Target>t).weight * RING_POINTS_PER_WEIGHT):
                points.append((hash_key((<Target>t).label + b"#%d" % i), t))
        points.sort(key=lambda p: p[0])
        self.ring_keys = [p[0] for p in points]
        self.ring_targets = [p[1] for p in points]

    def choose(self, RequestContext ctx=None, Target exclude=None, double now=0.0):
        """pick() for tests and the control plane."""
        return self.pick(ctx, exclude, now)

    cdef Target pick(self, RequestContext ctx, Target exclude, double now):
        """A target for this request that is healthy and not `exclude` (the one that
        just failed), or None when no target is available."""
        if self.balance == BALANCE_ROUND_ROBIN:
            return self.pick_round_robin(exclude, now)
        if self.balance == BALANCE_LEAST_CONN:
            return self.pick_least_conn(exclude, now)
        return self.pick_hash(ctx, exclude, now)

    cdef Target pick_round_robin(self, Target exclude, double now):
        # Smooth weighted round robin: each pick adds every weight to its current
        # value, takes the largest and subtracts the total (nginx, ngx_http_upstream_round_robin.c).
        cdef Target t, best = None
        cdef int total = 0
        cdef Py_ssize_t n = len(self.targets)
        if n == 1:
            t = <Target>self.targets[0]
            return t if t is not exclude and t.available(now) else None
        for t in self.targets:
            if t is exclude or not t.available(now):
                continue
            t.smooth_weight += t.weight
            total += t.weight
            if best is None or t.smooth_weight > best.smooth_weight:
                best = t
        if best is not None:
            best.smooth_weight -= total
        return best

    cdef Target pick_least_conn(self, Target exclude, double now):
        cdef Target t, best = None
        for t in self.targets:
            if t is exclude or not t.available(now):
                continue
            # compare active/weight without division: a.active * b.weight < b.active * a.weight
            if best is None or t.active * best.weight < best.active * t.weight:
                best = t
        return best

    cdef Target pick_hash(self, RequestContext ctx, Target exclude, double now):
        cdef bytes key = None
        cdef Target t
        cdef Py_ssize_t n = len(self.ring_keys), i, start
        if ctx is not None:
            if self.hash_on == HASH_HEADER:
                key = ctx.header(self.hash_name)
            elif self.hash_on == HASH_COOKIE:
                key = cookie_value(ctx.header(b"cookie"), self.hash_name)
            else:
                key = ctx.source_ip
        if not key or n == 0:
            return self.pick_round_robin(exclude, now)
        start = bisect_left(self.ring_keys, hash_key(key))
        # walk clockwise to the first available target
        for i in range(n):
            t = <Target>self.ring_targets[(start + i) % n]
            if t is not exclude and t.available(now):
                return t
        return None


cdef bytes cookie_value(bytes header, bytes name):
    """Value of cookie `name` in a Cookie header (RFC 6265 section 4.2.1), or None."""
    if header is None:
        return None
    cdef Py_ssize_t nl = len(name)
    for part in header.split(b";"):
        part = part.strip()
        if len(part) > nl and part[nl] == 61 and part[:nl] == name:  # '='
            return part[nl + 1:]
    return None


def parse_cookie(bytes header, bytes name):
    return cookie_value(header, name)
