# The gateway responses: AWS's types (and fastgate's protocol-level ones) with their
# default statuses, messages and x-amzn-ErrorType values, in ONE table (GATEWAY_RESPONSES,
# a Python dict in responses.pyx) that the data plane, the control API and OpenAPI export
# all read; and the status lines of the heads the gateway writes.

cdef bytes status_line(int status, bytes reason)    # b"HTTP/1.1 404 Not Found\r\n"
