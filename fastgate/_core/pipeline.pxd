# The life of one request: its phases, what a phase tells the dispatcher to
# do next, the one context object every phase reads and writes, and a route
# as the control plane compiled it.
#
# Phases run in this fixed order (a phase with nothing configured for the
# route is skipped at no cost):
#
#   ROUTE -> ACCESS -> THROTTLE -> VALIDATE -> REQUEST_TRANSFORM -> CACHE
#         -> INTEGRATION -> RESPONSE_TRANSFORM -> CORS -> LOG
#
# A phase ends a request by *returning* ACTION_RESPOND with ctx.status and
# ctx.error_type set; it never raises for an expected failure.

cpdef enum Phase:
    PHASE_ROUTE = 0               # host/method/path -> Route; no match answers 404
    PHASE_ACCESS = 1              # IP policy, API key, JWT, SigV4, authorizers
    PHASE_THROTTLE = 2            # token buckets: key, route, stage, gateway
    PHASE_VALIDATE = 3            # required parameters, body models
    PHASE_REQUEST_TRANSFORM = 4   # header set/append/remove/rename, path rewrite
    PHASE_CACHE = 5               # response cache lookup
    PHASE_INTEGRATION = 6         # upstream proxy, function, mock, echo
    PHASE_RESPONSE_TRANSFORM = 7  # response header transforms
    PHASE_CORS = 8                # CORS headers and preflight
    PHASE_LOG = 9                 # access log line and metrics, after the last byte

cpdef enum Action:       # what every phase returns (the Python ones too: an AccessPhase)
    ACTION_CONTINUE = 0   # run the next phase
    ACTION_RESPOND = 1    # send the gateway response for ctx.error_type now
    ACTION_RETRY = 2      # the integration failed before anything reached the client: try
                          # another target (Proxy.failed returns it; the dispatcher retries)
    ACTION_WAIT = 3       # the phase started asynchronous work: it resumes the dispatcher
                          # itself (Exchange.resume), and nothing else may run meanwhile

cdef enum Waiting:                # what a request waits for between its phases
    WAIT_NONE = 0
    WAIT_BODY = 1                 # the whole body, before the access check (SigV4 payload hash)
                                  # or body validation; wait_phase says which
    WAIT_ACCESS = 2               # an asynchronous access check (JWKS fetch, Lambda authorizer)
    WAIT_THROTTLE = 3             # the THROTTLE phase's takes from Redis (several hosts)
    WAIT_CACHE = 4                # the CACHE phase's lookup in Redis after a local miss
    WAIT_INTEGRATION = 5          # a function (or other Python integration) answers later

cdef enum BodyMode:               # how the response body is framed towards the client
    BODY_NONE = 0                 # no body (HEAD, 1xx, 204, 304)
    BODY_LENGTH = 1               # Content-Length passed through
    BODY_CHUNKED = 2              # re-chunked towards an HTTP/1.1 client
    BODY_CLOSE = 3                # until close (HTTP/1.0 client of an unframed response)

cpdef enum Integration:
    INTEGRATION_HTTP = 0  # proxy to an upstream group
    INTEGRATION_MOCK = 1  # fixed status, headers and templated body
    INTEGRATION_ECHO = 2  # answer with the request as the integration would have received it, as JSON
    INTEGRATION_FUNCTION = 3  # a Lambda-style handler (fastgate.phases.functions) with API Gateway's event
    INTEGRATION_PYTHON = 4    # Python the route carries (Route.runner: AWS services, Lambda non-proxy,
                              # fastgate.phases.aws): runner.start(exchange, ctx, body) once the body
                              # is whole; it answers through Integrations.integration_done
    INTEGRATION_WEBSOCKET = 5  # a WebSocket API's stage URL (the upgrade, $connect) or its
                               # @connections API: Route.websocket answers (fastgate.phases.websocket)


