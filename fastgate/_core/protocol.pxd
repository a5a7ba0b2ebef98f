# The HTTP/1.1 hot path: the client-side protocol, the upstream-side
# protocol, and the per-worker state they share.
#
# One ClientConnection per accepted socket. httptools parses; its callbacks
# only append bytes, and the real work happens in on_headers_complete, where
# the request runs the pipeline phases (pipeline.pxd). Only one request per
# client connection is active at a time: pipelined requests parsed meanwhile
# wait in `pending` with client reading paused, so memory stays bounded.
#
# The HTTP integration borrows an UpstreamConnection from the target's pool,
# streams the request body to it and the response back, with flow control in
# both directions (a full write buffer on one side pauses reading on the
# other). A connection whose state is unknown (body half sent, response half
# read, timeout, protocol error) is closed, never pooled.

from fastgate._core.pipeline cimport RequestContext, Route, ApiStage, Mount, GatewayResponse
from fastgate._core.upstream cimport Target, UpstreamGroup
from fastgate._core.metrics cimport SharedMetrics
from fastgate._core.accesslog cimport AccessLog
from fastgate._core.router cimport Router
from fastgate._core.http1 cimport Http1Parser
from fastgate._core.tracing cimport Tracer
from fastgate._core.usage cimport UsageCounters
from fastgate._core.keys cimport KeyGate


cdef enum Limits:
    RETRY_BODY_MAX = 65536        # bytes of request body kept for a retry on another target
    DECODED_BODY_MAX = 10485760   # bytes a Content-Encoding may decode to on a route without a
                                  # body limit (API Gateway's 10 MB payload limit)
    BUFFER_HIGH = 65536           # bytes buffered for a not-yet-ready upstream before pausing the client
    TICK_MS = 100                 # ms between timeout sweeps
    RESPONSE_MAX_HEAD = 65536     # bytes of an upstream response head
    RESPONSE_MAX_HEADERS = 200    # header lines of an upstream response
    LINGER_IDLE_MS = 2000         # ms a lingering close waits for more client input before closing
    LINGER_MAX_MS = 30000         # ms a lingering close discards client input at most (nginx's
                                  # lingering_time), so an uploading client reads its 413
    MAP_RESPONSE_MAX = 10485760   # bytes of upstream body an http (non-proxy) integration maps (AWS: 10 MB)
    CORK_DIRECT = 16384           # bytes: a corked write this large goes out as it is (after what is gathered)
    CORK_MAX = 65536              # bytes gathered in the cork buffer at most before they are written
    CORK_KEEP = 262144            # bytes of cork buffer capacity kept between callbacks

cdef enum Deadline:
    DL_NONE = 0
    DL_IDLE = 1                   # keep-alive connection waiting for a request: close quietly
    DL_HEAD = 2                   # request head not complete: 408
    DL_BODY = 3                   # request body stalled, too slow or past its deadline: 408
                                  # (ClientConnection.body_due says when)
    DL_CONNECT = 4                # upstream connect: retry or 504
    DL_UPSTREAM_READ = 5          # waiting for upstream bytes (first byte, then between reads): 504
    DL_DRAIN = 6                  # graceful shutdown: close whatever is left

cdef enum PauseReason:            # bits: client reading is paused while any is set
    PAUSE_PIPELINE = 1            # a request is queued behind the active one
    PAUSE_UPSTREAM_FULL = 2       # the upstream's write buffer is full
    PAUSE_NOT_READY = 4           # body buffered while the upstream connection is not ready

cdef enum Waiting:                # what a request waits for between its phases
    WAIT_NONE = 0
    WAIT_BODY = 1                 # the whole body, before the access check (SigV4 payload hash)
                                  # or body validation; wait_phase says which
    WAIT_ACCESS = 2               # an asynchronous access check (JWKS fetch, Lambda authorizer)
    WAIT_THROTTLE = 3             # the THROTTLE phase's takes from Redis (several hosts)
    WAIT_CACHE = 4                # the CACHE phase's lookup in Redis after a local miss

cpdef enum AccessVerdict:         # what AccessPhase.run(conn, ctx) returns
    ACCESS_ALLOW = 0              # go on with the next phase now
    ACCESS_DENY = 1               # answer ctx.error_type (set with conn.deny(...)) now
    ACCESS_WAIT = 2               # the check goes on; it calls conn.access_done(...) when done


cdef enum BodyMode:               # how the response body is framed towards the client
    BODY_NONE = 0                 # no body (HEAD, 1xx, 204, 304)
    BODY_LENGTH = 1               # Content-Length passed through
    BODY_CHUNKED = 2              # re-chunked towards an HTTP/1.1 client
    BODY_CLOSE = 3                # until close (HTTP/1.0 client of an unframed response)


