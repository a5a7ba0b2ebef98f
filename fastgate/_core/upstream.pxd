# Upstream groups: weighted targets, their keep-alive connection pools,
# load balancing and the health state every pick consults.
#
# Built once per config snapshot by the control plane (fastgate.compile.snapshot).
# A Target outlives a snapshot swap only through the connections it holds:
# a new snapshot gets new Targets, the old ones drain and close their pools.

from fastgate._core.pipeline cimport RequestContext
from fastgate._core.metrics cimport SharedMetrics

cpdef enum Balance:
    BALANCE_ROUND_ROBIN = 0   # smooth weighted round robin (nginx's algorithm)
    BALANCE_LEAST_CONN = 1    # fewest active requests per unit of weight
    BALANCE_HASH = 2          # consistent hash ring over a request key

cpdef enum HashOn:
    HASH_CLIENT_IP = 0
    HASH_HEADER = 1
    HASH_COOKIE = 2


cdef class Target:
    cdef readonly str url                  # "http://127.0.0.1:9000"
    cdef readonly str scheme               # "http" | "https"
    cdef readonly str host                 # connect address (name or IP)
    cdef readonly int family               # AF_INET / AF_INET6 when host is an IP address, else 0
    cdef readonly int port
    cdef readonly int weight
    cdef readonly bytes host_header        # Host sent upstream: b"127.0.0.1:9000"
    cdef readonly bytes label              # b"127.0.0.1:9000" for errors and logs
    cdef readonly object ssl               # ssl.SSLContext for https, else None
    cdef readonly str server_hostname      # SNI / certificate name for https
    cdef readonly object group             # the UpstreamGroup (for its name and settings)

    # pool: idle connections, most recently used last (LIFO keeps few sockets warm)
    cdef list idle                         # idle[:n_idle]; the slots above hold None
    cdef int n_idle
    cdef readonly int max_idle             # connections kept idle at most
    cdef public int active                 # requests in flight on this target (least_conn)
    cdef public int open                   # connections open (idle + in use)
    cdef public bint retired               # its snapshot was replaced: pool no more connections

    # health
    cdef public int failures               # consecutive failures seen by this worker
    cdef public double ejected_until       # monotonic s; passive ejection by this worker
    cdef public bint healthy               # active checks' verdict, copied from shared memory by the
                                           # worker's tick (the checker runs in the admin process)
    cdef public int health_slot            # slot of fastgate_upstream_healthy, -1 without checks
    cdef public int conn_slot              # slot of fastgate_upstream_connections, -1 = none
    cdef public int own_conn_slot          # this worker's share of it (fastgate_worker_upstream_
                                           # connections), which the supervisor takes back out of
                                           # the total when the worker dies; -1 = none
    cdef public SharedMetrics metrics      # where conn_slot lives, or None
    cdef int smooth_weight                 # round-robin state (current weight)

    cdef bint available(self, double now)
    cdef object pop_idle(self)
    cdef bint push_idle(self, object conn)
    cdef void forget_idle(self, object conn)
    cdef void opened(self)                 # a connection to this target was created
    cdef void closed(self)                 # ... and is gone
    cdef void record_success(self)
    cdef void record_failure(self, double now, str reason)   # only the target's own faults: a failure
                                           # the client caused is none (ClientConnection.upstream_to_blame)
    cpdef close_idle(self)


cdef class UpstreamGroup:
    cdef readonly str name
    cdef readonly list targets             # [Target]
    cdef readonly int balance              # a Balance
    cdef readonly int hash_on              # a HashOn
    cdef readonly bytes hash_name          # header name (lowercase) or cookie name
    cdef readonly int max_failures         # passive ejection threshold (0 = off)
    cdef readonly double eject_time        # s
    cdef list ring_keys                    # consistent hash ring: sorted 32-bit points
    cdef list ring_targets                 # target for each point

    cdef Target pick(self, RequestContext ctx, Target exclude, double now)
    cdef Target pick_round_robin(self, Target exclude, double now)
    cdef Target pick_least_conn(self, Target exclude, double now)
    cdef Target pick_hash(self, RequestContext ctx, Target exclude, double now)
