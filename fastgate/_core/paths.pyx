# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Canonical request paths: percent-encoding and dot-segment normalisation (paths.pxd)."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.string cimport memcmp

cdef const char* HEX_UPPER = "0123456789ABCDEF"


cdef inline int hex_value(unsigned char c) noexcept nogil:
    if 48 <= c <= 57:
        return c - 48
    if 65 <= c <= 70:
        return c - 55
    if 97 <= c <= 102:
        return c - 87
    return -1


cdef inline bint unreserved(unsigned char c) noexcept nogil:
    # RFC 3986 section 2.3: ALPHA / DIGIT / "-" / "." / "_" / "~"
    return (65 <= c <= 90) or (97 <= c <= 122) or (48 <= c <= 57) or \
        c == 45 or c == 46 or c == 95 or c == 126


cdef inline bint needs_work(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    """False when p (starting with "/") is canonical as it stands."""
    cdef Py_ssize_t i
    cdef unsigned char c, nxt
    if n > 1 and p[1] == 47:                 # leading "//"
        return True
    for i in range(1, n):
        c = p[i]
        if c == 37 or c == 92:               # "%" and "\": an escape to normalise, a piece to check
            return True
        if c == 46 and p[i - 1] == 47:
            # a segment starting with ".": only ".", "..", ".;", ".%.." or ".\" can matter
            if i + 1 == n:
                return True
            nxt = p[i + 1]
            if nxt == 47 or nxt == 46 or nxt == 59 or nxt == 37 or nxt == 92:
                return True
    return False


cdef inline bint is_dot_name(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    return (n == 1 and s[0] == 46) or (n == 2 and s[0] == 46 and s[1] == 46)


cdef bint hides_dot(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    """Whether the (decoded, upper-case hex) segment s holds a piece "." or ".." once
    "\\", "%2F" and "%5C" split it and ";" ends a piece's name."""
    cdef Py_ssize_t start = 0, j, name_end, sep
    cdef unsigned char c
    while True:
        j = start
        name_end = -1
        sep = 0
        while j < n:
            c = s[j]
            if c == 92:
                sep = 1
                break
            if c == 37 and j + 2 < n and (
                    (s[j + 1] == 50 and s[j + 2] == 70) or (s[j + 1] == 53 and s[j + 2] == 67)):
                sep = 3                       # %2F, %5C
                break
            if c == 59 and name_end < 0:      # ";": the piece's parameters start
                name_end = j
            j += 1
        if name_end < 0:
            name_end = j
        if is_dot_name(s + start, name_end - start):
            return True
        if sep == 0:
            return False
        start = j + sep


cdef int normalise_into(const unsigned char* p, Py_ssize_t n, unsigned char* out,
                        Py_ssize_t* out_start, Py_ssize_t* out_end) noexcept nogil:
    """Write the canonical form of p[0:n] (p[0] == "/") into out as out[*out_start:*out_end]
    (n bytes of out suffice: nothing grows). PATH_SAME, or the PathVerdict of a refusal."""
    cdef Py_ssize_t i = 1, w = 0, seg, dots, k
    cdef int hi, lo, v
    cdef bint last_dot = False
    cdef unsigned char c
    while True:
        # one input segment: p[i] up to the next "/", decoded into out after a "/"
        out[w] = 47
        w += 1
        seg = w
        while i < n:
            c = p[i]
            if c == 47:
                break
            if c == 37:
                if i + 2 >= n:
                    return PATH_BAD_ESCAPE
                hi = hex_value(p[i + 1])
                lo = hex_value(p[i + 2])
                if hi < 0 or lo < 0:
                    return PATH_BAD_ESCAPE
                v = hi * 16 + lo
                if unreserved(<unsigned char>v):
                    out[w] = <unsigned char>v
                    w += 1
                else:
                    out[w] = 37
                    out[w + 1] = HEX_UPPER[hi]
                    out[w + 2] = HEX_UPPER[lo]
                    w += 3
                i += 3
                continue
            out[w] = c
            w += 1
            i += 1
        dots = w - seg
        if is_dot_name(out + seg, dots):
            # RFC 3986 section 5.2.4: "." goes; ".." also takes the segment before it
            w = seg - 1
            if dots == 2:
                if w == 0:
                    return PATH_ABOVE_ROOT
                k = w - 1
                while out[k] != 47:
                    k -= 1
                w = k
            last_dot = True
        else:
            if hides_dot(out + seg, dots):
                return PATH_AMBIGUOUS
            last_dot = False
        if i >= n:
            break
        i += 1                                # past the "/"
    if last_dot or w == 0:
        out[w] = 47                           # "/a/b/.." is "/a/", "/a/.." is "/"
        w += 1
    k = 0
    while k + 1 < w and out[k + 1] == 47:     # "//x" is "/x", as API Gateway reads it
        k += 1
    out_start[0] = k
    out_end[0] = w
    return PATH_SAME


cdef bytes canonical_path(bytes path, int* verdict):
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(path)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(path)
    cdef unsigned char stack[PATH_STACK]
    cdef unsigned char* out = stack
    cdef Py_ssize_t start = 0, end = 0
    cdef int result
    verdict[0] = PATH_SAME
    if n == 0 or p[0] != 47 or not needs_work(p, n):
        return path
    if n > PATH_STACK:
        out = <unsigned char*>PyMem_Malloc(n)
        if out == NULL:
            raise MemoryError()
    try:
        result = normalise_into(p, n, out, &start, &end)
        if result != PATH_SAME:
            verdict[0] = result
            return None
        if end - start == n and memcmp(out + start, p, n) == 0:
            return path
        verdict[0] = PATH_CHANGED
        return PyBytes_FromStringAndSize(<char*>out + start, end - start)
    finally:
        if out != stack:
            PyMem_Free(out)


cpdef bytes lenient_path(bytes path):
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(path)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(path)
    cdef Py_ssize_t i, w = 0
    cdef unsigned char c
    cdef unsigned char stack[PATH_STACK]
    cdef unsigned char* out = stack
    cdef bint params = False
    for i in range(n):
        c = p[i]
        if c == 59 or c == 92 or (c == 47 and i > 0 and p[i - 1] == 47):
            break
    else:
        return None                           # PERF: the usual path, one scan and no allocation
    if n > PATH_STACK:
        out = <unsigned char*>PyMem_Malloc(n)
        if out == NULL:
            raise MemoryError()
    try:
        for i in range(n):
            c = p[i]
            if c == 92:
                c = 47
            if c == 47:
                params = False
                if w == 0 or out[w - 1] != 47:
                    out[w] = 47
                    w += 1
            elif c == 59:
                params = True
            elif not params:
                out[w] = c
                w += 1
        if w == n and memcmp(out, p, n) == 0:
            return None
        return PyBytes_FromStringAndSize(<char*>out, w)
    finally:
        if out != stack:
            PyMem_Free(out)


cpdef str refusal_reason(int verdict):
    if verdict == PATH_ABOVE_ROOT:
        return "path climbs above the root"
    if verdict == PATH_AMBIGUOUS:
        return "dot segment hidden behind %2F, %5C, a backslash or ';'"
    if verdict == PATH_BAD_ESCAPE:
        return "malformed percent-encoding in the path"
    return None


def canonical(bytes path):
    """(PathVerdict, canonical bytes or None): canonical_path for Python callers (tests, bench)."""
    cdef int verdict = PATH_SAME
    cdef bytes result = canonical_path(path, &verdict)
    return verdict, result