cdef class Snapshot:
    # Everything the hot path reads, compiled by fastgate.compile.snapshot from config.
    # Immutable once published; a reload builds a new one and swaps Worker.snapshot.
    cdef readonly Router router           # values are Routes
    cdef readonly list routes             # [Route] by Route.index
    cdef readonly list groups             # [UpstreamGroup]
    cdef readonly list route_series       # metrics slot per route index
    cdef readonly int unmatched_series    # metrics slot for requests no route matched
    cdef readonly AccessLog access_log    # or None
    cdef readonly SharedMetrics metrics   # or None
    cdef readonly list trusted            # [ipaddress network] whose X-Forwarded-* are kept
    cdef readonly bytes via               # b"1.1 fastgate", or None for no Via
    cdef readonly dict responses          # gateway response type -> GatewayResponse (gateway-wide table)
    cdef readonly dict host_mounts        # lowercase host (custom domain) -> [Mount], longest prefix first
    cdef readonly dict api_mounts         # api id (bytes) -> [Mount] for "{id}.execute-api.*" hosts
    cdef readonly list any_mounts         # [Mount] on every other host, longest prefix first
    cdef readonly bint has_mounts         # any API is mounted (else routing is the top-level router alone)
    cdef readonly list stages             # [ApiStage] served, for /routes and metrics
    cdef readonly Tracer tracer           # fastgate._core.tracing.Tracer, or None (tracing off)
    cdef readonly object redis            # fastgate.phases.access.RedisLimits: throttles in Redis, or None
    cdef readonly object execution_log    # fastgate._core.execlog.ExecutionLog, or None
    cdef readonly object cache            # fastgate._core.cache.SharedCache of the host, or None
    cdef readonly object cache_redis      # fastgate.phases.cache_redis.CacheSharing: entries in Redis, or None
    cdef readonly Py_ssize_t max_url      # bytes, 414 past this
    cdef readonly Py_ssize_t max_head     # bytes of header section, 431 past this
    cdef readonly int max_headers         # 431 past this many header lines
    cdef readonly long long max_body      # bytes, 413; -1 = unlimited
    cdef readonly double header_timeout   # s
    cdef readonly double body_timeout     # s without a body byte
    cdef readonly double min_body_rate    # bytes/s a body must average once body_rate_grace has
                                          # passed; 0 = no minimum (a trickle is a slow POST attack)
    cdef readonly double body_rate_grace  # s before min_body_rate applies
    cdef readonly double body_deadline    # s for the whole body; 0 = none
    cdef readonly double keepalive_timeout  # s
    cdef readonly int keepalive_requests  # requests served per connection before closing it
    cdef readonly object source           # the config it was built from (for the control plane)
    cdef readonly object tls              # fastgate.compile.tls.TLSState: custom domains' certificates, or None
    cdef readonly dict mtls_hosts         # lowercase host / b"*.suffix" -> domain whose truststore must
                                          # have verified the client certificate (403 otherwise); None = none
    cdef readonly double rebuild_at_s     # epoch s at which it goes stale (an UpdateUsage grant ends):
                                          # the worker builds it again then; 0 = never


cdef class Worker:
    # Per-process state: the current snapshot, live connections, the tick.
    cdef public Snapshot snapshot
    cdef public object functions          # fastgate.phases.functions.gateway.FunctionRunner, or None
    cdef public UsageCounters usage       # fastgate.control.usage.UsageRecorder.counters (API key metering), or None
    cdef readonly object loop
    cdef readonly set connections         # ClientConnection
    cdef readonly bint draining
    cdef readonly int worker_id
    cdef public int open_slot             # metrics slot of fastgate_open_connections, -1 = none
    cdef public int own_slot              # this worker's share of it (fastgate_worker_open_connections),
                                          # so the supervisor can take a dead worker's count back out
    cdef unsigned long long rid_counter
    cdef char rid_prefix[20]              # random per-process part of generated request ids
    cdef object tick_handle
    cdef int ticks
    cdef readonly bytes date              # cached "Date" header value, refreshed every second

    cdef bytes new_request_id(self)
    cdef void tick(self)


cdef class PendingRequest:
    # A pipelined request parsed while another one is active.
    cdef RequestContext ctx
    cdef Snapshot snap
    cdef list chunks                      # body chunks received so far
    cdef bint complete                    # the whole body has arrived
    cdef str error_type                   # set when the request is bad: answer with this, then close