cdef class ApiStage:
    # One stage of one API as the data plane serves it: the deployment's routes
    # compiled with the stage's variables. A stage with a canary has two of
    # these (the canary's compiled with its variable overrides), under one Mount.
    cdef readonly str api_id                  # RestApi id
    cdef readonly str api_name
    cdef readonly str stage                   # stage name ("prod", "$default")
    cdef readonly str deployment_id
    cdef readonly bint rest                   # REST API semantics: 403 MISSING_AUTHENTICATION_TOKEN for
                                              # no route, x-amzn-RequestId / x-amzn-ErrorType headers;
                                              # else HTTP API: 404 Not Found, apigw-requestid
    cdef readonly bint is_canary              # the canary side of its stage
    cdef readonly object router               # fastgate._core.router.Router, host "*"; values are Routes
    cdef readonly dict responses              # gateway response type -> GatewayResponse (this API's table)
    cdef readonly dict variables              # stage variables (with canary overrides on the canary side)
    cdef readonly object cors                 # fastgate.phases.cors.CorsConfig of the API, or None
    cdef readonly long long min_compress      # minimumCompressionSize (bytes); -1 = no compression
    cdef readonly bytes stage_b               # stage as bytes, for templates and headers
    cdef readonly bytes api_id_b
    cdef readonly object access_log           # fastgate._core.accesslog.AccessLog of the stage's
                                              # accessLogSettings, or None
    cdef readonly bint access_log_only        # its line replaces the gateway's access_log line (a
                                              # CloudWatch ARN destination: the gateway's own sink)


cdef class Mount:
    # Where an API stage answers: a path prefix on a host (or on any host).
    # The longest matching prefix wins; the prefix is stripped before routing.
    cdef readonly bytes prefix                # b"/prod", b"/restapis/ID/prod/_user_request_", b"" = root
    cdef readonly ApiStage main
    cdef readonly ApiStage canary             # or None
    cdef readonly double canary_percent       # 0..100: share of requests served by `canary`
    cdef readonly str source                  # "stage", "execute-api", "domain api.example.com", for /routes

    cdef ApiStage pick(self)                  # main, or canary for canary_percent of calls


cdef class GatewayResponse:
    # One gateway response type as an API answers it (AWS's defaults, or the API's customisation).
    cdef readonly str response_type           # "MISSING_AUTHENTICATION_TOKEN"
    cdef readonly int status
    cdef readonly str message                 # $context.error.message
    cdef readonly bytes error_type            # x-amzn-ErrorType value (REST APIs), e.g. b"ForbiddenException"
    cdef readonly list headers                # [(name bytes, value Template)] from responseParameters
    cdef readonly object body                 # headers.Template over $context.error.* etc., or None = {"message": ...}
    cdef readonly bint customised             # the API set this type's status: it wins over what a
                                              # failure would answer otherwise (respond_error)


cdef class Route:
    # Immutable once built by the control plane (fastgate.compile.snapshot); shared by
    # every request that matches it, never mutated on the hot path.
    cdef readonly int index                   # position in the snapshot (metrics series id)
    cdef readonly str route_key               # "GET /pets/{id}", as API Gateway writes routeKey
    cdef readonly str host                    # host pattern the route was declared for ("*" = any)
    cdef readonly int integration             # an Integration
    cdef readonly object upstream             # fastgate._core.upstream.UpstreamGroup for HTTP, else None
    cdef readonly object request_headers      # fastgate._core.headers.HeaderTransform or None
    cdef readonly object response_headers     # fastgate._core.headers.HeaderTransform or None
    cdef readonly object path_rewrite         # fastgate._core.headers.PathRewrite or None
    cdef readonly int mock_status
    cdef readonly list mock_headers           # [(name bytes, value bytes)]
    cdef readonly object mock_body            # fastgate._core.headers.Template
    cdef readonly object http_map             # fastgate.phases.vtl.HttpMapping of an http (non-proxy)
                                              # integration with templates / integration responses
    cdef readonly object response_map         # fastgate.phases.response_mapping.ResponseMapping: an
                                              # HTTP API integration's responseParameters, or None
    cdef readonly object mock_vtl             # fastgate.phases.vtl.MockIntegration: a mock whose mapping
                                              # templates use Velocity (then mock_* are unused)
    cdef readonly double connect_timeout      # s
    cdef readonly double first_byte_timeout   # s, from request sent to response head
    cdef readonly double total_timeout        # s, whole exchange; 0 = none
    cdef readonly long long max_body_size     # bytes; -1 = unlimited
    cdef readonly int retries                 # extra attempts after a failed one
    cdef readonly bint retry_non_idempotent   # also retry POST/PATCH when the request was not sent
    cdef readonly str function_name           # INTEGRATION_FUNCTION: the function (a `functions:` name)
    cdef readonly bint payload_v2             # INTEGRATION_FUNCTION: HTTP API 2.0 event (else REST 1.0)
    cdef readonly object runner               # INTEGRATION_PYTHON: what start(exchange, ctx, body)s it
    cdef readonly tuple binary_media_types    # the API's binaryMediaTypes (function events, responses)
    cdef readonly object access               # fastgate.phases.access.AccessPhase (policy, key, authorizer) or None
    cdef readonly object key_gate             # fastgate._core.keys.KeyGate when an API key is the method's
                                              # only access check: the ACCESS phase runs it in C
                                              # (access then holds the same gate for the Redis path)
    cdef readonly object validator            # fastgate.phases.validation.Validator (parameters, body model) or None
    cdef readonly object query_mapping        # fastgate.phases.mapping.QueryMapping: the upstream query, or None
    cdef readonly bint drop_query             # send no query string (REST HTTP integrations, unmapped)
    cdef readonly object cache                # fastgate._core.cache.RouteCache (stage caching on), or None
    cdef readonly tuple limiters              # fastgate._core.throttle.Limiter, in API Gateway's order
                                              # (usage plan, method/stage, gateway); () = no throttle
    cdef readonly ApiStage api                # the API stage this route belongs to; None for top-level routes
    cdef readonly str resource_path           # "/pets/{id}" ($context.resourcePath)
    cdef readonly object websocket            # INTEGRATION_WEBSOCKET: the stage's
                                              # fastgate.phases.websocket.StageEndpoint


