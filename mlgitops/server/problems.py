"""Request problems the server answers with a 4xx (or 503), and the one status table.

Every problem carries a sentence naming what is wrong; the app turns it into
``{"error": "<sentence>"}`` with the status from `STATUS`. Anything not listed here is a
bug of the server (500), never the client's fault. A sentence quotes client input only
through `shown` (a few dozen characters at most), and the app cuts any message to
``http_server.MAX_MESSAGE`` characters.
"""

from __future__ import annotations

from mlgitops.adapters import http_server


def shown(value: object) -> str:
    """How a value the client sent appears in a sentence: its repr, cut short."""
    return http_server.quote(value)


class RequestProblem(Exception):
    """A request the server refuses; ``str(exc)`` is the sentence sent to the client."""


class BadRequest(RequestProblem):
    """The body is not parseable (not JSON, not CSV) or not shaped like the protocol."""


class Unauthorized(RequestProblem):
    """A non-public route (live statistics) without the API token."""


class NotFound(RequestProblem):
    """Unknown path or model name."""


class MethodNotAllowed(RequestProblem):
    """The path exists but not for this HTTP method."""

    def __init__(self, message: str, *, allow: str = "") -> None:
        super().__init__(message)
        self.allow = allow


class PayloadTooLarge(RequestProblem):
    """The body exceeds the configured limit."""


class UnsupportedMediaType(RequestProblem):
    """The content type is not one the route reads."""


class Unprocessable(RequestProblem):
    """Well-formed, but not what the model's signature accepts (columns, types, NaN, shape)."""


class PredictionFailed(RequestProblem):
    """The model raised on these (validated) rows: the rows are the problem, not the server."""


class NotReady(RequestProblem):
    """The server is shutting down or not loaded yet."""


#: The one exception -> HTTP status table of the server.
STATUS: dict[type[RequestProblem], int] = {
    BadRequest: 400,
    Unauthorized: 401,
    NotFound: 404,
    MethodNotAllowed: 405,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    Unprocessable: 422,
    PredictionFailed: 422,
    NotReady: 503,
}


#: The gRPC status code (by name) of each HTTP status: a gRPC call that fails the way an
#: HTTP request would gets this code and the same sentence.
GRPC_CODE: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    413: "RESOURCE_EXHAUSTED",
    415: "INVALID_ARGUMENT",
    422: "INVALID_ARGUMENT",
    503: "UNAVAILABLE",
}


def grpc_code(status: int) -> str:
    """The gRPC status code name for an HTTP status (INTERNAL for anything unlisted)."""
    return GRPC_CODE.get(status, "INTERNAL")


def status_of(exc: BaseException) -> int:
    """HTTP status for ``exc``: from `STATUS` by class (most specific first), else 500."""
    for cls in type(exc).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            return status
    return 500
