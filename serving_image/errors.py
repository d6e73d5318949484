"""One error type per client-visible failure, each carrying its status.

Transports map these once: REST to the status code and the V2 body ``{"error": ...}``,
gRPC to a status code. Anything that is not a ``ServingError`` is a server bug (500).
"""

from collections.abc import Mapping
from typing import ClassVar


class ServingError(Exception):
    """Base class: a failure the client is told about, with an HTTP status and a gRPC code name."""

    status: ClassVar[int] = 500
    grpc_code: ClassVar[str] = "INTERNAL"
    outcome: ClassVar[str] = "server_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def document(self) -> dict[str, object]:
        """The REST body: ``{"error": message}`` and any fields a subclass names (the entities at fault)."""
        return {"error": self.message}


class InvalidInput(ServingError):
    """The request is malformed or does not match the model's inputs."""

    status = 400
    grpc_code = "INVALID_ARGUMENT"
    outcome = "client_error"


class ModelNotFound(ServingError):
    """The model, or the requested version of it, does not exist."""

    status = 404
    grpc_code = "NOT_FOUND"
    outcome = "not_found"


class ModelNotReady(ServingError):
    """The model exists but failed to load, so it cannot serve."""

    status = 400
    grpc_code = "UNAVAILABLE"
    outcome = "unavailable"


class RequestTimeout(ServingError):
    """The client did not send the whole request within the configured time."""

    status = 408
    grpc_code = "DEADLINE_EXCEEDED"
    outcome = "client_error"


class PayloadTooLarge(ServingError):
    """The request body exceeds the configured limit."""

    status = 413
    grpc_code = "RESOURCE_EXHAUSTED"
    outcome = "client_error"


class Overloaded(ServingError):
    """The model's queue is full: refused at once instead of queued without bound."""

    status = 429
    grpc_code = "RESOURCE_EXHAUSTED"
    outcome = "overloaded"


class ShuttingDown(ServingError):
    """The server is draining after SIGTERM and takes no new requests."""

    status = 503
    grpc_code = "UNAVAILABLE"
    outcome = "unavailable"


class InjectedFault(ServingError):
    """A failure staged on purpose by the version's ``faults`` config, to test rollbacks."""

    status = 500
    grpc_code = "INTERNAL"
    outcome = "server_error"


class JobNotFound(ServingError):
    """No asynchronous job has this id: never submitted, or its result has expired."""

    status = 404
    grpc_code = "NOT_FOUND"
    outcome = "not_found"


class NotConfigured(ServingError):
    """A feature this server was not configured for (asynchronous inference without a queue)."""

    status = 501
    grpc_code = "UNIMPLEMENTED"
    outcome = "client_error"


class QueueUnavailable(ServingError):
    """The job queue cannot be reached: nothing was queued, so the client may retry."""

    status = 503
    grpc_code = "UNAVAILABLE"
    outcome = "unavailable"


class FeatureLookupError(ServingError):
    """An entity-keyed request whose features could not be served (serving_image/features/online.py):
    the body names what is at fault (entity ids, features, the budget) besides the message."""

    def __init__(self, message: str, details: Mapping[str, object]) -> None:
        super().__init__(message)
        self.details = dict(details)

    def document(self) -> dict[str, object]:
        return {"error": self.message, **self.details}


class UnknownEntity(FeatureLookupError):
    """Feast's online store holds no row for some of the entity ids sent: never answered as zeros."""

    status = 404
    grpc_code = "NOT_FOUND"
    outcome = "not_found"


class MissingFeatureValue(FeatureLookupError):
    """An entity's row lacks a feature value (null or NaN in the online store): never answered as a zero."""

    status = 422
    grpc_code = "FAILED_PRECONDITION"
    outcome = "client_error"


class FeatureTimeout(FeatureLookupError):
    """The feature lookup did not finish within the per-request budget; it was abandoned."""

    status = 504
    grpc_code = "DEADLINE_EXCEEDED"
    outcome = "unavailable"


class FeatureStoreUnavailable(FeatureLookupError):
    """The online store failed (locked past its own timeout, missing, corrupt): the client may retry."""

    status = 503
    grpc_code = "UNAVAILABLE"
    outcome = "unavailable"
