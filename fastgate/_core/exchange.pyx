# cython: language_level=3, boundscheck=False, wraparound=False
"""One request's phases and the integrations answered in the gateway; exchange.pxd is the map."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport int64_t
from libc.string cimport memcmp

from fastgate._core.cache cimport SharedCache, RouteCache, CACHE_BYPASS, CACHE_FORBIDDEN, \
    CACHE_REFRESH, CACHE_LOOKUP_WARN
from fastgate._core.cache import WARNING_HEADER as CACHE_WARNING
from fastgate._core.fields cimport H_CONTENT_LENGTH, classify, header_lines
from fastgate._core.headers cimport HeaderTransform, PathRewrite
from fastgate._core.integrations cimport Integrations, decode_body
from fastgate._core.keys cimport headers_for, KEY_ALLOW, KEY_INVALID, KEY_THROTTLED
from fastgate._core.metrics cimport throttle_level_of, CACHE_RESULT_MISS, CACHE_RESULT_HIT, \
    CACHE_RESULT_REDIS_HIT
from fastgate._core.paths cimport lenient_path
from fastgate._core.clock cimport event_epoch_ms, event_time, monotonic_coarse
from fastgate._core.pipeline cimport (
    ApiStage, Mount,
    ACTION_CONTINUE, ACTION_RESPOND, ACTION_WAIT,
    INTEGRATION_HTTP,
    PHASE_ACCESS, PHASE_THROTTLE, PHASE_VALIDATE, PHASE_REQUEST_TRANSFORM, PHASE_CACHE,
    PHASE_INTEGRATION, WAIT_NONE, WAIT_BODY, WAIT_ACCESS, WAIT_THROTTLE, WAIT_CACHE,
)
from fastgate._core.proxy cimport (
    UpstreamConnection, RETRY_BODY_MAX, BUFFER_HIGH,
)
from fastgate._core.router cimport Router
from fastgate._core.runtime cimport DL_BODY, PAUSE_NOT_READY
from fastgate._core.snapshot cimport Snapshot
from fastgate._core.throttle cimport (
    Limiter, ThrottleResult, LIMIT_CLIENT_IP, LIMIT_HEADER, LIMIT_CLAIM, claim_key,
    monotonic_ns as throttle_now_ns, epoch_s as throttle_epoch_s,
)
from fastgate._core.tracing cimport Trace


cdef inline bint prefix_matches(bytes path, bytes prefix):
    """prefix is a whole-segment prefix of path ("/prod" matches "/prod" and "/prod/x", not "/prodx")."""
    cdef Py_ssize_t k = PyBytes_GET_SIZE(prefix), n = PyBytes_GET_SIZE(path)
    if k == 0:
        return True
    if n < k or memcmp(PyBytes_AS_STRING(path), PyBytes_AS_STRING(prefix), k) != 0:
        return False
    return n == k or PyBytes_AS_STRING(path)[k] == 47   # '/'


cdef object find_mount(Snapshot snap, RequestContext ctx):
    """The Mount serving ctx (its stage_path set), or None. A custom domain with no
    mapping for the path sets ctx.error_type (AWS answers 403 Forbidden)."""
    cdef list mounts = None
    cdef Mount mount
    cdef bytes host = ctx.route_host
    cdef Py_ssize_t dot
    cdef bint domain = False
    if snap.host_rules:
        rules = snap.host_rules.get(host)
        if rules is not None:
            found = rules.match(ctx)
            if found is not None:
                mounts = [found]
    if mounts is None and snap.host_mounts:
        mounts = snap.host_mounts.get(host)
        domain = mounts is not None
    if mounts is None and snap.api_mounts:
        dot = host.find(b".execute-api.")
        if dot > 0:
            # the host names an API: only that API answers there (an unknown id: 403, as AWS)
            mounts = snap.api_mounts.get(host[:dot])
            if mounts is None:
                mounts = []
            domain = True
    if mounts is None:
        mounts = snap.any_mounts
    for mount in mounts:
        if prefix_matches(ctx.path, mount.prefix):
            ctx.stage_path = ctx.path[PyBytes_GET_SIZE(mount.prefix):] or b"/"
            if ctx.stage_path.startswith(b"//"):
                # API Gateway reads /prod//x as the stage's /x (paths.pxd: leading slashes)
                ctx.stage_path = b"/" + ctx.stage_path.lstrip(b"/")
            return mount
    if domain:
        ctx.error_type = "DOMAIN_NOT_MAPPED"
    return None


cdef class Exchange:
    def __init__(self, Downstream down, Responder out, Proxy proxy, Integrations integrations):
        self.down = down
        self.out = out
        self.proxy = proxy
        self.integrations = integrations
        self.worker = down.worker

    # --- the dispatcher -----------------------------------------------------------------

    cdef void begin(self, RequestContext ctx):
        if ctx.refused is not None:
            # a head that could not be trusted: its gateway response, then the connection closes
            self.down.close_after = True
            self.out.respond_error(ctx, ctx.refused, ctx.error_message)
            return
        self.settle(ctx, self.route(ctx))

    cdef void settle(self, RequestContext ctx, int action):
        """Act on what the phases returned: RESPOND answers ctx.error_type; CONTINUE means
        the integration runs (or answered), WAIT that a resume will come."""
        if action == ACTION_RESPOND:
            self.out.respond_error(ctx, ctx.error_type, ctx.error_message)

    cdef void resume(self, RequestContext ctx, int phase):
        ctx.waiting = WAIT_NONE
        self.settle(ctx, self.run(ctx, phase))

    cdef bint wanted(self, RequestContext ctx, int waiting):
        """An asynchronous answer for ctx is still wanted: the client is there, nothing has
        answered meanwhile (a timeout), and the phase still waits for it."""
        return ctx is self.down.ctx and not self.down.closed and not ctx.responding and \
            ctx.waiting == waiting

    cdef int route(self, RequestContext ctx):
        """PHASE_ROUTE: an API stage's mount first (custom domain, execute-api host, stage
        prefix), then the top-level routes; then the phases after it."""
        cdef Snapshot snap = <Snapshot>ctx.snapshot
        cdef Route route
        cdef Router router
        cdef bytes routed, lenient
        cdef ApiStage api = None
        if snap.has_mounts:
            mount = find_mount(snap, ctx)
            if mount is not None:
                api = (<Mount>mount).pick()
                ctx.api = api
                if api.cors is not None:
                    # CORS preflight: the gateway answers it before routing and authorization
                    pre = api.cors.preflight(ctx.method, ctx.header(b"origin"),
                                             ctx.header(b"access-control-request-method"),
                                             ctx.header(b"access-control-request-headers"))
                    if pre is not None:
                        self.out.respond(ctx, pre[0], pre[1], b"")
                        return ACTION_CONTINUE
            elif ctx.error_type is not None:
                return ACTION_RESPOND
        if api is not None:
            router = <Router>api.router
            routed = ctx.stage_path
        else:
            router = snap.router
            routed = ctx.path
        m = router.match(ctx.route_host, ctx.method, routed)
        if m is None:
            ctx.error_type = "MISSING_AUTHENTICATION_TOKEN" if api is not None and api.rest else "NOT_FOUND"
            return ACTION_RESPOND
        route = <Route>m[0]
        lenient = lenient_path(routed)
        if lenient is not None:
            # a server that drops ;parameters or merges slashes must reach this route too
            other = router.match(ctx.route_host, ctx.method, lenient)
            if other is None or other[0] is not route:
                ctx.error_type = "BAD_REQUEST"
                ctx.error_message = "the path reaches another route once ';' parameters, '\\' or '//' are read leniently"
                return ACTION_RESPOND
        ctx.route = route
        ctx.path_params = m[1]
        if route.max_body_size >= 0 and ctx.content_length > route.max_body_size:
            # decided before reading a byte of the body (and before any 100 Continue)
            ctx.error_type = "REQUEST_TOO_LARGE"
            ctx.error_message = "Content-Length %d exceeds the limit of %d bytes" % (
                ctx.content_length, route.max_body_size)
            return ACTION_RESPOND
        return self.run(ctx, PHASE_ACCESS)

    cdef int wait_for_body(self, RequestContext ctx, int phase):
        """A phase needs the whole body: body_done() resumes the phases at `phase` (and a
        client that sent Expect: 100-continue is asked for the body now)."""
        ctx.waiting = WAIT_BODY
        ctx.wait_phase = phase
        if ctx.expect_continue:
            self.ask_for_body(ctx)
        return ACTION_WAIT

    cdef void ask_for_body(self, RequestContext ctx):
        """100 Continue: the client sends its body from now on, so its clock starts now."""
        self.down.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        ctx.expect_continue = False
        ctx.body_start = ctx.body_last = monotonic_coarse()
        if self.down.deadline_kind == DL_BODY:
            self.down.deadline = self.down.body_due(ctx)

    cdef int run(self, RequestContext ctx, int phase):
        """The phases after routing, from `phase` on (a phase that waited resumes here)."""
        cdef Snapshot snap = <Snapshot>ctx.snapshot
        cdef Route route = ctx.route
        cdef int action
        # PHASE_ACCESS: resource policy, API key, authorizers (fastgate.phases.access)
        if phase <= PHASE_ACCESS and route.access is not None:
            if route.access.needs_body and not ctx.body_complete:
                # SigV4 signs the payload: check once the body is here (body_done)
                return self.wait_for_body(ctx, PHASE_ACCESS)
            if ctx.trace is not None:
                (<Trace>ctx.trace).auth_start = event_time()
            if route.key_gate is not None and snap.redis is None:
                # PERF: a method whose only check is an API key runs it in C: no Python call,
                # no object per request (bench/wrk_compare.py --scenario keyed)
                action = self.check_key(ctx, <KeyGate>route.key_gate)
            else:
                action = route.access.run(
                    self, ctx, b"".join(ctx.body_chunks) if route.access.needs_body and ctx.body_chunks
                    else (b"" if route.access.needs_body else None))
            if ctx.trace is not None and action != ACTION_WAIT:
                (<Trace>ctx.trace).auth_end = event_time()
            if action == ACTION_WAIT:
                ctx.waiting = WAIT_ACCESS      # access_done() resumes
                return ACTION_WAIT
            if action != ACTION_CONTINUE:
                return action
        # PHASE_THROTTLE
        if phase <= PHASE_THROTTLE and route.limiters:
            if snap.redis is not None:
                # buckets shared by several hosts live in Redis: throttle_done() resumes
                ctx.waiting = WAIT_THROTTLE
                snap.redis.start(self, ctx, route.limiters)
                return ACTION_WAIT
            action = self.throttle(ctx, route)
            if action != ACTION_CONTINUE:
                return action
        # PHASE_VALIDATE: required parameters, the body's model (fastgate.phases.validation)
        if phase <= PHASE_VALIDATE and route.validator is not None:
            if route.validator.needs_body and not ctx.body_complete:
                return self.wait_for_body(ctx, PHASE_VALIDATE)
            if route.validator.needs_body and not decode_body(ctx):
                return ACTION_RESPOND
            failure = route.validator.check(
                ctx.query, ctx.headers, ctx.path_params, ctx.header(b"content-type"),
                (b"".join(ctx.body_chunks) if ctx.body_chunks else b"") if route.validator.needs_body
                else None)
            if failure is not None:
                ctx.error_type = failure[0]
                ctx.error_message = failure.message
                ctx.error_body = failure[1]
                return ACTION_RESPOND
        # PHASE_REQUEST_TRANSFORM: an http (non-proxy) integration's body template needs the body
        if phase <= PHASE_REQUEST_TRANSFORM:
            if route.http_map is not None and route.http_map.maps_request:
                if not ctx.body_complete:
                    return self.wait_for_body(ctx, PHASE_REQUEST_TRANSFORM)
                if not self.map_request(ctx, route):
                    return ACTION_RESPOND
            if route.path_rewrite is not None:
                ctx.upstream_path = (<PathRewrite>route.path_rewrite).apply(ctx)
            else:
                ctx.upstream_path = ctx.path
            if route.query_mapping is not None:
                q = route.query_mapping.apply(ctx)
                if q:
                    ctx.upstream_path = ctx.upstream_path + b"?" + q
            elif ctx.query and not route.drop_query:
                ctx.upstream_path = ctx.upstream_path + b"?" + ctx.query
            if route.request_headers is not None:
                ctx.upstream_headers = (<HeaderTransform>route.request_headers).apply(ctx.forward_headers, ctx)
            else:
                ctx.upstream_headers = ctx.forward_headers
        # PHASE_CACHE: a fresh cached response answers without the integration
        if phase <= PHASE_CACHE and route.cache is not None and snap.cache is not None and \
                route.integration == INTEGRATION_HTTP:
            action = self.serve_cached(ctx, route)
            if action != ACTION_CONTINUE or ctx.responding:
                return action
        if ctx.expect_continue and not ctx.body_complete:
            # admitted: ask for the body (RFC 9110 section 10.1.1); the upstream never sees Expect
            self.ask_for_body(ctx)
        # PHASE_INTEGRATION
        if route.integration == INTEGRATION_HTTP:
            self.proxy.start(ctx)
        elif ctx.body_complete:
            self.integrations.run(ctx)       # the others answer once the body is complete (body_done)
        return ACTION_CONTINUE

    # --- answers to phases that waited (called by fastgate.phases) -----------------------

    def access_done(self, RequestContext ctx, str error_type=None, str message=None,
                    list headers=None, bytes body=None, bytes code=None):
        """An asynchronous access check finished: deny with error_type, or run the
        remaining phases (throttle, transforms, the integration)."""
        if not self.wanted(ctx, WAIT_ACCESS):
            return      # the client went away, or a timeout answered meanwhile
        if ctx.trace is not None:
            (<Trace>ctx.trace).auth_end = event_time()
        if error_type is not None:
            ctx.waiting = WAIT_NONE
            self.deny(ctx, error_type, message, headers, body, code)
            self.out.respond_error(ctx, error_type, None)
        else:
            self.resume(ctx, PHASE_THROTTLE)
        self.down.uncork()

    def throttle_done(self, RequestContext ctx, bytes rejected=None, str limiter=None):
        """The Redis takes of the THROTTLE phase finished: `rejected` is the header block
        of the limit that said no (429), or None to go on."""
        if not self.wanted(ctx, WAIT_THROTTLE):
            return
        if rejected is not None:
            ctx.waiting = WAIT_NONE
            ctx.error_type = "THROTTLED"
            if limiter is not None:
                ctx.throttle_level = throttle_level_of(limiter)
            ctx.error_headers = header_lines(rejected)
            self.out.respond_error(ctx, "THROTTLED", None)
        else:
            self.resume(ctx, PHASE_VALIDATE)
        self.down.uncork()

    def cache_done(self, RequestContext ctx, hit=None, long long expires_ms=0):
        """The Redis lookup of the CACHE phase finished: hit is (status, header lines,
        body), valid until expires_ms (epoch ms; the local cache keeps it that long), or
        None (a miss, Redis down or slow): call the integration and store its answer."""
        if not self.wanted(ctx, WAIT_CACHE):
            return
        cdef long long now = event_epoch_ms()
        if hit is not None:
            ctx.waiting = WAIT_NONE
            ctx.cache_result = 3
            # never longer than this route's TTL: a host with a clock behind stored it
            expires_ms = min(expires_ms, now + (<RouteCache>ctx.route.cache).ttl_ms)
            if expires_ms > now:
                (<SharedCache>(<Snapshot>ctx.snapshot).cache).put(
                    ctx.cache_key, expires_ms, <int>hit[0], <bytes>hit[1], <bytes>hit[2])
            self.answer_cached(ctx, <tuple>hit)
        else:
            ctx.cache_result = 2
            self.record_cache_result(ctx)
            self.resume(ctx, PHASE_INTEGRATION)
        self.down.uncork()

    def take_error_headers(self):
        """The headers a denial queued (for an access check that finishes asynchronously)."""
        cdef RequestContext ctx = self.down.ctx
        if ctx is None:
            return None
        h = ctx.error_headers
        ctx.error_headers = None
        return h

    def deny(self, RequestContext ctx, str error_type, str message=None, list headers=None,
             bytes body=None, bytes code=None):
        """What a denied access check answers: the gateway response `error_type`, with AWS's
        body for the case (unless the API customised that response) and x-amzn-ErrorType."""
        ctx.error_type = error_type
        ctx.error_message = message
        ctx.error_headers = headers or None
        ctx.error_body = body
        ctx.error_code = code

    # --- the body -----------------------------------------------------------------------

    cdef void add_body(self, RequestContext ctx, bytes data):
        """A body chunk of the active request: straight on to an upstream whose head went out,
        else kept (a retry may send it again, or it waits for the upstream's head)."""
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        cdef UpstreamConnection conn = <UpstreamConnection>ctx.upstream
        if ctx.responding and ctx.route is not None and ctx.route.integration != INTEGRATION_HTTP:
            return
        if ctx.body_chunks is None:
            ctx.body_chunks = []
        if conn is not None and conn.head_written:
            self.proxy.send_body(ctx, data)
            if ctx.body_retained:
                ctx.body_chunks.append(data)
                ctx.body_sent = len(ctx.body_chunks)
                ctx.body_kept += n
                if ctx.body_kept > RETRY_BODY_MAX:
                    ctx.body_retained = False
                    ctx.body_chunks = []
                    ctx.body_sent = 0
                    ctx.body_kept = 0
            return
        # no upstream yet, or its head waits for the connect: kept, to follow the head (Proxy.ready)
        ctx.body_chunks.append(data)
        ctx.body_kept += n
        if ctx.body_kept > RETRY_BODY_MAX:
            ctx.body_retained = False
        if ctx.body_kept > BUFFER_HIGH and ctx.route is not None and \
                ctx.route.integration == INTEGRATION_HTTP and ctx.waiting != WAIT_BODY:
            self.down.set_pause(PAUSE_NOT_READY, True)

    cdef void body_done(self, RequestContext ctx):
        """The active request's body is complete."""
        cdef UpstreamConnection conn
        ctx.body_complete = True
        if ctx.route is None or ctx.responding:
            return
        if ctx.waiting == WAIT_BODY:
            self.resume(ctx, ctx.wait_phase)
            return
        if ctx.waiting != WAIT_NONE:
            return      # the integration starts when access_done() (or another) resumes the phases
        if ctx.route.integration == INTEGRATION_HTTP:
            conn = <UpstreamConnection>ctx.upstream
            if conn is not None and conn.head_written:
                self.proxy.finish(ctx)
            # else Proxy.ready ends the request right behind its head
        else:
            self.integrations.run(ctx)

    # --- phases run in C --------------------------------------------------------------

    cdef int check_key(self, RequestContext ctx, KeyGate gate) except -1:
        """The ACCESS phase of a method that requires an API key (x-api-key) and nothing
        else: 403 INVALID_API_KEY, 429 THROTTLED / QUOTA_EXCEEDED with RateLimit headers."""
        cdef ThrottleResult res
        cdef char buf[512]
        cdef Py_ssize_t n
        cdef bytes value = ctx.header(b"x-api-key")
        cdef int rc = gate.check(ctx, PyBytes_AS_STRING(value) if value is not None else NULL,
                                 PyBytes_GET_SIZE(value) if value is not None else 0,
                                 throttle_now_ns(), throttle_epoch_s(), &res)
        if rc == KEY_ALLOW:
            return ACTION_CONTINUE
        # as deny(): API Gateway's bodies for these types are the gateway responses' own
        ctx.error_message = None
        ctx.error_body = None
        ctx.error_code = None
        ctx.error_headers = None
        if rc == KEY_INVALID:
            ctx.error_type = "INVALID_API_KEY"
        else:
            ctx.error_type = "THROTTLED" if rc == KEY_THROTTLED else "QUOTA_EXCEEDED"
            n = headers_for(rc, &res, buf, sizeof(buf))
            if n > 0:
                ctx.error_headers = header_lines(buf[:n])
        return ACTION_RESPOND

    cdef int throttle(self, RequestContext ctx, Route route):
        """Take from each of the route's limiters in API Gateway's order; the first
        rejection answers 429 THROTTLED with RateLimit and Retry-After headers."""
        cdef ThrottleResult res
        cdef Limiter lim
        cdef int64_t now = throttle_now_ns()
        cdef bytes key
        for lim in route.limiters:
            if lim.key_kind == LIMIT_CLIENT_IP:
                key = ctx.client_ip
            elif lim.key_kind == LIMIT_HEADER:
                key = ctx.header(lim.key_arg) or b""
            elif lim.key_kind == LIMIT_CLAIM:
                key = claim_key(ctx.auth, lim.key_arg)
            else:
                key = b""
            res.allowed = 1
            if not lim.take(PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key), now, &res):
                ctx.error_type = "THROTTLED"
                ctx.throttle_level = throttle_level_of(lim.name)
                ctx.error_headers = header_lines(lim.headers(&res))
                return ACTION_RESPOND
        return ACTION_CONTINUE

    cdef int serve_cached(self, RequestContext ctx, Route route):
        """CACHE phase: CONTINUE, having answered from the cache (ctx.responding) or to call
        the integration; WAIT while the lookup goes on in Redis (cache_done() resumes);
        RESPOND for an unauthorised Cache-Control: max-age=0. On a miss, ctx.cache_key marks
        the response to store (the response phase fills the entry)."""
        cdef Snapshot snap = <Snapshot>ctx.snapshot
        cdef RouteCache rc = <RouteCache>route.cache
        cdef int decision = rc.decide(ctx.method, ctx.headers, False)
        if decision == CACHE_BYPASS:
            return ACTION_CONTINUE
        if decision == CACHE_FORBIDDEN:
            ctx.error_type = "UNAUTHORIZED"     # AWS: 403 on an unauthorised Cache-Control
            return ACTION_RESPOND
        ctx.cache_decision = decision
        key = rc.spec.key(ctx.method, ctx.path, ctx.query, ctx.headers, ctx.path_params)
        ctx.cache_key = key
        if decision != CACHE_REFRESH:
            hit = (<SharedCache>snap.cache).get(key, event_epoch_ms())
            if hit is not None:
                ctx.cache_result = 1
                self.answer_cached(ctx, <tuple>hit)
                return ACTION_CONTINUE
            if snap.cache_redis is not None:
                # another host may have it; the lookup is bounded by redis.timeout_ms
                # and answers a miss at once while Redis is down
                ctx.waiting = WAIT_CACHE
                snap.cache_redis.lookup(self, ctx, key)
                return ACTION_WAIT
        ctx.cache_result = 2
        self.record_cache_result(ctx)
        return ACTION_CONTINUE

    cdef void answer_cached(self, RequestContext ctx, tuple hit):
        """Send a cache entry (status, header lines, body) as the response."""
        self.record_cache_result(ctx)
        ctx.cache_key = None
        # entries stored before cache_head_of() dropped Content-Length may still carry it
        headers = [pair for pair in header_lines(<bytes>hit[1])
                   if classify(<bytes>pair[0]) != H_CONTENT_LENGTH]
        headers.append((b"X-Cache", b"Hit"))
        if ctx.cache_decision == CACHE_LOOKUP_WARN:
            headers.append(CACHE_WARNING)
        ctx.integration_start = ctx.integration_end = event_time()
        self.out.respond(ctx, <int>hit[0], headers, <bytes>hit[2])

    cdef void record_cache_result(self, RequestContext ctx):
        cdef Snapshot snap = <Snapshot>ctx.snapshot
        cdef int slot = snap.route_series[ctx.route.index] if snap.metrics is not None else -1
        if slot >= 0:
            snap.metrics.record_cache(slot, CACHE_RESULT_MISS if ctx.cache_result == 2 else
                                      CACHE_RESULT_REDIS_HIT if ctx.cache_result == 3 else
                                      CACHE_RESULT_HIT)

    cdef bint map_request(self, RequestContext ctx, Route route):
        """An http (non-proxy) integration's request template: the body sent upstream
        (False with ctx.error_type set when it refuses the request)."""
        if not decode_body(ctx):
            return False
        body = b"".join(ctx.body_chunks) if ctx.body_chunks else b""
        ctype = ctx.header(b"content-type")
        try:
            out = route.http_map.request((<Snapshot>ctx.snapshot).hooks.mapping_event(ctx, body), body,
                                         ctype.decode("latin-1") if ctype is not None else None)
        except Exception as e:    # never let a template bug take the worker down
            out = "DEFAULT_5XX"
            ctx.error_message = repr(e)
        if isinstance(out, str):
            ctx.error_type = out
            return False
        ctx.body_chunks = [out] if out else []
        ctx.body_kept = PyBytes_GET_SIZE(out)
        ctx.body_sent = 0
        ctx.body_retained = ctx.body_kept <= RETRY_BODY_MAX
        ctx.content_length = ctx.body_kept   # the upstream gets the mapped body, framed anew
        ctx.chunked = False
        return True
