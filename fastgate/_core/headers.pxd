# Header transforms, value templates and path rewrites: API Gateway's
# parameter mapping, compiled once at config load and applied per request.
#
# Compile time (control plane, may raise ValueError with a column number):
#     Template("v1-$request.header.X-Tenant")      -> parts list
#     HeaderTransform([("set", "X-Tenant", "...")]) -> list of _Op
#     PathRewrite(template="/v2/{id}/{proxy}")      -> a path-mode Template
# Request time (hot path, never raises for a missing value; a missing header,
# parameter or field renders as b""):
#     Template.render(ctx) -> bytes
#     HeaderTransform.apply(headers, ctx) -> new [(name, value)] list
#     PathRewrite.apply(ctx) -> new raw path, no query
#
# Rendered values never carry CR, LF or NUL: header-mode templates drop those
# bytes from variable values (literals containing them are rejected at compile
# time), path-mode templates percent-encode every byte a raw path may not hold.
# Body templates (mock integration bodies, body=True) keep both text and values as is.
#
# Adding a variable (e.g. $stageVariables.x, $context.authorizer.claims.x):
# one VAR_* member below, one entry in _EXACT or _PREFIXED in headers.pyx,
# one branch in resolve_variable().

cimport cython
from fastgate._core.pipeline cimport RequestContext

cdef enum VarKind:
    VAR_LITERAL = 0           # arg is the literal bytes, copied as is
    VAR_HEADER = 1            # arg: lowercase header name; all values joined with ","
    VAR_PATH_PARAM = 2        # arg: path parameter name (ctx.path_params key)
    VAR_QUERY = 3             # arg: query parameter name, case-sensitive; values joined with ","
    VAR_PATH = 4              # ctx.path, raw ($request.path, $context.path)
    VAR_REQUEST_ID = 5        # ctx.request_id
    VAR_SOURCE_IP = 6         # ctx.source_ip
    VAR_REQUEST_TIME_EPOCH = 7  # ctx.request_time_ms as decimal ASCII
    VAR_HTTP_METHOD = 8       # ctx.method
    VAR_PROTOCOL = 9          # b"HTTP/1.1" or b"HTTP/1.0" from ctx.http_minor
    VAR_DOMAIN_NAME = 10      # ctx.host without ":port" (IPv6 brackets kept)
    VAR_USER_AGENT = 11       # first User-Agent header value
    VAR_ROUTE_KEY = 12        # ctx.route.route_key, b"" before routing
    VAR_STAGE = 13            # ctx.api.stage ($context.stage), b"" outside an API
    VAR_API_ID = 14           # ctx.api.api_id ($context.apiId)
    VAR_RESOURCE_PATH = 15    # ctx.route.resource_path ($context.resourcePath)
    VAR_STAGE_VARIABLE = 16   # arg: stage variable name; ctx.api.variables (canary overrides included)
    VAR_ERROR_MESSAGE = 17    # ctx.error_message ($context.error.message), in gateway responses
    VAR_ERROR_MESSAGE_STRING = 18  # the same as a quoted JSON string ($context.error.messageString)
    VAR_ERROR_TYPE = 19       # ctx.error_type ($context.error.responseType)
    VAR_CLIENT_CERT_PEM = 20  # ctx.client_cert.pem ($context.identity.clientCert.clientCertPem); b"" without one
    VAR_CLIENT_CERT_SUBJECT = 21     # .subject_dn ($context.identity.clientCert.subjectDN)
    VAR_CLIENT_CERT_ISSUER = 22      # .issuer_dn ($context.identity.clientCert.issuerDN)
    VAR_CLIENT_CERT_SERIAL = 23      # .serial_number ($context.identity.clientCert.serialNumber)
    VAR_CLIENT_CERT_NOT_BEFORE = 24  # .not_before ($context.identity.clientCert.validity.notBefore)
    VAR_CLIENT_CERT_NOT_AFTER = 25   # .not_after ($context.identity.clientCert.validity.notAfter)
    VAR_AUTHORIZER = 26       # arg: "principalId", "claims.NAME" or a context key ($context.authorizer.X),
                              # from ctx.auth (fastgate.phases.auth.AuthResult); b"" without one
    VAR_IDENTITY = 27         # arg: caller, user, userArn, accessKey, accountId, apiKey, apiKeyId
                              # ($context.identity.X) from ctx.auth.identity

cdef enum Sanitize:
    SANITIZE_HEADER = 0       # drop CR, LF, NUL from variable values
    SANITIZE_PATH = 1         # percent-encode CTL, space, '?', '#', non-ASCII in variable values
    SANITIZE_NONE = 2         # body templates (Template(..., body=True)): values kept as they are

cdef enum OpKind:
    OP_SET = 0                # replace every value of the name at the first one's position; append if absent
    OP_APPEND = 1             # add one more (name, value) at the end
    OP_REMOVE = 2             # drop every value of the name
    OP_RENAME = 3             # change the name of every value, keeping values and positions


cdef class _Part:
    # One piece of a compiled template: a literal or one variable reference.
    cdef int kind             # a VarKind
    cdef bytes arg            # literal bytes (VAR_LITERAL) or the variable's name argument


@cython.final
cdef class Template:
    # Immutable after __init__; shared by every request of every route using it.
    cdef readonly str source          # as configured, for errors and repr
    cdef readonly bint is_static      # no variables: render returns the same bytes object
    cdef bytes _static                # the rendered value when is_static
    cdef list _parts                  # [_Part] in source order, adjacent literals merged
    cdef int _mode                    # a Sanitize, fixed at compile time

    cdef _compile(self, str source, bint path_mode, bint body=*)
    cpdef bytes render(self, RequestContext ctx)


cdef class _Op:
    # One compiled header operation.
    cdef int kind                     # an OpKind
    cdef bytes name                   # name as configured, what goes on the wire
    cdef bytes lname                  # lowercase name, for matching
    cdef bytes new_name               # OP_RENAME: the new name as configured
    cdef Template value               # OP_SET / OP_APPEND: the value template


@cython.final
cdef class HeaderTransform:
    # An ordered list of operations; each sees the result of the ones before.
    # Templates read the *request* (ctx), never the list being transformed.
    cdef readonly tuple ops           # the ops as given, normalised to tuples (for repr/debug)
    cdef list _ops                    # [_Op]

    cpdef list apply(self, list headers, RequestContext ctx)


@cython.final
cdef class PathRewrite:
    # Exactly one of the two modes; the result is a raw path with no query.
    cdef readonly str template        # "/v2/items/{id}/{proxy}" or None
    cdef readonly bytes strip_prefix  # b"/api" (no trailing slash) or None
    cdef Template _template           # path-mode Template for `template`
    cdef Py_ssize_t _prefix_len       # len(strip_prefix)

    cpdef bytes apply(self, RequestContext ctx)


cdef bytes resolve_variable(int kind, bytes arg, RequestContext ctx)
cdef bint is_token(bytes name)
