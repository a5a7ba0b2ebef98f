# One request's way through the pipeline (pipeline.pxd has the phases): the one
# dispatcher. The integrations are the HTTP proxy's (proxy.pxd) and the ones answered in
# the gateway (integrations.pxd). Each phase returns an
# Action; a phase that waits (ACTION_WAIT: the body, an authorizer, Redis) is resumed by
# the one path, resume(ctx, phase), when its answer comes; ACTION_RESPOND goes to the
# response phase (respond.pxd) as the gateway response ctx.error_type names.
#
# Python code a phase runs (fastgate.phases: access checks, Redis throttles and cache)
# gets the Exchange as its `conn` and answers through its def methods (access_done,
# throttle_done, cache_done, deny).

from fastgate._core.integrations cimport Integrations
from fastgate._core.keys cimport KeyGate
from fastgate._core.pipeline cimport RequestContext, Route
from fastgate._core.proxy cimport Proxy
from fastgate._core.respond cimport Responder
from fastgate._core.runtime cimport Downstream, Worker


cdef class Exchange:
    cdef Downstream down                  # the client connection
    cdef Responder out                    # the response phase
    cdef Proxy proxy                      # the HTTP integration
    cdef Integrations integrations        # mock, echo, functions
    cdef Worker worker

    # the dispatcher
    cdef void begin(self, RequestContext ctx)             # a request became the active one
    cdef int route(self, RequestContext ctx)              # PHASE_ROUTE, then run(): an Action
    cdef int run(self, RequestContext ctx, int phase)     # the phases from `phase` on: an Action
    cdef void settle(self, RequestContext ctx, int action)
    cdef void resume(self, RequestContext ctx, int phase)  # what a waiting phase waited for came
    cdef bint wanted(self, RequestContext ctx, int waiting)
    cdef int wait_for_body(self, RequestContext ctx, int phase)
    cdef void ask_for_body(self, RequestContext ctx)       # 100 Continue
    # the body as it arrives
    cdef void add_body(self, RequestContext ctx, bytes data)
    cdef void body_done(self, RequestContext ctx)
    # phases run in C
    cdef int check_key(self, RequestContext ctx, KeyGate gate) except -1   # an Action
    cdef int throttle(self, RequestContext ctx, Route route)               # an Action
    cdef int serve_cached(self, RequestContext ctx, Route route)           # an Action
    cdef void answer_cached(self, RequestContext ctx, tuple hit)
    cdef void record_cache_result(self, RequestContext ctx)
    cdef bint map_request(self, RequestContext ctx, Route route)
