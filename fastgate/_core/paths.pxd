# The request path as the gateway routes it and sends it on: one canonical
# spelling, computed once per request before routing (client.pyx
# validate_head), so the route whose rules were applied is the one whose path
# the integration receives.
#
# What canonical_path() does to an origin-form path (no query; the caller keeps
# the query apart and never passes it here), in this order:
#
#   1. percent-encoding normalisation (RFC 3986 section 6.2.2.2): an escape of
#      an unreserved character (A-Z a-z 0-9 - . _ ~) is decoded ("%61dmin" is
#      "admin", "%2e" is "."), every other escape keeps its byte with upper-case
#      hex ("%2f" -> "%2F")
#   2. dot segments removed (RFC 3986 section 5.2.4) on "/" boundaries:
#      "/a/./b" -> "/a/b", "/a/b/../c" -> "/a/c", "/a/.." -> "/a/"
#   3. leading slashes collapsed ("//x" -> "/x", as API Gateway reads them);
#      slashes inside the path are kept ("/a//b" stays: AWS passes them on)
#
# and what it refuses (the caller answers 400 Bad Request):
#
#   PATH_ABOVE_ROOT  a ".." with no segment left to remove ("/..", "/a/../.."),
#                    as nginx refuses it (RFC 3986 would silently drop it)
#   PATH_BAD_ESCAPE  a "%" not followed by two hex digits (nginx refuses it too):
#                    decoding around it could make a new escape ("%%32%65" -> "%2e")
#   PATH_AMBIGUOUS   a segment that is no dot segment here but is one for a
#                    server that splits on more than "/" or drops ";parameters":
#                    a piece "." or ".." between "/", "\", "%2F", "%5C" and a
#                    ";" ("..;/" reaches the parent on Tomcat, "..%2F" on a
#                    server that decodes %2F first, "..\" on Windows)
#
# Encoded slashes (%2F) and backslashes stay data: they never split a segment
# for routing and are forwarded as received. docs/routing.md says why.
#
# PERF(bench/bench_paths.py): a path with no "%", no "\" and no segment that
# starts with "." is already canonical; one scan finds that and the caller's
# bytes object comes back, nothing allocated. Otherwise the canonical form is
# written into a scratch buffer (on the stack up to PATH_STACK bytes) and a
# new bytes object is made only if it differs from the input.

cpdef enum PathVerdict:
    PATH_SAME = 0           # already canonical: the input object is returned
    PATH_CHANGED = 1        # a new, canonical bytes object is returned
    PATH_ABOVE_ROOT = 2     # refused: a ".." climbs above "/" (None is returned)
    PATH_AMBIGUOUS = 3      # refused: a dot segment hidden behind %2F, %5C, "\" or ";"
    PATH_BAD_ESCAPE = 4     # refused: a "%" not followed by two hex digits

cdef enum:
    PATH_STACK = 2048       # bytes of path normalised in a stack buffer; longer ones use the heap

# The canonical form of `path` (origin-form: starts with "/"; anything else,
# such as OPTIONS's "*", comes back unchanged), or None when refused.
# *verdict receives a PathVerdict. Never raises except MemoryError.
cdef bytes canonical_path(bytes path, int* verdict)

# How a less strict server reads a canonical path: ";parameters" dropped from each
# segment (Servlet containers), "\" read as "/" (Windows, some URL parsers) and
# runs of "/" merged (nginx's merge_slashes, Tomcat). None when that reading is
# the path itself (no ";", "\" or "//": one scan, nothing allocated). The
# protocol routes this reading too and refuses a request whose two readings
# reach different routes: "/admin;x/secret" would pass a route for "/{proxy+}"
# here and reach "/admin/secret" on Tomcat, past the route for "/admin/{proxy+}".
cpdef bytes lenient_path(bytes path)

# The reason given with a refusal (access and execution logs; the client gets
# only {"message": "Bad Request"}).
cpdef str refusal_reason(int verdict)
