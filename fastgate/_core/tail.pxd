# The last N finished requests of every worker, in one shared-memory ring,
# for the dashboard's live tail and its error-type breakdown.
#
# The supervisor calls TailRing.create(capacity) BEFORE it forks and install()s
# it, like SharedMetrics: the ring is one anonymous MAP_SHARED mapping, so every
# worker and the admin process see the same pages. Workers write, the admin
# process reads; nobody locks.
#
# Writing (record, once per finished request, from the LOG phase):
#   1. t = fetch_add(header.ticket, 1): the entry's ticket; its slot is t % capacity.
#   2. CAS the slot's seq from the value it holds to BUSY(t). A slot that is still
#      BUSY (its writer is mid-copy, or died there) or already holds a newer
#      ticket is not touched: the entry is dropped and header.dropped counted.
#   3. copy the fields (fixed-width, truncated), then store seq = DONE(t) (release).
#   DONE(t) = 2 * (t + 1), BUSY(t) = DONE(t) + 1: even = published, odd = being
#   written, 0 = never written.
#
# Reading (read_since, admin process): for each ticket since the caller's last
# one, load seq (acquire), copy the slot, fence, load seq again; the copy is
# whole only if both loads are DONE(t) (a seqlock read). A slot holding a newer
# ticket was overrun (the reader fell more than `capacity` entries behind);
# one still BUSY is retried for a few microseconds and then counted as missed.
#
# Layout of the mapping (no pointers inside):
#
#   TailHeader | TailSlot[0] ... TailSlot[capacity - 1]

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from fastgate._core.pipeline cimport RequestContext

cdef enum:
    TAIL_MAGIC = 0x46475431       # "FGT1": layout version
    TAIL_METHOD = 8               # bytes of each fixed-width text field, truncated past them
    TAIL_REQUEST_ID = 36          # a UUID's text
    TAIL_ROUTE = 96               # route key "GET /pets/{id}"
    TAIL_PATH = 128               # raw path, no query
    TAIL_API = 16                 # API id (AWS's are 10 characters)
    TAIL_STAGE = 32
    TAIL_KEY_ID = 32              # API key *id* (never the key value)
    TAIL_ERROR = 32               # gateway response type; the longest is 30
    TAIL_IP = 46                  # INET6_ADDRSTRLEN
    TAIL_BUSY_RETRIES = 2000      # reader's loads of a BUSY slot before counting it missed


ctypedef struct TailHeader:
    uint32_t magic
    uint32_t capacity             # slots; a power of two
    uint64_t ticket               # tickets handed out: the next entry's ticket
    uint64_t dropped              # entries not written: their slot was BUSY or newer


ctypedef struct TailEntry:
    int64_t time_ms               # epoch ms when the request's first byte arrived
    int64_t latency_us            # first request byte to last response byte
    int64_t integration_us        # time in the integration; -1 = none ran
    int64_t bytes_in              # request body bytes
    int64_t bytes_out             # response body bytes
    int32_t worker_id
    int32_t status
    uint8_t method_len            # each *_len is the bytes used of its field
    uint8_t request_id_len
    uint8_t route_len
    uint8_t path_len
    uint8_t api_len
    uint8_t stage_len
    uint8_t key_id_len
    uint8_t error_len
    uint8_t ip_len
    char method[TAIL_METHOD]
    char request_id[TAIL_REQUEST_ID]
    char route[TAIL_ROUTE]        # empty: no route matched
    char path[TAIL_PATH]
    char api[TAIL_API]            # empty: a top-level (YAML) route
    char stage[TAIL_STAGE]
    char key_id[TAIL_KEY_ID]
    char error[TAIL_ERROR]        # empty: the integration answered
    char ip[TAIL_IP]              # client address ($context.identity.sourceIp)


ctypedef struct TailSlot:
    uint64_t seq                  # DONE(t) / BUSY(t) / 0, see above; only touched atomically
    TailEntry entry


cdef class TailRing:
    cdef TailHeader* header       # start of the mapping
    cdef TailSlot* slots          # capacity slots right after the header
    cdef size_t map_size          # bytes, for munmap
    cdef readonly int capacity
    cdef uint64_t mask            # capacity - 1

    # hot path: no Python object created, never raises
    cdef void record(self, RequestContext ctx, int worker_id, bytes api_key_id) noexcept
                                  # api_key_id: the id of the key the request used, or None

    cdef bint claim(self, uint64_t ticket, TailSlot** out) noexcept nogil
    cdef void publish(self, uint64_t ticket, TailSlot* slot) noexcept nogil


# The ring install()ed in this process (inherited through fork), or None.
# record_finished is what the protocol calls: a no-op without a ring.
cdef void record_finished(RequestContext ctx, int worker_id, bytes api_key_id) noexcept
