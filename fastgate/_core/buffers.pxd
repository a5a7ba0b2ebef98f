# Growable C byte buffers: the one a worker assembles message heads in, and the one a
# connection's corked output gathers in (runtime.pxd keeps both on the Worker). Inline: a
# head is dozens of small puts, each a memcpy, no Python object until the head is taken.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from libc.stdlib cimport realloc, free
from libc.string cimport memcpy


cdef struct Buf:
    char* p
    Py_ssize_t len
    Py_ssize_t cap


cdef inline int buf_put(Buf* b, const char* p, Py_ssize_t n) except -1:
    cdef Py_ssize_t need = b.len + n, cap
    cdef char* grown
    if need > b.cap:
        cap = need * 2 if need > 2048 else 4096
        grown = <char*>realloc(b.p, cap)
        if grown == NULL:
            raise MemoryError()
        b.p = grown
        b.cap = cap
    memcpy(b.p + b.len, p, n)
    b.len = need
    return 0


cdef inline int buf_bytes(Buf* b, bytes data) except -1:
    return buf_put(b, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))


cdef inline bytes buf_take(Buf* b):
    """The contents as one bytes object (the buffer keeps them; reset with b.len = 0)."""
    return PyBytes_FromStringAndSize(b.p, b.len)


cdef inline void buf_shrink(Buf* b, Py_ssize_t keep) noexcept:
    """Give the memory back when the buffer grew past `keep` bytes (a large burst)."""
    if b.cap > keep:
        free(b.p)
        b.p = NULL
        b.cap = 0
        b.len = 0