cdef class ClientConnection:
    cdef Worker worker
    cdef object transport
    cdef object t_write                   # transport.write and transport.is_closing, bound once:
    cdef object t_is_closing              # PERF: no method lookup per call (wrk_compare.py keepalive)
    cdef Http1Parser parser               # requests, driven from C (http1.pxd)
    cdef bytes peer_ip
    cdef int peer_port
    cdef int local_port
    cdef bytes port_bytes                 # local_port as X-Forwarded-Port sends it
    cdef bytes last_host                  # the Host of the last request, and its route_host_of()
    cdef bytes last_route_host
    cdef bint trusted                     # peer is a configured trusted proxy
    cdef bint tls                         # accepted on a TLS listener
    cdef object client_cert               # fastgate.compile.tls.ClientCert, read once at connection_made, or None
    cdef bint closed
    cdef bint unread                      # client input may be left unread: close lingering
    cdef bint lingering                   # write side shut, discarding input until EOF or LINGER_*_MS
    cdef bint corked                      # inside a read callback: writes gather in the cork buffer
    cdef int served                       # requests answered on this connection

    # request being parsed
    cdef RequestContext parsing
    cdef Snapshot parsing_snap
    cdef PendingRequest parsing_pending   # its queue entry when it is not the active one
    cdef bytes url
    cdef list fwd                         # headers to forward (hop-by-hop and gateway-owned removed)
    cdef bint in_head                     # between message begin and headers complete
    cdef int cl_count
    cdef bint cl_bad
    cdef int te_count
    cdef bint te_bad
    cdef int host_count
    cdef list conn_tokens                 # extra header names listed in Connection
    cdef bytes h_via, h_xff, h_xfp, h_xfh, h_xfport, h_rid, h_upgrade
    cdef bytes h_traceparent, h_tracestate, h_xray   # incoming trace context (when tracing)
    cdef str parse_error                  # gateway response type found while parsing
    cdef list error_headers               # extra headers for the next gateway response (429's RateLimit)
    cdef int waiting                      # a Waiting: the phases are paused for it
    cdef int wait_phase                   # WAIT_BODY: the phase to resume once the body is here
    cdef int throttle_level               # the level that answered 429 (metrics), -1 = none
    cdef list cache_parts                 # body chunks of a response being stored in the cache
    cdef bytes cache_head                 # its header lines
    cdef int cache_status
    cdef int cache_decision               # the CACHE phase's RouteCache.decide() of the active request
    cdef object compressor                # fastgate.phases.compression.Compressor of the response, or None
    cdef list map_parts                   # an http (non-proxy) integration's upstream body, buffered
                                          # for its integration response mapping; None = relaying
    cdef list map_headers                 # ... and that response's [(name, value)]
    cdef int map_status                   # ... and status
    cdef long long map_size               # bytes of it seen; past MAP_RESPONSE_MAX they are dropped
    cdef bytes error_body                 # AWS's body for an access denial (else {"message": ...})
    cdef bytes error_code                 # x-amzn-ErrorType for it, when not the type's own

    # the active exchange
    cdef RequestContext ctx
    cdef Snapshot snap
    cdef list pending                     # [PendingRequest]
    cdef bint req_complete                # the active request's body has fully arrived
    cdef bint responding                  # the response head has been sent to the client
    cdef Py_ssize_t head_mark             # offset of the relayed head in the cork buffer while it is
                                          # still there (not written), else -1
    cdef bint streaming_function          # a function's streamed response is being relayed
    cdef bint close_after                 # close the connection after this response
    cdef int body_mode                    # a BodyMode
    cdef list body_chunks                 # request body: unsent chunks, plus sent ones while retained
    cdef bint body_decoded                # decode_body() ran for the active request
    cdef Py_ssize_t body_sent             # index in body_chunks of the first unsent chunk
    cdef Py_ssize_t body_kept             # bytes held in body_chunks
    cdef bint body_retained               # every body chunk so far is still in body_chunks
    cdef UpstreamConnection upstream
    cdef object connect_task
    cdef bint tunnel                      # after 101: relay bytes both ways
    cdef bytes early_tunnel               # bytes after an Upgrade request, before the 101
    cdef int pause_reasons
    cdef bint reading_paused
    cdef double paused_at                 # when reading was last paused
    cdef bint write_blocked               # the client's write buffer is full: it is not reading
                                          # what it asked for (pause_writing .. resume_writing)
    cdef double body_start                # the body's clock: from the head (or 100 Continue), moved
                                          # on by the time the gateway itself did not read
    cdef double body_last                 # when body bytes last arrived (or the clock started)
    cdef double deadline
    cdef int deadline_kind                # a Deadline
    cdef double total_deadline            # the route's total timeout, 0 = none

    # client-side parsing and the pipeline
    cdef void begin_active(self, RequestContext ctx, Snapshot snap, list chunks, bint complete, str error)
    cdef bint validate_head(self, RequestContext ctx, Snapshot snap)
    cdef fill_basic(self, RequestContext ctx)
    cdef void parse_failed(self)
    cdef void message_begin(self)
    cdef void take_header(self, bytes name, bytes value)
    cdef bint head_complete(self)
    cdef bint body(self, bytes data)
    cdef bint message_complete(self)
    cdef int run_phases(self)
    cdef int wait_for_body(self, RequestContext ctx, int phase)
    cdef int continue_phases(self, int phase)
    cdef int check_key(self, RequestContext ctx, KeyGate gate) except -1   # an AccessVerdict
    cdef bint run_throttle(self, RequestContext ctx, Route route)
    cdef bint decode_body(self, RequestContext ctx)
    cdef int serve_cached(self, RequestContext ctx, Route route)
    cdef void answer_cached(self, RequestContext ctx, tuple hit)
    cdef void record_cache_result(self, RequestContext ctx)
    cdef void start_cache_fill(self, RequestContext ctx, int status, long long length, list headers)
    cdef void store_cached(self, RequestContext ctx, int status, bytes head, bytes body)
    cdef list start_compression(self, RequestContext ctx, list headers, long long length)
    cdef void add_body(self, bytes data)
    cdef void start_body_clock(self)
    cdef double body_due(self)
    cdef void ask_for_body(self)
    cdef void request_finished(self)

    # integrations
    cdef void start_http(self)
    cdef void attempt(self, Target exclude)
    cdef void connect(self, Target target)
    cdef void upstream_ready(self, UpstreamConnection conn)
    cdef void write_upstream_request(self, UpstreamConnection conn, list chunks)
    cdef bytes build_upstream_head(self, bytes target_host)
    cdef void send_body_chunk(self, bytes data)
    cdef void finish_upstream_request(self)
    cdef void upstream_failed(self, str kind, str detail, bint retryable)
    cdef bint upstream_to_blame(self, str kind)
    cdef void drop_upstream(self)
    cdef bint take_back_head(self)
    cdef void cut_response(self)
    cdef void upstream_head(self, UpstreamConnection conn, int status)
    cdef void upstream_body(self, bytes data)
    cdef void relay_body(self, const char* p, Py_ssize_t n, bytes whole)
    cdef void upstream_done(self, UpstreamConnection conn, bint reusable)
    cdef void give_back(self, UpstreamConnection conn, bint reusable)
    cdef void start_function(self)
    cdef void respond_mock(self)
    cdef void respond_mock_vtl(self, Route route)
    cdef object mapping_event(self, RequestContext ctx, bytes body)
    cdef bint map_request(self, RequestContext ctx, Route route)
    cdef void start_mapped_response(self, UpstreamConnection conn, int status)
    cdef void finish_mapped_response(self, UpstreamConnection conn, bint reusable)
    cdef void respond_mapped(self, object result)
    cdef void respond_echo(self)

    # responses
    cdef void respond(self, int status, list headers, bytes body)
    cdef void respond_error(self, str error_type, str detail)
    cdef void out_api_headers(self, RequestContext ctx)
    cdef void write_head(self, int status, bytes reason, list headers, long long length)
    cdef void exchange_done(self)
    cdef void log_exchange(self)
    cdef void set_pause(self, int reason, bint on)
    cdef void check_timeout(self, double now)
    cdef void abort(self)
    cdef void shutdown(self)
    cdef void cork(self)
    cdef void send(self, data)
    cdef void send_ptr(self, const char* p, Py_ssize_t n, bytes whole)
    cdef void flush_cork(self)
    cdef void uncork(self)
    cdef feed(self, bytes data)


