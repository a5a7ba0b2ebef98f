# The radix router: (host, method, path) -> (value, params), in API Gateway's
# precedence.  docs/routing.md has the precedence table and the AWS quirks.
#
# Shape of the tree (built by the control plane, read-only afterwards):
#
#   Router
#     hosts: exact name / wildcard suffix / "*"  -> one HostTree each
#   HostTree
#     exact: full static path -> Methods          (PERF fast path, see Router.match)
#     root:  Node
#   Node                            one path position
#     statics  {b"segment": Node}   static children, one dict lookup per segment
#     param    Node                 the {name} child (names live on the Endpoint)
#     greedy   Methods              routes ending in {name+} right below this node
#     here     Methods              routes ending at this node
#   Methods                         method -> Endpoint, plus the ANY endpoint
#   Endpoint                        one declared route: value, param names, result
#
# Matching walks the path once left to right, trying static, then {param},
# then greedy at each position and backtracking on failure; a node "matches"
# only if it has an endpoint for the request method or ANY.  Captures are
# kept as C offsets and turned into bytes only for the winning route.

cdef enum:
    MAX_SEGMENTS = 128      # segments in a declared route path; bounds recursion depth and captures


cdef class Endpoint:
    cdef readonly object value       # what add() was given (a pipeline.Route in the gateway)
    cdef readonly str host           # as declared (lowercased), for routes() and error messages
    cdef readonly str method         # "GET" ... or "ANY"
    cdef readonly str path           # as declared, e.g. "/pets/{id}"
    cdef tuple names                 # param names as bytes, in path order; () when none
    cdef Py_ssize_t nparams          # len(names)
    cdef tuple result                # PERF(bench_router test_router_static): prebuilt (value, None) when nparams == 0


cdef class Methods:
    cdef dict by_method              # b"GET" -> Endpoint (never ANY)
    cdef Endpoint any_               # the ANY endpoint or None
    cdef Endpoint lookup(self, bytes method)      # exact method, else ANY, else None


cdef class Node:
    cdef dict statics                # b"segment" -> Node; None until the first static child
    cdef Node param                  # {name} child or None
    cdef Methods greedy              # endpoints of routes ending in {name+} below this node, or None
    cdef Methods here                # endpoints of routes ending at this node, or None


cdef class HostTree:
    cdef Node root
    cdef dict exact                  # b"/static/path" -> Methods, for routes without parameters


cdef class Router:
    cdef HostTree default_tree       # host "*"; None until a "*" route is added
    cdef dict exact_hosts            # b"api.example.com" -> HostTree
    cdef dict wildcard_hosts         # b".example.com" (from "*.example.com") -> HostTree
    cdef bint host_specific          # any exact or wildcard host declared; False skips host selection
    cdef list endpoints              # every Endpoint in insertion order, for routes() and len()
    cdef dict shapes                 # (host, method, shape) -> Endpoint, for duplicate errors

    cpdef object match(self, bytes host, bytes method, bytes path)
    cdef HostTree tree_for(self, bytes host)
    cdef object match_tree(self, HostTree tree, bytes method, bytes path)