cdef class RequestContext:
    # --- the request as received (filled by the protocol at headers-complete) ---
    cdef public bytes method                 # b"GET"
    cdef public bytes path                   # raw path, percent-encoding kept, no query
    cdef public bytes query                  # raw query string without "?", b"" when absent
    cdef public bytes host                   # Host header value as sent (with port if any)
    cdef public bytes route_host             # lowercased host without port, for routing
    cdef public list headers                 # [(name bytes as sent, value bytes)] in arrival order
    cdef public int http_minor               # 0 for HTTP/1.0, 1 for HTTP/1.1
    cdef public bytes source_ip              # client address (the TCP peer)
    cdef public bytes client_ip              # the client: the TCP peer, or the address a trusted
                                             # proxy put last in X-Forwarded-For (per-IP limits, policies)
    cdef public int source_port
    cdef public bytes forwarded_for          # X-Forwarded-For to send upstream
    cdef public bint tls                     # arrived over TLS
    cdef public object client_cert           # fastgate.compile.tls.ClientCert verified on the connection, or None
    cdef public int local_port               # listener port (X-Forwarded-Port)
    cdef public bytes request_id             # x-request-id: the valid incoming one, else generated
    cdef public double start                 # monotonic s when the first byte of the request arrived
    cdef public long long request_time_ms    # epoch ms of the same moment ($context.requestTimeEpoch)
    cdef public long long content_length     # declared body length; -1 when chunked or absent
    cdef public bint chunked                 # Transfer-Encoding: chunked
    cdef public bint keep_alive              # the client connection may serve another request
    cdef public bint expect_continue         # Expect: 100-continue, until the 100 Continue is sent
    cdef public bint upgrade                 # Connection: upgrade with an Upgrade header
    # what the upstream request is built from, decided at headers-complete (the connection
    # parses pipelined heads while this one runs: none of it may live on the connection)
    cdef public list forward_headers         # headers to forward: hop-by-hop, gateway-owned and
                                             # Connection-named ones removed
    cdef public bytes upgrade_protocol       # the Upgrade value (WebSocket), or None
    cdef public bytes via_received           # the request's own Via, or None
    cdef public bytes forwarded_proto        # X-Forwarded-Proto to send (a trusted proxy's, else ours)
    cdef public bytes forwarded_host         # X-Forwarded-Host to send, or None
    cdef public bytes forwarded_port         # X-Forwarded-Port to send

    # --- filled by the phases ---
    cdef public ApiStage api                 # the API stage whose mount matched; None for top-level routes
    cdef public bytes stage_path             # path after the mount prefix (what the API's router matched)
    cdef public Route route                  # None until PHASE_ROUTE matched
    cdef public object trace                 # fastgate._core.tracing.Trace, or None (tracing off)
    cdef public int upstream_status          # the HTTP integration's response status, 0 = none
    cdef public bytes cache_key              # the response cache entry this request fills on a miss
    cdef public int cache_result             # 0 none, 1 hit, 2 miss, 3 hit from Redis (X-Cache, metrics, logs)
    cdef public bytes api_key_id             # the API key's id (never its value) once the key check passed
    cdef public long long usage_slot         # its fastgate.control.usage.UsageRecorder slot, when metered
    cdef public bint metered                 # count this request for the key's usage at the end
    cdef public bint quota_used              # the key's plan let it through (GetUsage's "used")
    cdef public object auth                  # fastgate.phases.auth.AuthResult of the access check that
                                             # identified the caller (authorizer context, claims,
                                             # IAM identity), or None
    cdef public dict path_params             # {name bytes: raw value bytes} or None
    cdef public bytes upstream_path          # path (with query) sent to the integration
    cdef public list upstream_headers        # headers sent to the integration, after transforms
    cdef public object target                # upstream Target chosen for the current attempt
    cdef public int attempts                 # integration attempts made

    # --- outcome (read by the access log and metrics) ---
    cdef public int status                   # status sent to the client; 0 until sent
    cdef public str error_type               # gateway response type when the gateway answered itself
    cdef public str error_message            # detail for the JSON error body
    cdef public long long request_length     # body bytes received from the client
    cdef public long long response_length    # body bytes sent to the client
    cdef public double integration_start     # monotonic s, 0 when no integration ran
    cdef public double integration_end       # monotonic s of the integration's last byte
    cdef public double end                   # monotonic s of the last byte sent to the client

    # --- the exchange's own state: everything a request needs while it runs lives here, so
    # a new request starts from a fresh context and nothing is reset by hand (the connection
    # parses pipelined heads, and answers an earlier request, while this one waits) ---
    cdef public object snapshot              # the Snapshot it runs on (requests in flight keep theirs)
    cdef str refused                         # a gateway response type to answer at once: its head
                                             # could not be trusted (the connection closes after)
    cdef bint queued                         # waits behind the active request (pipelining)
    # the head as it was parsed (client.pyx)
    cdef public bytes url                    # the request target as sent
    cdef int cl_count, te_count, host_count  # Content-Length, Transfer-Encoding, Host lines
    cdef bint cl_bad, te_bad                 # ... one of them not usable
    cdef list conn_tokens                    # header names a Connection header lists
    cdef bytes h_xff, h_xfp, h_xfh, h_xfport, h_rid   # X-Forwarded-*, x-request-id as received
    cdef bytes h_traceparent, h_tracestate, h_xray    # incoming trace context (when tracing)
    cdef str parse_error                     # gateway response type found while parsing
    # the request body
    cdef public bint body_complete           # the whole body has arrived
    cdef list body_chunks                    # unsent chunks, plus sent ones while retained
    cdef Py_ssize_t body_sent                # index of the first unsent chunk
    cdef Py_ssize_t body_kept                # bytes held in body_chunks
    cdef bint body_retained                  # every chunk so far is still held (a retry may resend)
    cdef bint body_decoded                   # its Content-Encoding was undone (decode_body)
    cdef double body_start                   # the body's clock: from the head (or 100 Continue),
                                             # moved on by the time the gateway did not read
    cdef double body_last                    # when body bytes last arrived
    # the phases
    cdef int waiting                         # a Waiting: the phases are paused for it
    cdef int wait_phase                      # WAIT_BODY: the phase to resume once the body is here
    cdef list error_headers                  # extra headers of the gateway response (429's RateLimit)
    cdef bytes error_body                    # AWS's body for an access denial (else {"message": ...})
    cdef bytes error_code                    # its x-amzn-ErrorType, when not the type's own
    cdef public int throttle_level           # the level that answered 429 (metrics), -1 = none
    cdef int cache_decision                  # the CACHE phase's RouteCache.decide()
    # the response
    cdef public bint responding              # its head went to the client (or to the cork buffer)
    cdef Py_ssize_t head_mark                # offset of a relayed head still in the cork buffer, -1
    cdef bint streaming_function             # a function's streamed response is being relayed
    cdef int body_mode                       # a BodyMode (respond.pxd)
    cdef list cache_parts                    # body of a response being stored in the cache
    cdef bytes cache_head                    # ... its header lines
    cdef int cache_status
    cdef object compressor                   # fastgate.phases.compression.Compressor, or None
    cdef list map_parts                      # an http (non-proxy) integration's upstream body,
                                             # buffered for its response mapping; None = relaying
    cdef list map_headers                    # ... and that response's [(name, value)]
    cdef int map_status                      # ... and status
    cdef long long map_size                  # bytes of it seen
    # the upstream side
    cdef object upstream                     # fastgate._core.proxy.UpstreamConnection, or None
    cdef object connect_task                 # its connect, while under way

    cpdef bytes header(self, bytes lower_name)
    cpdef bytes query_param(self, bytes name)
    cpdef bytes path_param(self, bytes name)
    cpdef double latency(self)
    cpdef double integration_latency(self)


cdef bint ascii_ieq(bytes a, bytes lower_b)
