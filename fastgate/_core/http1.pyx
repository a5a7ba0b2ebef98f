# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""HTTP/1.1 parser over llhttp with C callbacks; http1.pxd is the map of this file.

llhttp: MIT License, Copyright Fedor Indutny 2018 (build/llhttp/LICENSE-MIT,
fetched with the sources from the httptools sdist by setup.py).
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy

# Python-visible copies of the enums, for tests and the control plane.
NEED_MORE = EV_NEED_MORE
HEAD_COMPLETE = EV_HEAD_COMPLETE
BODY = EV_BODY
MESSAGE_COMPLETE = EV_MESSAGE_COMPLETE
UPGRADE = EV_UPGRADE
ERROR = EV_ERROR
NO_LIMIT = LIMIT_NONE
URL_LIMIT = LIMIT_URL
HEADERS_LIMIT = LIMIT_HEADERS
HEAD_LIMIT = LIMIT_HEAD

cdef extern from *:
    """
    /* llhttp_method_name() aborts on a code it does not know; this table has NULL there */
    static const char* fastgate_method_names[64];
    static void fastgate_fill_method_names(void) {
    #define FASTGATE_METHOD(NUM, NAME, STRING) if (NUM < 64) fastgate_method_names[NUM] = #STRING;
        HTTP_ALL_METHOD_MAP(FASTGATE_METHOD)
    #undef FASTGATE_METHOD
    }
    """
    const char** fastgate_method_names
    void fastgate_fill_method_names()

# llhttp method code -> interned bytes (b"GET"), so method_bytes() allocates nothing.
fastgate_fill_method_names()
cdef tuple METHODS = tuple(fastgate_method_names[i] if fastgate_method_names[i] != NULL else b""
                           for i in range(64))


# ---------------------------------------------------------------------------
# llhttp callbacks: plain C on Http1Message, no Python objects. A data callback
# may be called several times for one field (a field split across reads); the
# pieces land next to each other in buf because nothing else is appended between.

cdef llhttp_settings_t SETTINGS   # shared by every parser; lives as long as the module


cdef inline int append(Http1Message* m, const char* at, size_t n) noexcept nogil:
    """Copy n bytes to the end of m.buf; -1 when out of memory."""
    cdef Py_ssize_t need = m.used + <Py_ssize_t>n
    cdef Py_ssize_t cap = m.cap
    cdef char* nb
    if need > cap:
        while cap < need:
            cap *= 2
        nb = <char*>realloc(m.buf, cap)
        if nb == NULL:
            return -1
        m.buf = nb
        m.cap = cap
    memcpy(m.buf + m.used, at, n)
    m.used = need
    return 0


cdef inline int too_big(llhttp_t* p, Http1Message* m, const char* end) noexcept nogil:
    """HPE_USER when the head (raw bytes so far, up to end) or the buffer passed max_head."""
    if m.in_head:
        if m.head_carry + (end - m.feed_base) > m.max_head:
            m.limit = LIMIT_HEAD
            llhttp_set_error_reason(p, "header section too large")
            return HPE_USER
    elif m.used > m.max_head:
        # trailers: bounded by what they add to the buffer
        m.limit = LIMIT_HEAD
        llhttp_set_error_reason(p, "trailer section too large")
        return HPE_USER
    return 0


cdef inline int out_of_memory(llhttp_t* p, Http1Message* m) noexcept nogil:
    m.limit = LIMIT_MEMORY
    llhttp_set_error_reason(p, "out of memory")
    return HPE_USER


cdef int cb_message_begin(llhttp_t* p) noexcept nogil:
    cdef Http1Message* m = <Http1Message*>p.data
    m.used = 0
    m.n_fields = 0
    m.n_headers = 0
    m.field_open = False
    m.url_off = m.url_len = 0
    m.reason_off = m.reason_len = 0
    m.content_length = -1
    m.chunked = False
    # the message starts where this feed() started: each feed after MESSAGE_COMPLETE
    # begins at the next message (up to a few stray CRLFs llhttp skips, counted here)
    m.in_head = True
    m.head_carry = 0
    m.head_size = 0
    return 0


