# The API keys of one snapshot as the ACCESS phase reads them: a compiled key
# table (KeyIndex) and one KeyGate per method that requires a key.
#
# The control plane builds fastgate.compile.keys.KeyTable (digests, plans, settings as
# Python objects) and compiles it ONCE per snapshot into a KeyIndex: C arrays
# that a request walks without creating a Python object:
#
#   presented value --SHA-256--> digest --index on its first 8 bytes-->
#   KeyEntry (constant-time compare of all 32 bytes; enabled flag)
#   --its grants, by the gate's stage number--> Grant (the plan's bucket and
#   quota policies and keys) --by the gate's method number--> MethodGrant
#   (a per-method throttle override of the plan)
#
# then one take from the plan's (or method's) bucket and one from its quota in
# the shared tables of fastgate._core.throttle. A key valid on the stage is
# metered (ctx.usage_slot / metered / quota_used): the LOG phase adds the finished
# request to its (key, API stage) entry in C (fastgate._core.usage).
#
# Stage and method numbers are interned per KeyIndex at compile time: a gate
# resolves its (api id, stage) and "{resourcePath}/{METHOD}" once, so the hot
# path compares ints, not strings. Key values are never stored: digests only,
# and nothing here formats a value or a digest into a message.
#
# One KeyIndex per worker (each worker compiles its own snapshot after fork):
# the usage slots it asks for are that worker's.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

from fastgate._core.pipeline cimport RequestContext
from fastgate._core.throttle cimport (
    BucketPolicy, QuotaPolicy, BucketTable, QuotaTable, ThrottleResult,
)


cdef enum:
    DIGEST_BYTES = 32                 # SHA-256
    VALUE_MAX_BYTES = 4096            # a presented value longer than this is unknown, not hashed


cpdef enum KeyVerdict:                # what KeyGate.check returns; the caller answers
    KEY_ALLOW = 0                     # go on: ctx.api_key_id, usage_slot and metered are set
    KEY_INVALID = 1                   # missing, unknown, disabled or in no plan of this stage:
                                      # 403 INVALID_API_KEY (API Gateway answers all four alike)
    KEY_THROTTLED = 2                 # the plan's (or method's) bucket is empty: 429 THROTTLED,
                                      # RateLimit headers of policy "usage-plan"
    KEY_QUOTA = 3                     # the plan's quota is spent: 429 QUOTA_EXCEEDED ("Limit
                                      # Exceeded"), RateLimit headers of policy "quota"


ctypedef struct KeyEntry:
    uint8_t digest[32]                # SHA-256 of the value (DIGEST_BYTES)
    int32_t enabled
    int32_t first_grant               # index in KeyIndex.grants of its first plan
    int32_t n_grants                  # plans covering it, one per (api, stage)
    int32_t _pad


ctypedef struct Grant:
    # One usage plan as it covers one key on one (api, stage): fastgate.compile.keys.PlanInfo in C.
    int32_t stage                     # stage number (KeyIndex.stage_number)
    int32_t has_throttle              # the plan throttles its keys
    int32_t has_quota                 # the plan has a quota
    int32_t first_method              # index in KeyIndex.methods of its per-method overrides
    int32_t n_methods
    int32_t _pad
    uint64_t bucket_key               # the (plan, key) bucket in the BucketTable's hashed region
    uint64_t quota_key                # the (plan, key) counter in the QuotaTable
    BucketPolicy throttle
    QuotaPolicy quota


ctypedef struct MethodGrant:
    # A plan's throttle for one method ("/pets/GET"), replacing the plan's for that method.
    int32_t method                    # method number (KeyIndex.method_number)
    int32_t _pad
    uint64_t bucket_key               # the (plan, key, method) bucket
    BucketPolicy throttle


cdef class KeyIndex:
    # The compiled KeyTable of one snapshot. Immutable after __init__ except the
    # usage slots it caches.
    cdef KeyEntry* entries
    cdef int32_t n_entries
    cdef int32_t* slots               # open addressing on the digest's first 8 bytes; -1 empty
    cdef uint64_t mask                # slots - 1 (a power of two)
    cdef Grant* grants
    cdef int32_t n_grants
    cdef MethodGrant* methods
    cdef int32_t n_methods
    cdef readonly BucketTable buckets # the host's shared tables (fastgate.compile.snapshot)
    cdef readonly QuotaTable quotas
    cdef readonly object usage_slot_of  # (key id, api id, stage) -> UsageRecorder slot of this
                                        # worker (fastgate.phases.access.Services.usage_slot), or None
    cdef dict usage_slots             # (entry << 20 | stage number) -> slot, once looked up
    cdef readonly object table        # the fastgate.compile.keys.KeyTable it was compiled from
    cdef list key_infos               # fastgate.compile.keys.KeyInfo by entry index
    cdef list key_ids                 # key id as bytes by entry index (ctx.api_key_id)
    cdef list plan_infos              # fastgate.compile.keys.PlanInfo by grant index
    cdef dict stage_numbers           # (api id, stage) -> stage number
    cdef dict method_numbers          # "/pets/GET" -> method number

    cdef int32_t find(self, const char* value, Py_ssize_t n) noexcept nogil
                                      # entry index of a presented value, -1 unknown
    cdef int32_t grant_of(self, int32_t entry, int32_t stage) noexcept nogil
                                      # grant index of the entry's plan on stage, -1 none
    cdef long long usage_slot(self, int32_t entry, int32_t stage) except? -2


cdef class KeyGate:
    # apiKeyRequired on one method of one API stage. Shared by every request
    # of its route; the ACCESS phase calls check() directly when the key is
    # the method's only access check and the limits are local (no Redis).
    cdef readonly KeyIndex index      # None: the snapshot has no keys, every request is refused
    cdef readonly str api_id
    cdef readonly str stage
    cdef readonly str method_key      # "/pets/GET", as usage plans key per-method throttles
    cdef readonly bint from_authorizer  # key source AUTHORIZER: the authorizer's usageIdentifierKey
    cdef int32_t stage_no             # -1: no plan covers this stage
    cdef int32_t method_no            # -1: no plan overrides this method

    cdef int check(self, RequestContext ctx, const char* value, Py_ssize_t n, int64_t now_ns,
                   int64_t now_s, ThrottleResult* out) except -1
                                      # a KeyVerdict; *out holds the rejecting take's numbers


cdef void sha256(const uint8_t* data, size_t n, uint8_t* out) noexcept nogil   # FIPS 180-4
cdef bint digest_equal(const uint8_t* a, const uint8_t* b) noexcept nogil      # constant time
cdef Py_ssize_t headers_for(int verdict, const ThrottleResult* r, char* buf, Py_ssize_t cap) noexcept nogil
                                  # RateLimit lines of a KEY_THROTTLED ("usage-plan") or KEY_QUOTA
                                  # ("quota") verdict; bytes written, -1 for other verdicts
