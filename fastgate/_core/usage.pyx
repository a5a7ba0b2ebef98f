# cython: boundscheck=False, wraparound=False
"""The per-request half of API key metering (fastgate.control.usage has the rest)."""

from libc.stdint cimport uint64_t

# the layout, for fastgate/control/usage.py: one definition, in usage.pxd
MAGIC = USAGE_MAGIC
HEADER_WORDS = USAGE_HEADER_WORDS
SLAB_HEADER_WORDS = USAGE_SLAB_HEADER_WORDS
ENTRY_WORDS = USAGE_ENTRY_WORDS
IDENT_MAX = USAGE_IDENT_MAX
COUNTER_WORDS = (USAGE_REQUESTS, USAGE_THROTTLED, USAGE_STATUS_4XX, USAGE_STATUS_5XX,
                 USAGE_BYTES_IN, USAGE_BYTES_OUT, USAGE_QUOTA_USED)


cdef class UsageCounters:
    def __cinit__(self, mapping):
        cdef uint64_t[::1] view = memoryview(mapping).cast("B").cast("Q")
        self.buffer = view
        self.words = &view[0]
        self.nwords = view.shape[0]

    cdef void record(self, long long slot, int status, bint throttled, bint quota_used,
                     long long bytes_in, long long bytes_out) noexcept nogil:
        cdef uint64_t* e
        if slot < 0:
            # a full slab: count what could not be attributed, so the loss is visible
            if -slot - 1 < self.nwords:
                self.words[-slot - 1] += 1
            return
        if slot + USAGE_ENTRY_WORDS > self.nwords:
            return
        e = self.words + slot
        e[USAGE_REQUESTS] += 1
        if status >= 500:
            e[USAGE_STATUS_5XX] += 1
        elif status >= 400:
            e[USAGE_STATUS_4XX] += 1
            if throttled:
                e[USAGE_THROTTLED] += 1
        if quota_used:
            e[USAGE_QUOTA_USED] += 1
        e[USAGE_BYTES_IN] += <uint64_t>bytes_in
        e[USAGE_BYTES_OUT] += <uint64_t>bytes_out

    def record_py(self, long long slot, int status, bint throttled, bint quota_used,
                  long long bytes_in, long long bytes_out):
        """record() for Python callers (tests, the control plane)."""
        self.record(slot, status, throttled, quota_used, bytes_in, bytes_out)

    def record_many(self, long long slot, long n, int status=200):
        """record() n times: its cost without the Python call (benchmarks)."""
        cdef long i
        with nogil:
            for i in range(n):
                self.record(slot, status, False, True, 0, 5)
