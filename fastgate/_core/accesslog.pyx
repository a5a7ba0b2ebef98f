# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Access log: format on the hot path into memory, write on a thread; see accesslog.pxd."""

import os
import queue
import re
import stat
import sys
import threading

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy
from libc.stdio cimport snprintf
from posix.time cimport time_t

from fastgate._core.pipeline cimport RequestContext

cdef extern from "<time.h>" nogil:
    struct tm:
        int tm_sec
        int tm_min
        int tm_hour
        int tm_mday
        int tm_mon
        int tm_year
    tm* gmtime_r(const time_t* t, tm* out)

cdef enum:
    INITIAL_BUFFER = 2 * FLUSH_AT     # bytes; one flush interval of a busy worker fits without realloc

# Month names for CLF time; strftime's %b follows the locale, CLF is always English.
cdef extern from *:
    """
    static const char *FG_MONTHS[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    """
    const char* FG_MONTHS[12]
cdef const char* HEX = b"0123456789abcdef"

VARIABLES = {
    "requestId": VAR_REQUEST_ID,
    "identity.sourceIp": VAR_SOURCE_IP,
    "identity.userAgent": VAR_USER_AGENT,
    "httpMethod": VAR_HTTP_METHOD,
    "path": VAR_PATH,
    "routeKey": VAR_ROUTE_KEY,
    "protocol": VAR_PROTOCOL,
    "status": VAR_STATUS,
    "responseLength": VAR_RESPONSE_LENGTH,
    "requestTime": VAR_REQUEST_TIME,
    "requestTimeEpoch": VAR_REQUEST_TIME_EPOCH,
    "integrationLatency": VAR_INTEGRATION_LATENCY,
    "responseLatency": VAR_RESPONSE_LATENCY,
    "domainName": VAR_DOMAIN_NAME,
    "error.responseType": VAR_ERROR_RESPONSE_TYPE,
    "error.message": VAR_ERROR_MESSAGE,
    "cacheStatus": VAR_CACHE_STATUS,
}

# $context.cacheStatus by RequestContext.cache_result (the labels of fastgate_cache_requests_total)
_CACHE_STATUS = (b"-", b"hit", b"miss", b"redis_hit")

# API Gateway's own CLF template, requestId appended as it does; caller and
# user are IAM identities fastgate does not have, so always "-".
CLF_TEMPLATE = ('$context.identity.sourceIp - - [$context.requestTime] '
                '"$context.httpMethod $context.path $context.protocol" '
                '$context.status $context.responseLength $context.requestId')

# One key per variable; values are JSON strings, as in API Gateway's JSON template.
JSON_KEYS = (
    ("requestId", "requestId"), ("sourceIp", "identity.sourceIp"),
    ("userAgent", "identity.userAgent"), ("httpMethod", "httpMethod"), ("path", "path"),
    ("routeKey", "routeKey"), ("protocol", "protocol"), ("status", "status"),
    ("responseLength", "responseLength"), ("requestTime", "requestTime"),
    ("requestTimeEpoch", "requestTimeEpoch"), ("integrationLatency", "integrationLatency"),
    ("responseLatency", "responseLatency"), ("domainName", "domainName"),
    ("errorResponseType", "error.responseType"), ("errorMessage", "error.message"),
    ("cacheStatus", "cacheStatus"),
)
JSON_TEMPLATE = "{" + ",".join(f'"{k}":"$context.{v}"' for k, v in JSON_KEYS) + "}"

_VARIABLE = re.compile(r"\$context\.([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)")
_STOP = object()
_REOPEN = object()


def compile_template(str template):
    """[(literal, variable name or None)], and the unknown $context names (which
    are folded into the literals as "-")."""
    parts = []
    unsupported = []
    literal = []
    pos = 0
    for m in _VARIABLE.finditer(template):
        literal.append(template[pos:m.start()])
        pos = m.end()
        name = m.group(1)
        if name in VARIABLES:
            parts.append(("".join(literal), name))
            literal = []
        else:
            literal.append("-")
            unsupported.append(name)
    literal.append(template[pos:])
    parts.append(("".join(literal), None))
    return parts, unsupported


cdef inline int utf8_sequence_len(const unsigned char* p, Py_ssize_t avail) noexcept nogil:
    """Length of the well-formed UTF-8 sequence starting at p (lead byte >= 0x80),
    0 when it is not one (RFC 3629 section 4 table: no overlongs, no surrogates)."""
    cdef unsigned char c = p[0], lo = 0x80, hi = 0xBF
    cdef int need, j
    if 0xC2 <= c <= 0xDF:
        need = 1
    elif c == 0xE0:
        need = 2
        lo = 0xA0
    elif 0xE1 <= c <= 0xEF:
        need = 2
        if c == 0xED:
            hi = 0x9F
    elif c == 0xF0:
        need = 3
        lo = 0x90
    elif 0xF1 <= c <= 0xF3:
        need = 3
    elif c == 0xF4:
        need = 3
        hi = 0x8F
    else:
        return 0
    if avail <= need or not (lo <= p[1] <= hi):
        return 0
    for j in range(2, need + 1):
        if not (0x80 <= p[j] <= 0xBF):
            return 0
    return need + 1


