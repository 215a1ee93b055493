"""The one exception tree of Dockyard.

Every class carries the HTTP status, gRPC status code name and CLI exit code it maps to; the HTTP
error handler, the gRPC service and the CLI error boundary read them from here and nowhere else.
"""

from __future__ import annotations

import errno


class DockyardError(Exception):
    """Base of every error Dockyard raises on purpose; its message is safe to show a user."""

    http_status: int = 500
    grpc_status: str = "INTERNAL"
    """The name of a ``grpc.StatusCode`` (the gRPC service reads it; this module imports no
    gRPC)."""
    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(DockyardError):
    """The request or the command line is malformed or does not fit what the model takes."""

    http_status = 400
    grpc_status = "INVALID_ARGUMENT"
    exit_code = 2


class SignatureMismatch(InvalidInput):
    """The inputs do not fit the version's signature (name, shape, datatype, missing or extra)."""


class PayloadTooLarge(DockyardError):
    """The request body is larger than the configured limit."""

    http_status = 413
    grpc_status = "RESOURCE_EXHAUSTED"
    exit_code = 2


class Unauthenticated(DockyardError):
    """No credentials, or credentials that do not identify anyone."""

    http_status = 401
    grpc_status = "UNAUTHENTICATED"
    exit_code = 3


class Forbidden(DockyardError):
    """Known caller, but not allowed to do this."""

    http_status = 403
    grpc_status = "PERMISSION_DENIED"
    exit_code = 3


class NotFound(DockyardError):
    """An unknown model, version, alias or key."""

    http_status = 404
    grpc_status = "NOT_FOUND"
    exit_code = 4


class Conflict(DockyardError):
    """The thing exists already, or the action needs an approval first."""

    http_status = 409
    grpc_status = "FAILED_PRECONDITION"
    exit_code = 5


class RateLimited(DockyardError):
    """Too many requests; `retry_after` seconds until the next one may pass."""

    http_status = 429
    grpc_status = "RESOURCE_EXHAUSTED"
    exit_code = 6

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(DockyardError):
    """Something Dockyard needs is not there right now: a port already taken, a database or a
    server that cannot be reached."""

    http_status = 503
    grpc_status = "UNAVAILABLE"
    exit_code = 7


class StorageFull(Unavailable):
    """The disk (or quota) Dockyard writes to is full; what was being written is discarded whole
    (temporary files, then a rename), so nothing stored is left half-written."""

    http_status = 507
    grpc_status = "RESOURCE_EXHAUSTED"


def storage_full(error: BaseException) -> StorageFull | None:
    """``error`` as a ``StorageFull`` when it is a full disk or quota (ENOSPC, EDQUOT), naming the
    file; None for any other error."""
    if not isinstance(error, OSError) or error.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    where = f" writing {error.filename}" if error.filename else ""
    full = StorageFull(f"no space left on the device{where}: free some space and try again")
    full.__cause__ = error
    return full


class NotReady(Unavailable):
    """The server or model is not ready to answer yet."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(NotReady):
    """Too much queued work; shed load instead of queueing without bound."""

    grpc_status = "RESOURCE_EXHAUSTED"


class CircuitOpen(NotReady):
    """A served version failed too often in a row: it is not asked again until its breaker's
    reset time has passed (``breaker_failures``, ``breaker_reset_s``)."""


class PredictionTimeout(DockyardError):
    """The model did not answer within the deadline."""

    http_status = 504
    grpc_status = "DEADLINE_EXCEEDED"
    exit_code = 7


class PredictionFailed(DockyardError):
    """The model raised; the cause is logged, not sent to the client."""

    http_status = 500
    grpc_status = "INTERNAL"
    exit_code = 8


class ModelCrashed(PredictionFailed):
    """The process running an isolated model died while predicting (it is restarted): 503, the
    server's state for a moment, which a retry finds mended."""

    http_status = 503
    grpc_status = "UNAVAILABLE"


class ArtifactCorrupt(DockyardError):
    """A stored artifact's bytes do not match the digest it was stored under."""

    http_status = 500
    grpc_status = "DATA_LOSS"
    exit_code = 9

    def __init__(self, path: str, expected: str, actual: str) -> None:
        super().__init__(
            f"artifact {path} is corrupt: expected sha256 {expected}, found {actual}; "
            "restore it from a backup or register the model again"
        )
        self.path = path
        self.expected = expected
        self.actual = actual


class MissingExtra(DockyardError):
    """An optional framework is not installed; the message names the pip extra."""

    http_status = 500
    exit_code = 10

    def __init__(self, framework: str, extra: str) -> None:
        super().__init__(
            f"{framework} is not installed; install it with: pip install 'dockyard[{extra}]'"
        )
        self.framework = framework
        self.extra = extra


class AuditTampered(DockyardError):
    """The audit trail's hash chain is broken: an entry was edited, deleted, inserted or moved
    (``dockyard audit verify`` names each)."""

    http_status = 500
    grpc_status = "DATA_LOSS"
    exit_code = 12


class BackupInvalid(DockyardError):
    """A backup file is not one Dockyard wrote, is incomplete, or a file in it does not match
    its manifest's checksum."""

    http_status = 400
    grpc_status = "INVALID_ARGUMENT"
    exit_code = 13


class HomeInconsistent(DockyardError):
    """``dockyard doctor`` found something wrong in a home (each problem named, with its
    repair)."""

    http_status = 500
    exit_code = 14


class OptimizationRefused(DockyardError):
    """``dockyard optimize`` registered nothing: no converter could convert the version, or every
    conversion predicted differently from it (the message names each converter's reason and the
    worst row)."""

    http_status = 422
    grpc_status = "FAILED_PRECONDITION"
    exit_code = 15


__all__ = [
    "BackupInvalid",
    "CircuitOpen",
    "HomeInconsistent",
    "ArtifactCorrupt",
    "AuditTampered",
    "Conflict",
    "DockyardError",
    "Forbidden",
    "InvalidInput",
    "MissingExtra",
    "ModelCrashed",
    "NotFound",
    "NotReady",
    "OptimizationRefused",
    "Overloaded",
    "PayloadTooLarge",
    "PredictionFailed",
    "PredictionTimeout",
    "RateLimited",
    "SignatureMismatch",
    "StorageFull",
    "Unauthenticated",
    "Unavailable",
]
