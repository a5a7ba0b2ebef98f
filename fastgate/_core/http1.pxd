# HTTP/1.1 message parser over llhttp with C callbacks: no Python call and no
# Python object per field while parsing. One Http1Parser per connection, reused
# for every message on it (requests on a client connection, responses on an
# upstream one).
#
# llhttp is the one httptools bundles (the same version, fetched from the
# httptools sdist by setup.py into build/llhttp/ and compiled into this
# extension), with llhttp's strict defaults: no leniency is ever switched on, so
# CL+TE, duplicate or bad Content-Length, bad chunk sizes, bare LF/CR, NUL or
# other CTLs in header values, data after "Connection: close" are all errors,
# as with httptools (RFC 9112 section 6.3, section 11.2 on request smuggling).
#
# The control flow is a return code, never an exception:
#
#     off = 0
#     while True:
#         ev = parser.feed(buf + off, n - off)
#         off += parser.consumed
#         if ev == EV_NEED_MORE:        break        # every byte read; wait for the next read
#         elif ev == EV_HEAD_COMPLETE:  ...          # method, url, headers, flags readable
#         elif ev == EV_BODY:           ...          # parser.msg.body_at[:parser.msg.body_len]
#         elif ev == EV_MESSAGE_COMPLETE: ...        # next message starts at buf + off
#         elif ev == EV_UPGRADE:        ...          # buf + off onwards is the other protocol
#         else:                         ...          # EV_ERROR: parser.msg.limit, p.reason
#
# Call feed again after every event other than NEED_MORE, even with no bytes
# left (n - off == 0): a message without a body completes, and a body that ends
# exactly at the end of the input reports MESSAGE_COMPLETE, only on that call.
# Internally each callback that ends an event returns HPE_PAUSED and feed()
# resumes (llhttp_resume) on the next call.
#
# PERF (bench/bench_http1.py): per message 86 ns for wrk's request and 231 ns for
# nginx's 5-header response, against 481 and 1100 ns for httptools with Python callbacks.
#
# Body bytes are reported as EV_BODY spans into the caller's own input (zero
# copy), not handed to an owner's callback. Why: the caller already holds the
# input bytes object, so a body that is all of the read (the common case for a
# proxied body) is forwarded as that same object without a copy; a callback
# would run inside llhttp_execute, where any Python work (transport.write) could
# raise with nowhere to go but a C return code, and it would tie this module to
# client.pyx's and proxy.pyx's classes. The price is one llhttp_execute re-entry per body
# span (one per read for a Content-Length body, one per chunk piece for a
# chunked one), tens of ns (bench/bench_http1.py).
#
# Fields (URL, status reason, header names and values) are copied into one
# growable C buffer per message (msg.buf, kept across messages) and recorded as
# (offset, length) spans, so a field split across reads is still one
# contiguous span. They stay valid until the next message begins, i.e. the
# first feed() after EV_MESSAGE_COMPLETE that carries bytes; read or copy what
# you need before that. Names keep their original case; name_is() and find()
# compare case-insensitively against a lowercase C string without objects.
#
# Limits are checked in the callbacks, in C, and end parsing with EV_ERROR and
# msg.limit set (LIMIT_URL -> 414, LIMIT_HEADERS / LIMIT_HEAD -> 431): the
# buffer never grows past them, whatever a client sends.

from libc.stdint cimport uint8_t, uint16_t, int32_t, uint64_t, int64_t