cdef class UpstreamConnection:
    cdef Target target
    cdef object transport
    cdef object t_write                   # transport.write and .is_closing, bound once (as above)
    cdef object t_is_closing
    cdef Http1Parser parser               # responses, driven from C (http1.pxd)
    cdef ClientConnection client          # the exchange using it; None while idle
    cdef bint is_alive
    cdef bint got_bytes                   # any response byte arrived for the current request
    cdef bint head_request                # response to HEAD: no body whatever the headers say
    cdef bint head_done                   # response head received
    cdef bint until_close                 # body delimited by connection close
    cdef bint tunnel
    cdef int tunnel_eofs                  # half-closes seen in the tunnel, one per side; at 2 both close
    cdef bint interim                     # the message being parsed is a 1xx (not relayed)
    cdef bint head_written                # this request's head is on the wire. Body (and tunnel)
                                          # bytes go out only after it, through send_body: ahead of
                                          # it the upstream would read them as a request of their
                                          # own, one the gateway never saw (request smuggling)

    cdef void attach(self, ClientConnection client, bint head_request)
    cdef void send_head(self, bytes data)
    cdef void send_body(self, bytes data)
    cdef bint on_event(self, int ev, bytes data, const char* buf, Py_ssize_t off, Py_ssize_t n)
    cdef void release(self, bint reusable)
    cpdef close(self)
    cpdef bint alive(self)