cdef class AccessLog:

    def __cinit__(self):
        self.ops = NULL
        self.buf = NULL
        self.time_cached_s = -1

    def __init__(self, str path, str format):
        self.path = path
        self.format = format
        self.unsupported = []
        if format == "clf":
            template, self.escape = CLF_TEMPLATE, ESCAPE_CLF
        elif format == "json":
            template, self.escape = JSON_TEMPLATE, ESCAPE_JSON
        elif "$context." in format:
            template, self.escape = format, ESCAPE_JSON
        else:
            raise ValueError(f'access log format must be "clf", "json" or a $context template, got {format!r}')
        parts, self.unsupported = compile_template(template)
        self.n_ops = len(parts)
        self.ops = <Op*>malloc(self.n_ops * sizeof(Op))
        if self.ops == NULL:
            raise MemoryError()
        literals = []
        cdef Py_ssize_t start = 0
        cdef int i
        for i, (literal, name) in enumerate(parts):
            encoded = literal.encode()
            self.ops[i].lit_start = start
            self.ops[i].lit_len = len(encoded)
            self.ops[i].var = VARIABLES[name] if name is not None else VAR_LITERAL
            literals.append(encoded)
            start += len(encoded)
        self.literals = b"".join(literals)
        self.buf = <char*>malloc(INITIAL_BUFFER)
        if self.buf == NULL:
            raise MemoryError()
        self.buf_cap = INITIAL_BUFFER

        # Open here, on the caller's thread, so a bad path is a config error now.
        cdef int fd = 1 if path == "-" else _open_log(path)
        self.queue = queue.SimpleQueue()
        self.thread = threading.Thread(target=_writer, args=(self, self.queue, fd, path != "-"),
                                       name=f"fastgate-accesslog {path}", daemon=True)
        self.thread.start()

    def __dealloc__(self):
        free(self.ops)
        free(self.buf)

    # --- hot path ---

    cpdef void log(self, RequestContext ctx) except *:
        """Append ctx's line to the buffer; flushes to the writer past FLUSH_AT bytes."""
        cdef const char* lit = PyBytes_AS_STRING(self.literals)
        cdef Op* op
        cdef int i, v
        if self.closed:
            return
        for i in range(self.n_ops):
            op = &self.ops[i]
            if op.lit_len:
                self.put(lit + op.lit_start, op.lit_len)
            v = op.var
            if v == VAR_LITERAL:
                pass
            elif v == VAR_REQUEST_ID:
                self.put_bytes(ctx.request_id)
            elif v == VAR_SOURCE_IP:
                self.put_bytes(ctx.source_ip)
            elif v == VAR_USER_AGENT:
                self.put_bytes(ctx.header(b"user-agent"))
            elif v == VAR_HTTP_METHOD:
                self.put_bytes(ctx.method)
            elif v == VAR_PATH:
                self.put_bytes(ctx.path)
            elif v == VAR_ROUTE_KEY:
                self.put_str(ctx.route.route_key if ctx.route is not None else None)
            elif v == VAR_PROTOCOL:
                self.put(b"HTTP/1.0" if ctx.http_minor == 0 else b"HTTP/1.1", 8)
            elif v == VAR_STATUS:
                if ctx.status > 0:
                    self.put_int(ctx.status)
                else:
                    self.put(b"-", 1)
            elif v == VAR_RESPONSE_LENGTH:
                self.put_int(ctx.response_length)
            elif v == VAR_REQUEST_TIME:
                self.put_request_time(ctx.request_time_ms)
            elif v == VAR_REQUEST_TIME_EPOCH:
                if ctx.request_time_ms > 0:
                    self.put_int(ctx.request_time_ms)
                else:
                    self.put(b"-", 1)
            elif v == VAR_INTEGRATION_LATENCY:
                if ctx.integration_start > 0:
                    self.put_ms(ctx.integration_latency())
                else:
                    self.put(b"-", 1)
            elif v == VAR_RESPONSE_LATENCY:
                if ctx.start > 0:
                    self.put_ms(ctx.latency())
                else:
                    self.put(b"-", 1)
            elif v == VAR_DOMAIN_NAME:
                self.put_bytes(ctx.route_host)
            elif v == VAR_ERROR_RESPONSE_TYPE:
                self.put_str(ctx.error_type)
            elif v == VAR_ERROR_MESSAGE:
                self.put_str(ctx.error_message)
            elif v == VAR_CACHE_STATUS:
                self.put_bytes(<bytes>_CACHE_STATUS[ctx.cache_result if 0 <= ctx.cache_result <= 3 else 0])
        self.put(b"\n", 1)
        self.buf_lines += 1
        if self.buf_len >= FLUSH_AT:
            self.flush()

    def write_line(self, bytes line):
        """A line formatted elsewhere, written with this log's buffer and thread (a WebSocket
        API's events: fastgate/phases/websocket/accesslog.py)."""
        if self.closed:
            return
        self.put(PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line))
        self.put(b"\n", 1)
        self.buf_lines += 1
        if self.buf_len >= FLUSH_AT:
            self.flush()

    cdef int grow(self, Py_ssize_t need) except -1:
        cdef Py_ssize_t cap = self.buf_cap * 2
        while cap < self.buf_len + need:
            cap *= 2
        cdef char* p = <char*>realloc(self.buf, cap)
        if p == NULL:
            raise MemoryError()
        self.buf = p
        self.buf_cap = cap
        return 0

    cdef int put(self, const char* p, Py_ssize_t n) except -1:
        if self.buf_len + n > self.buf_cap:
            self.grow(n)
        memcpy(self.buf + self.buf_len, p, n)
        self.buf_len += n
        return 0

    cdef int put_escaped(self, const unsigned char* p, Py_ssize_t n) except -1:
        # 6 output bytes per input byte at worst (\u00XX).
        if self.buf_len + 6 * n > self.buf_cap:
            self.grow(6 * n)
        cdef char* out = self.buf + self.buf_len
        cdef Py_ssize_t i = 0, k = 0
        cdef int seq
        cdef unsigned char c
        cdef bint json = self.escape == ESCAPE_JSON
        while i < n:
            c = p[i]
            # PERF: printable ASCII is nearly every byte of a log line; it takes
            # this one branch and a store (bench/bench_accesslog.py::test_log).
            if 0x20 <= c < 0x7f and c != 0x22 and c != 0x5c:
                out[k] = <char>c
                k += 1
            elif c == 0x22 or c == 0x5c:  # " and \
                out[k] = b'\\'
                out[k + 1] = <char>c
                k += 2
            elif json and c >= 0x80 and (seq := utf8_sequence_len(p + i, n - i)) > 0:
                memcpy(out + k, p + i, seq)
                k += seq
                i += seq
                continue
            elif json and c == 0x0a:
                out[k] = b'\\'
                out[k + 1] = b'n'
                k += 2
            elif json and c == 0x0d:
                out[k] = b'\\'
                out[k + 1] = b'r'
                k += 2
            elif json and c == 0x09:
                out[k] = b'\\'
                out[k + 1] = b't'
                k += 2
            elif json:
                # Other controls, DEL, and bytes of invalid UTF-8 read as Latin-1.
                memcpy(out + k, b"\\u00", 4)
                out[k + 4] = HEX[c >> 4]
                out[k + 5] = HEX[c & 15]
                k += 6
            else:
                out[k] = b'\\'
                out[k + 1] = b'x'
                out[k + 2] = HEX[c >> 4]
                out[k + 3] = HEX[c & 15]
                k += 4
            i += 1
        self.buf_len += k
        return 0

    cdef int put_int(self, long long v) except -1:
        cdef char tmp[24]
        cdef int n = 0, k
        cdef bint neg = v < 0
        cdef unsigned long long u = <unsigned long long>(-v) if neg else <unsigned long long>v
        while True:
            tmp[n] = <char>(48 + u % 10)
            n += 1
            u //= 10
            if u == 0:
                break
        if neg:
            tmp[n] = b'-'
            n += 1
        if self.buf_len + n > self.buf_cap:
            self.grow(n)
        for k in range(n):
            self.buf[self.buf_len + k] = tmp[n - 1 - k]
        self.buf_len += n
        return 0

    cdef int put_bytes(self, bytes value) except -1:
        if value is None or PyBytes_GET_SIZE(value) == 0:
            return self.put(b"-", 1)
        return self.put_escaped(<const unsigned char*>PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))

    cdef int put_str(self, str value) except -1:
        cdef Py_ssize_t n
        cdef const char* p
        if value is None or len(value) == 0:
            return self.put(b"-", 1)
        # PERF: the UTF-8 form is cached on the str object: route keys encode once (bench/bench_accesslog.py::test_log).
        p = PyUnicode_AsUTF8AndSize(value, &n)
        return self.put_escaped(<const unsigned char*>p, n)

    cdef int put_ms(self, double seconds) except -1:
        if seconds < 0:
            seconds = 0
        return self.put_int(<long long>(seconds * 1000.0 + 0.5))

    cdef int put_request_time(self, long long epoch_ms) except -1:
        cdef long long s
        cdef time_t t
        cdef tm parts
        if epoch_ms <= 0:
            return self.put(b"-", 1)
        s = epoch_ms // 1000
        # PERF: one gmtime + format per second instead of per request (bench/bench_accesslog.py::test_log).
        if s != self.time_cached_s:
            t = <time_t>s
            gmtime_r(&t, &parts)
            self.time_len = snprintf(self.time_text, sizeof(self.time_text),
                                     b"%02d/%s/%04d:%02d:%02d:%02d +0000",
                                     parts.tm_mday, FG_MONTHS[parts.tm_mon], parts.tm_year + 1900,
                                     parts.tm_hour, parts.tm_min, parts.tm_sec)
            self.time_cached_s = s
        return self.put(self.time_text, self.time_len)

    # --- control (loop thread) ---

    def flush(self):
        """Hand the buffered lines to the writer thread; never blocks. Call it
        every second (or start_timer) and at shutdown through close()."""
        if self.buf_len == 0:
            return
        chunk = PyBytes_FromStringAndSize(self.buf, self.buf_len)
        cdef long long lines = self.buf_lines
        self.buf_len = 0
        self.buf_lines = 0
        if self.buf_cap > 8 * INITIAL_BUFFER:
            # One burst must not pin megabytes per worker for good.
            free(self.buf)
            self.buf = <char*>malloc(INITIAL_BUFFER)
            if self.buf == NULL:
                self.buf_cap = 0
                raise MemoryError()
            self.buf_cap = INITIAL_BUFFER
        if self.pending + len(chunk) > MAX_PENDING:
            # The disk cannot keep up: losing lines beats blocking the loop or
            # growing without bound. Counted so the operator can see it.
            self.dropped_lines += lines
            return
        self.pending += len(chunk)
        self.queue.put(chunk)

    def start_timer(self, loop, double interval_s=1.0):
        """Flush every interval_s on `loop` (an asyncio loop running on this
        thread) until close(). Optional: the worker may call flush() itself."""
        def tick():
            self.flush()
            if not self.closed:
                self.timer = loop.call_later(interval_s, tick)
        self.timer = loop.call_later(interval_s, tick)

    def reopen(self):
        """Reopen the file by path (SIGUSR1 after logrotate renamed it). Lines
        logged before the call go to the old file, later ones to the new."""
        if self.closed:
            return
        self.flush()
        self.queue.put(_REOPEN)

    def close(self):
        """Flush, let the writer finish every queued line, close the file."""
        if self.closed:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.flush()
        self.closed = True
        self.queue.put(_STOP)
        self.thread.join()

    @property
    def buffered_bytes(self):
        return self.buf_len

    @property
    def pending_bytes(self):
        return self.pending

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