cdef extern from "llhttp.h" nogil:
    # Only the fields this module reads; the real struct has more.
    ctypedef struct llhttp_t:
        int32_t error             # an llhttp_errno; sticky until llhttp_init/reset
        const char* reason        # static C string explaining error
        const char* error_pos     # where parsing stopped (pause or error), inside the last input
        void* data                # -> the owning parser's Http1Message
        uint64_t content_length   # Content-Length, counting DOWN as the body is read
        uint8_t type              # HTTP_REQUEST or HTTP_RESPONSE
        uint8_t method            # llhttp_method code (requests)
        uint8_t http_major
        uint8_t http_minor
        uint8_t upgrade           # 1: the bytes after this message are not HTTP
        uint16_t flags            # F_* below
        uint16_t status_code      # responses

    ctypedef int (*llhttp_data_cb)(llhttp_t*, const char* at, size_t length) noexcept
    ctypedef int (*llhttp_cb)(llhttp_t*) noexcept

    ctypedef struct llhttp_settings_t:
        llhttp_cb on_message_begin
        llhttp_data_cb on_url
        llhttp_data_cb on_method
        llhttp_data_cb on_protocol
        llhttp_data_cb on_status
        llhttp_data_cb on_header_field
        llhttp_data_cb on_header_value
        llhttp_cb on_headers_complete
        llhttp_data_cb on_body
        llhttp_cb on_message_complete
        llhttp_cb on_header_field_complete
        llhttp_cb on_header_value_complete

    ctypedef enum llhttp_errno_t:
        HPE_OK
        HPE_PAUSED
        HPE_PAUSED_UPGRADE
        HPE_USER

    ctypedef enum llhttp_type_t:
        HTTP_REQUEST
        HTTP_RESPONSE

    enum:
        F_CHUNKED                 # Transfer-Encoding ends in chunked
        F_CONTENT_LENGTH          # a Content-Length header was seen
        F_SKIPBODY                # what on_headers_complete returning 1 sets: no body follows
        F_TRANSFER_ENCODING       # any Transfer-Encoding header

    void llhttp_init(llhttp_t* parser, llhttp_type_t type, const llhttp_settings_t* settings)
    void llhttp_settings_init(llhttp_settings_t* settings)
    llhttp_errno_t llhttp_execute(llhttp_t* parser, const char* data, size_t length)
    llhttp_errno_t llhttp_finish(llhttp_t* parser)
    int llhttp_should_keep_alive(const llhttp_t* parser)
    int llhttp_message_needs_eof(const llhttp_t* parser)
    void llhttp_resume(llhttp_t* parser)
    void llhttp_resume_after_upgrade(llhttp_t* parser)
    const char* llhttp_get_error_pos(const llhttp_t* parser)
    void llhttp_set_error_reason(llhttp_t* parser, const char* reason)
    const char* llhttp_errno_name(llhttp_errno_t err)


cdef enum Event:
    # What feed() / finish() returns; parser.consumed says how far it read.
    EV_NEED_MORE = 0          # all input consumed, the message goes on: wait for the next read
    EV_HEAD_COMPLETE = 1      # head parsed: url/reason, headers, method, version, flags readable;
                              # set skip_body now at the latest; then feed the rest
    EV_BODY = 2               # body bytes at body_at, body_len (de-chunked), inside the input just fed
    EV_MESSAGE_COMPLETE = 3   # message ended right before data + consumed; trailers readable;
                              # the next message starts at data + consumed
    EV_UPGRADE = 4            # upgrade/CONNECT (after its MESSAGE_COMPLETE) or a 101 response:
                              # data + consumed onwards is the other protocol; feed keeps
                              # answering this until resume_after_upgrade()
    EV_ERROR = 5              # malformed message or a limit hit (msg.limit); sticky until reset()


cdef enum Limit:
    # Which limit ended parsing with EV_ERROR (msg.limit); LIMIT_NONE for a syntax error.
    LIMIT_NONE = 0
    LIMIT_URL = 1             # request target longer than max_url            -> 414
    LIMIT_HEADERS = 2         # more than max_headers lines (trailers count)  -> 431
    LIMIT_HEAD = 3            # request/status line + headers over max_head   -> 431
    LIMIT_MEMORY = 4          # malloc failed                                 -> 500, close


cdef enum:
    # Tunables; the constructor's defaults (nginx-like, API Gateway's limits).
    DEFAULT_MAX_HEADERS = 100     # header lines per message (head and trailers together)
    DEFAULT_MAX_HEAD = 32768      # bytes (32 KiB): request/status line + header lines, raw
    DEFAULT_MAX_URL = 8192        # bytes (8 KiB): request target
    INITIAL_BUFFER = 1024         # bytes: field buffer at creation; doubles as needed
    INITIAL_FIELDS = 16           # header spans at creation; doubles as needed, up to max_headers


ctypedef struct FieldSpan:
    # One header (or trailer) line: name and value as spans of Http1Message.buf.
    Py_ssize_t name_off
    Py_ssize_t name_len
    Py_ssize_t value_off      # value without surrounding whitespace, as llhttp reports it
    Py_ssize_t value_len


