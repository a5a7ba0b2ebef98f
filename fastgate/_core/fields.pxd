# Header fields as the gateway reads them: which lines it owns, forwards or drops (the
# hop-by-hop ones of RFC 9110 section 7.6.1, framing, the X-Forwarded-* family), and the
# checks of the values it relies on (Host, Content-Length, x-request-id). Used by the
# client side (request heads) and the upstream side (response heads) alike.

cdef enum HeaderKind:
    H_OTHER = 0
    H_HOST
    H_CONTENT_LENGTH
    H_TRANSFER_ENCODING
    H_CONNECTION
    H_KEEP_ALIVE
    H_PROXY_CONNECTION
    H_TE
    H_TRAILER
    H_UPGRADE
    H_EXPECT
    H_REQUEST_ID
    H_VIA
    H_XFF
    H_XFP
    H_XFH
    H_XFPORT
    H_DATE
    H_TRACEPARENT                 # W3C trace context: the gateway writes its own when tracing
    H_TRACESTATE
    H_XRAY                        # X-Amzn-Trace-Id
    H_PROXY_AUTHORIZATION         # credentials meant for this proxy: never forwarded
    H_HTTP2_SETTINGS              # of an h2c upgrade (RFC 7540 section 3.2.1): hop-by-hop, dropped
    H_FORWARDED                   # RFC 7239 Forwarded, X-Real-IP, True-Client-IP: claims about the
    H_X_REAL_IP                   # client's address, forwarded only from a trusted proxy (as
    H_TRUE_CLIENT_IP              # X-Forwarded-For is kept only from one)


cdef int classify(bytes name) noexcept                         # a HeaderKind
cdef int classify_ptr(const char* p, Py_ssize_t n) noexcept    # the same, over a parser's buffer
cdef bint client_cert_header(bytes name) noexcept              # X-Client-Cert-*: the gateway's own
cdef bint client_cert_allows(dict mtls_hosts, bytes host, object cert)
cdef list connection_tokens(bytes value, list into)           # names a Connection header lists
cdef list connection_tokens_ptr(const char* p, Py_ssize_t n, list into)   # ... read in place
cdef list drop_named(list headers, list names)
cdef bint valid_request_id(bytes v) noexcept
cdef long long parse_content_length(bytes v) noexcept          # -1: not a plain decimal
cdef bint valid_host(bytes host) noexcept                      # uri-host [":" port]
cdef bytes route_host_of(bytes host)                           # lowercase, no port
cdef bytes chunk_frame(bytes data)                             # one chunk of chunked coding
cdef list without_content_encoding(list headers)
cdef list header_lines(bytes block)                            # b"A: 1\r\n" -> [(b"A", b"1")]


cdef inline bint forwarded_response_header(int kind) noexcept:
    # hop-by-hop (RFC 9110 section 7.6.1) and framing headers are the gateway's to write
    return not (kind == H_TRANSFER_ENCODING or kind == H_CONNECTION or kind == H_KEEP_ALIVE or
                kind == H_PROXY_CONNECTION or kind == H_TE or kind == H_TRAILER or kind == H_UPGRADE)