cdef int _open_log(str path) except -1:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


cdef bint _is_stream(int fd):
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _writer(AccessLog log, q, int fd, bint own_fd):
    """Writer thread: writes chunks in order; reopens on _REOPEN; exits on _STOP."""
    cdef bint stream = _is_stream(fd)
    cdef bint reported = False
    while True:
        item = q.get()
        if item is _STOP:
            break
        if item is _REOPEN:
            if own_fd:
                try:
                    new_fd = _open_log(log.path)
                except OSError as e:
                    log.write_errors += 1
                    sys.stderr.write(f"fastgate: access log reopen {log.path!r} failed: {e}\n")
                    continue
                os.close(fd)
                fd = new_fd
                stream = _is_stream(fd)
            continue
        try:
            _write_all(fd, item, stream)
            reported = False
        except OSError as e:
            log.write_errors += 1
            if not reported:  # once per failure streak, not once per chunk
                sys.stderr.write(f"fastgate: access log write to {log.path!r} failed: {e}\n")
                reported = True
        finally:
            log.pending -= len(item)
    if own_fd:
        os.close(fd)


cdef _write_all(int fd, bytes chunk, bint stream):
    # A regular file opened O_APPEND takes each write() whole, so workers
    # sharing one file never interleave inside a chunk of whole lines. A pipe
    # only guarantees that up to PIPE_BUF: cut there, at line ends.
    cdef Py_ssize_t pos = 0, n = len(chunk), end, cut
    view = memoryview(chunk)
    while pos < n:
        end = n
        if stream and n - pos > PIPE_CHUNK:
            end = pos + PIPE_CHUNK
            cut = chunk.rfind(b"\n", pos, end)
            if cut >= pos:
                end = cut + 1
        pos += os.write(fd, view[pos:end])