ctypedef struct Http1Message:
    # Everything the C callbacks touch (llhttp_t.data points here). Readable
    # directly from other Cython modules: parser.msg.n_headers, ...
    char* buf                 # url/reason + names + values of the current message
    Py_ssize_t used           # bytes of buf in use
    Py_ssize_t cap            # bytes allocated
    FieldSpan* fields         # fields_cap entries; grows (doubling) up to max_headers
    int fields_cap            # entries allocated: INITIAL_FIELDS at first, so an idle
                              # connection does not carry room for max_headers lines
    int n_fields              # header lines so far, trailers included
    int n_headers             # header lines of the head (fixed at HEAD_COMPLETE)
    bint field_open           # a name is being read (split names continue it)
    Py_ssize_t url_off        # request target (requests)
    Py_ssize_t url_len
    Py_ssize_t line_end       # requests: raw offset in the head where the request line's last
                              # element so far (method, target) ended: the next must start one
                              # byte (one SP) later (RFC 9112 section 3; llhttp skips any number)
    Py_ssize_t reason_off     # reason phrase (responses)
    Py_ssize_t reason_len
    bint in_head              # between message begin and HEAD_COMPLETE
    const char* feed_base     # start of the input of the current feed()
    Py_ssize_t head_carry     # head bytes read by earlier feed() calls
    Py_ssize_t head_size      # raw head bytes (request/status line to the empty line), at HEAD_COMPLETE
    int64_t content_length    # Content-Length of this message, -1 when absent (fixed at HEAD_COMPLETE)
    bint chunked              # Transfer-Encoding: chunked (fixed at HEAD_COMPLETE)
    bint keep_alive           # llhttp_should_keep_alive at HEAD_COMPLETE, again at MESSAGE_COMPLETE
    bint skip_body            # responses: no body follows this head (answer to HEAD); set by the caller
    int event                 # the Event the pausing callback stands for
    const char* body_at       # EV_BODY: first body byte, inside the caller's input
    Py_ssize_t body_len       # EV_BODY: number of body bytes
    int limit                 # a Limit, after EV_ERROR
    int max_headers           # limits, from the constructor
    Py_ssize_t max_head
    Py_ssize_t max_url


cdef class Http1Parser:
    cdef llhttp_t p               # llhttp state; p.data = &msg
    cdef Http1Message msg         # fields, spans, counters, limits (see above)
    cdef readonly Py_ssize_t consumed   # bytes of the last feed()'s input read, whatever the event
    cdef readonly bint response   # parses responses (else requests)

    # Parse up to n bytes at data; returns an Event, sets consumed. Never raises.
    cdef int feed(self, const char* data, Py_ssize_t n) noexcept
    # The peer closed: EV_MESSAGE_COMPLETE if that ends a read-until-close
    # response, EV_NEED_MORE if no message was in progress, EV_ERROR if one was cut.
    cdef int finish(self) noexcept
    # Back to a fresh state (clears a sticky error), e.g. for a pooled connection.
    cdef void reset(self) noexcept
    # After EV_UPGRADE, when the upgrade was refused: parse HTTP again from there.
    cdef void resume_after_upgrade(self) noexcept

    # Accessors, valid from EV_HEAD_COMPLETE until the next message begins.
    cdef bint name_is(self, int i, const char* lower, Py_ssize_t n) noexcept   # header i's name == lower (ASCII case-insensitive)
    cdef int find(self, const char* lower, Py_ssize_t n, int start) noexcept   # first header >= start named lower, -1 if none
    cdef const char* name_ptr(self, int i) noexcept      # header i's name, name_len(i) bytes, not NUL-terminated
    cdef Py_ssize_t name_len(self, int i) noexcept
    cdef const char* value_ptr(self, int i) noexcept     # header i's value, value_len(i) bytes
    cdef Py_ssize_t value_len(self, int i) noexcept
    cdef bytes name_bytes(self, int i)                   # new bytes objects, only when asked
    cdef bytes value_bytes(self, int i)
    cdef bytes url_bytes(self)
    cdef bytes reason_bytes(self)
    cdef bytes method_bytes(self)                        # interned b"GET" etc.: no allocation
    cdef bint should_keep_alive(self) noexcept           # llhttp_should_keep_alive now
    cdef int fail(self, int limit, const char* reason) noexcept    # make the error sticky; returns EV_ERROR


# (inline: the header classifier, fields.pyx, compares names with it too)
cdef inline bint ieq(const char* s, const char* lower, Py_ssize_t n) noexcept nogil:
    """s[:n] equals lower[:n] ignoring ASCII case; lower must be lowercase."""
    cdef Py_ssize_t i
    cdef char c
    for i in range(n):
        c = s[i]
        if b'A' <= c <= b'Z':
            c = c + 32
        if c != lower[i]:
            return False
    return True