cdef inline Py_ssize_t raw_offset(Http1Message* m, const char* at) noexcept nogil:
    """Offset of at from the start of the message's head, across feed() calls."""
    return m.head_carry + (at - m.feed_base)


cdef inline int extra_space(llhttp_t* p) noexcept nogil:
    llhttp_set_error_reason(p, "more than one space between request line elements")
    return HPE_USER


cdef int cb_method(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef Http1Message* m = <Http1Message*>p.data
    m.line_end = raw_offset(m, at + n)
    return 0


cdef int cb_protocol(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    # "HTTP" of the version; a piece continuing it (split across reads) starts at line_end
    cdef Http1Message* m = <Http1Message*>p.data
    cdef Py_ssize_t start
    if p.type == HTTP_REQUEST:
        start = raw_offset(m, at)
        if start != m.line_end and start != m.line_end + 1:
            return extra_space(p)
        m.line_end = raw_offset(m, at + n)
    return 0


cdef int cb_url(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef Http1Message* m = <Http1Message*>p.data
    if m.url_len == 0:
        m.url_off = m.used
        if raw_offset(m, at) != m.line_end + 1:
            return extra_space(p)
    m.url_len += n
    m.line_end = raw_offset(m, at + n)
    if m.url_len > m.max_url:
        m.limit = LIMIT_URL
        llhttp_set_error_reason(p, "request target too long")
        return HPE_USER
    if append(m, at, n) < 0:
        return out_of_memory(p, m)
    return too_big(p, m, at + n)


cdef int cb_status(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef Http1Message* m = <Http1Message*>p.data
    if m.reason_len == 0:
        m.reason_off = m.used
    m.reason_len += n
    if append(m, at, n) < 0:
        return out_of_memory(p, m)
    return too_big(p, m, at + n)


cdef int grow_fields(Http1Message* m) noexcept nogil:
    cdef int cap = m.fields_cap * 2
    cdef FieldSpan* f
    if cap > m.max_headers:
        cap = m.max_headers
    f = <FieldSpan*>realloc(m.fields, cap * sizeof(FieldSpan))
    if f == NULL:
        return -1
    m.fields = f
    m.fields_cap = cap
    return 0


cdef int cb_header_field(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef Http1Message* m = <Http1Message*>p.data
    cdef FieldSpan* f
    if not m.field_open:
        if m.n_fields >= m.max_headers:
            m.limit = LIMIT_HEADERS
            llhttp_set_error_reason(p, "too many header lines")
            return HPE_USER
        if m.n_fields >= m.fields_cap and grow_fields(m) < 0:
            return out_of_memory(p, m)
        f = &m.fields[m.n_fields]
        m.n_fields += 1
        f.name_off = m.used
        f.name_len = 0
        f.value_off = m.used
        f.value_len = 0
        m.field_open = True
    else:
        f = &m.fields[m.n_fields - 1]
    f.name_len += n
    if append(m, at, n) < 0:
        return out_of_memory(p, m)
    return too_big(p, m, at + n)


cdef int cb_header_field_complete(llhttp_t* p) noexcept nogil:
    cdef Http1Message* m = <Http1Message*>p.data
    m.field_open = False
    # an empty value gets no on_header_value call: its span is empty, here
    m.fields[m.n_fields - 1].value_off = m.used
    return 0


cdef int cb_header_value(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef Http1Message* m = <Http1Message*>p.data
    m.fields[m.n_fields - 1].value_len += n
    if append(m, at, n) < 0:
        return out_of_memory(p, m)
    return too_big(p, m, at + n)


cdef int cb_headers_complete(llhttp_t* p) noexcept nogil:
    cdef Http1Message* m = <Http1Message*>p.data
    m.n_headers = m.n_fields
    if p.flags & F_CONTENT_LENGTH:
        m.content_length = <int64_t>p.content_length
    m.chunked = (p.flags & F_CHUNKED) != 0
    m.keep_alive = llhttp_should_keep_alive(p)
    m.event = EV_HEAD_COMPLETE
    return HPE_PAUSED


cdef int cb_body(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef Http1Message* m = <Http1Message*>p.data
    if n == 0:
        # llhttp flushes an open span at the end of every execute, even an empty one
        return 0
    m.body_at = at
    m.body_len = n
    m.event = EV_BODY
    return HPE_PAUSED


cdef int cb_message_complete(llhttp_t* p) noexcept nogil:
    cdef Http1Message* m = <Http1Message*>p.data
    m.keep_alive = llhttp_should_keep_alive(p)
    m.event = EV_MESSAGE_COMPLETE
    return HPE_PAUSED


llhttp_settings_init(&SETTINGS)
SETTINGS.on_message_begin = cb_message_begin
SETTINGS.on_url = cb_url
# Two more callbacks per request buy a strict request line: "GET  / HTTP/1.1" is an error
# (a 400), not a parse of its own. PERF: no change above the noise of bench/bench_http1.py
# (best runs 126 vs 134 ns per wrk request with and without them, on a loaded machine)
SETTINGS.on_method = cb_method
SETTINGS.on_protocol = cb_protocol
SETTINGS.on_status = cb_status
SETTINGS.on_header_field = cb_header_field
SETTINGS.on_header_field_complete = cb_header_field_complete
SETTINGS.on_header_value = cb_header_value
SETTINGS.on_headers_complete = cb_headers_complete
SETTINGS.on_body = cb_body
SETTINGS.on_message_complete = cb_message_complete



# ---------------------------------------------------------------------------

@cython.final
cdef class Http1Parser:
    """Http1Parser(response=False, max_headers=100, max_head=32768, max_url=8192)

    The Python-level methods (feed_bytes, headers(), properties) are for tests,
    benchmarks and the control plane; the hot path uses the cdef API in http1.pxd.
    """

    def __cinit__(self, bint response=False, int max_headers=DEFAULT_MAX_HEADERS,
                  Py_ssize_t max_head=DEFAULT_MAX_HEAD, Py_ssize_t max_url=DEFAULT_MAX_URL):
        if max_headers < 1 or max_head < 1 or max_url < 1:
            raise ValueError("limits must be positive")
        self.response = response
        self.msg.max_headers = max_headers
        self.msg.max_head = max_head
        self.msg.max_url = max_url
        self.msg.buf = <char*>malloc(INITIAL_BUFFER)
        self.msg.cap = INITIAL_BUFFER
        self.msg.fields_cap = INITIAL_FIELDS if max_headers > INITIAL_FIELDS else max_headers
        self.msg.fields = <FieldSpan*>malloc(self.msg.fields_cap * sizeof(FieldSpan))
        if self.msg.buf == NULL or self.msg.fields == NULL:
            raise MemoryError()
        self.reset()

    def __dealloc__(self):
        free(self.msg.buf)
        free(self.msg.fields)

    cdef void reset(self) noexcept:
        llhttp_init(&self.p, HTTP_RESPONSE if self.response else HTTP_REQUEST, &SETTINGS)
        self.p.data = &self.msg
        self.msg.used = 0
        self.msg.n_fields = self.msg.n_headers = 0
        self.msg.field_open = False
        self.msg.url_off = self.msg.url_len = self.msg.reason_off = self.msg.reason_len = 0
        self.msg.in_head = False
        self.msg.head_carry = self.msg.head_size = 0
        self.msg.content_length = -1
        self.msg.chunked = self.msg.keep_alive = False
        self.msg.event = EV_NEED_MORE
        self.msg.body_at = NULL
        self.msg.body_len = 0
        self.msg.limit = LIMIT_NONE
        self.consumed = 0

    cdef int feed(self, const char* data, Py_ssize_t n) noexcept:
        cdef llhttp_t* p = &self.p
        cdef Http1Message* m = &self.msg
        cdef llhttp_errno_t err
        cdef int ev
        if p.error == HPE_PAUSED:
            if m.event == EV_HEAD_COMPLETE and m.skip_body:
                # what returning 1 from on_headers_complete does: no body follows (RFC 9110 section 9.3.2)
                p.flags |= F_SKIPBODY
            llhttp_resume(p)
        elif p.error != HPE_OK:
            self.consumed = 0
            return EV_UPGRADE if p.error == HPE_PAUSED_UPGRADE else EV_ERROR
        m.feed_base = data
        err = llhttp_execute(p, data, <size_t>n)
        if err == HPE_OK:
            self.consumed = n
            if m.in_head:
                m.head_carry += n
                if m.head_carry > m.max_head:
                    # bytes no callback saw (whitespace) still count
                    return self.fail(LIMIT_HEAD, "header section too large")
            return EV_NEED_MORE
        self.consumed = llhttp_get_error_pos(p) - data
        if err == HPE_PAUSED:
            ev = m.event
            if ev == EV_HEAD_COMPLETE:
                m.in_head = False
                m.head_size = m.head_carry + self.consumed
                if m.head_size > m.max_head:
                    return self.fail(LIMIT_HEAD, "header section too large")
            return ev
        if err == HPE_PAUSED_UPGRADE:
            return EV_UPGRADE
        return EV_ERROR

    cdef int finish(self) noexcept:
        cdef llhttp_t* p = &self.p
        cdef llhttp_errno_t err
        cdef int ev
        self.consumed = 0
        if p.error == HPE_PAUSED:
            # let llhttp reach the state it would be in with no more input (the invoke
            # nodes after a pause read nothing), so it can tell whether EOF ends the body
            ev = self.feed(NULL, 0)
            if ev != EV_NEED_MORE:
                return ev
        elif p.error == HPE_PAUSED_UPGRADE:
            return EV_UPGRADE
        elif p.error != HPE_OK:
            return EV_ERROR
        err = llhttp_finish(p)
        if err == HPE_OK:
            return EV_ERROR if self.msg.in_head else EV_NEED_MORE
        if err == HPE_PAUSED:
            return self.msg.event
        p.error = err   # llhttp_finish reports without recording; make it sticky like the rest
        return EV_ERROR

    cdef void resume_after_upgrade(self) noexcept:
        llhttp_resume_after_upgrade(&self.p)

    cdef int fail(self, int limit, const char* reason) noexcept:
        self.msg.limit = limit
        self.p.error = HPE_USER
        self.p.reason = reason
        return EV_ERROR

    # --- accessors -------------------------------------------------------------

    cdef bint name_is(self, int i, const char* lower, Py_ssize_t n) noexcept:
        cdef FieldSpan* f = &self.msg.fields[i]
        return f.name_len == n and ieq(self.msg.buf + f.name_off, lower, n)

    cdef int find(self, const char* lower, Py_ssize_t n, int start) noexcept:
        cdef int i
        for i in range(start, self.msg.n_fields):
            if self.name_is(i, lower, n):
                return i
        return -1

    cdef const char* name_ptr(self, int i) noexcept:
        return self.msg.buf + self.msg.fields[i].name_off

    cdef Py_ssize_t name_len(self, int i) noexcept:
        return self.msg.fields[i].name_len

    cdef const char* value_ptr(self, int i) noexcept:
        return self.msg.buf + self.msg.fields[i].value_off

    cdef Py_ssize_t value_len(self, int i) noexcept:
        return self.msg.fields[i].value_len

    cdef bytes name_bytes(self, int i):
        return PyBytes_FromStringAndSize(self.msg.buf + self.msg.fields[i].name_off,
                                         self.msg.fields[i].name_len)

    cdef bytes value_bytes(self, int i):
        return PyBytes_FromStringAndSize(self.msg.buf + self.msg.fields[i].value_off,
                                         self.msg.fields[i].value_len)

    cdef bytes url_bytes(self):
        return PyBytes_FromStringAndSize(self.msg.buf + self.msg.url_off, self.msg.url_len)

    cdef bytes reason_bytes(self):
        return PyBytes_FromStringAndSize(self.msg.buf + self.msg.reason_off, self.msg.reason_len)

    cdef bytes method_bytes(self):
        return <bytes>METHODS[self.p.method & 63]

    cdef bint should_keep_alive(self) noexcept:
        return llhttp_should_keep_alive(&self.p)

    # --- Python-level API: tests, benchmarks, control plane ----------------------

    def feed_bytes(self, bytes data, Py_ssize_t start=0):
        """feed(data[start:]) -> (event, consumed)."""
        if start < 0 or start > PyBytes_GET_SIZE(data):
            raise ValueError("start out of range")
        cdef int ev = self.feed(PyBytes_AS_STRING(data) + start, PyBytes_GET_SIZE(data) - start)
        return ev, self.consumed

    def drain(self, bytes data, int materialize=0):
        """Parse all of data with the C event loop client.pyx will run; return the
        number of messages completed, -1 on an error. materialize: 0 reads nothing,
        1 takes method, URL and every header value as bytes, 2 also builds a list of
        (name, value) tuples per message (what httptools callbacks produce).
        For bench/bench_http1.py: the parser's cost without Python-level calls."""
        cdef const char* buf = PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data), off = 0
        cdef int ev, i, done = 0
        cdef list fields
        while True:
            ev = self.feed(buf + off, n - off)
            off += self.consumed
            if ev == EV_NEED_MORE:
                return done
            if ev == EV_HEAD_COMPLETE:
                if materialize == 1:
                    self.method_bytes()
                    self.url_bytes()
                    for i in range(self.msg.n_headers):
                        self.value_bytes(i)
                elif materialize == 2:
                    fields = [self.method_bytes(), self.url_bytes()]
                    for i in range(self.msg.n_headers):
                        fields.append((self.name_bytes(i), self.value_bytes(i)))
            elif ev == EV_MESSAGE_COMPLETE:
                done += 1
            elif ev == EV_ERROR or ev == EV_UPGRADE:
                return -1

    def eof(self):
        """finish() -> event."""
        return self.finish()

    def clear(self):
        """reset()."""
        self.reset()

    def resume_upgrade(self):
        """resume_after_upgrade()."""
        self.resume_after_upgrade()

    def find_header(self, bytes lower, int start=0):
        """Index of the first header line at or after start named lower (lowercase), -1 if none."""
        return self.find(PyBytes_AS_STRING(lower), PyBytes_GET_SIZE(lower), start)

    def headers(self):
        """[(name, value)] of the head, as bytes."""
        return [(self.name_bytes(i), self.value_bytes(i)) for i in range(self.msg.n_headers)]

    def trailers(self):
        """[(name, value)] of a chunked body's trailer section (after MESSAGE_COMPLETE)."""
        return [(self.name_bytes(i), self.value_bytes(i))
                for i in range(self.msg.n_headers, self.msg.n_fields)]

    @property
    def method(self):
        return self.method_bytes()

    @property
    def url(self):
        return self.url_bytes()

    @property
    def reason(self):
        return self.reason_bytes()

    @property
    def status_code(self):
        return self.p.status_code

    @property
    def http_version(self):
        return (self.p.http_major, self.p.http_minor)

    @property
    def keep_alive(self):
        return self.msg.keep_alive

    @property
    def upgrade(self):
        return bool(self.p.upgrade)

    @property
    def content_length(self):
        return self.msg.content_length

    @property
    def chunked(self):
        return self.msg.chunked

    @property
    def header_count(self):
        return self.msg.n_headers if not self.msg.in_head else self.msg.n_fields

    @property
    def trailer_count(self):
        return self.msg.n_fields - self.msg.n_headers if not self.msg.in_head else 0

    @property
    def head_size(self):
        return self.msg.head_size

    @property
    def buffer_size(self):
        return self.msg.cap

    @property
    def body_offset(self):
        """EV_BODY: where the body bytes start, relative to the input of the last feed."""
        return self.msg.body_at - self.msg.feed_base

    @property
    def body_len(self):
        return self.msg.body_len

    @property
    def limit(self):
        return self.msg.limit

    @property
    def error_name(self):
        return llhttp_errno_name(<llhttp_errno_t>self.p.error).decode()

    @property
    def error_reason(self):
        """Why parsing stopped (llhttp's reason or a limit's), None without an error."""
        if self.p.error == HPE_OK or self.p.error == HPE_PAUSED or self.p.reason == NULL:
            return None
        return self.p.reason.decode("ascii", "replace")

    @property
    def skip_body(self):
        return self.msg.skip_body

    @skip_body.setter
    def skip_body(self, bint value):
        self.msg.skip_body = value
