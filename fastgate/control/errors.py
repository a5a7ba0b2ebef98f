"""The management APIs' errors: an HTTP status and AWS's error type (x-amzn-ErrorType)."""

from __future__ import annotations


class ApiError(Exception):
    """An error of the management API: HTTP status, AWS error type (x-amzn-ErrorType), message."""
    status = 400
    code = "BadRequestException"
    # seconds, sent as Retry-After (the retryAfterSeconds member of AWS's 429 and 503 shapes)
    retry_after: str | None = None

    def __init__(self, message: str | None):
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    status, code = 400, "BadRequestException"


class Serialization(ApiError):
    """A member of the wrong JSON type (a boolean or number where a string belongs)."""
    status, code = 400, "SerializationException"


class Unauthorized(ApiError):
    status, code = 401, "UnauthorizedException"


class NotFound(ApiError):
    status, code = 404, "NotFoundException"


class Conflict(ApiError):
    status, code = 409, "ConflictException"


class LimitExceeded(ApiError):
    status, code = 429, "LimitExceededException"


class TooManyRequests(ApiError):
    status, code = 429, "TooManyRequestsException"


class ServiceUnavailable(ApiError):
    status, code = 503, "ServiceUnavailableException"


class ValidationError(ApiError):
    """AWS's constraint violations of the input shape ("1 validation error detected: ...")."""
    status, code = 400, "ValidationException"
