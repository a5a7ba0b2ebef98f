# API key usage counters: the per-request half of fastgate.control.usage.UsageRecorder.
#
# The mapping is created and laid out by the control plane (fastgate/control/usage.py:
# UsageRecorder, created by the supervisor before it forks); this class only
# holds a C pointer to it, so the LOG phase (respond.pyx Responder.log) adds a
# finished request to its (key, API stage) entry with a few C increments and no
# Python call. One writer per slab (each worker owns its own), so plain
# read-modify-writes are exact; readers (the flusher) see each aligned 8-byte
# word whole.
#
# Layout of one entry (uint64 words), at word offset `slot` of the mapping:
#
#   0          ident length in bytes (0 while being claimed)
#   1 .. 16    ident: "key_id US api_id US stage", up to USAGE_IDENT_MAX bytes
#   17 .. 23   the counters below
#
# A negative slot means the worker's slab was full: word -slot-1 is the slab's
# `dropped` counter, and only that is incremented.

from libc.stdint cimport uint64_t

cdef enum:
    USAGE_MAGIC = 0x46475532        # "FGU2": layout version of the mapping
    USAGE_HEADER_WORDS = 8          # mapping header: magic, workers, capacity, generation (2), pad
    USAGE_SLAB_HEADER_WORDS = 8     # per slab: entries used, dropped records, pad
    USAGE_ENTRY_WORDS = 24          # 192 bytes per entry
    USAGE_IDENT_MAX = 128           # bytes of ident an entry holds
    USAGE_REQUESTS = 17             # metered requests, whatever their outcome
    USAGE_THROTTLED = 18            # 429s of a throttle or the quota (gateway-made)
    USAGE_STATUS_4XX = 19           # 400..499 sent, throttled ones included
    USAGE_STATUS_5XX = 20           # 500 and above sent
    USAGE_BYTES_IN = 21             # request body bytes received
    USAGE_BYTES_OUT = 22            # response body bytes sent
    USAGE_QUOTA_USED = 23           # let through by the plan's throttle and quota


cdef class UsageCounters:
    cdef object buffer              # the memoryview that keeps the mapping alive
    cdef uint64_t* words            # the mapping as 64-bit words
    cdef Py_ssize_t nwords

    # One finished request of the entry at `slot`. Slots come from
    # UsageRecorder.slot(); an out-of-range one is ignored, never written.
    cdef void record(self, long long slot, int status, bint throttled, bint quota_used,
                     long long bytes_in, long long bytes_out) noexcept nogil
