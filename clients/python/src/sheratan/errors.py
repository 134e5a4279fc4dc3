"""Errors carry the contract's `code`, `message` and `hint` (docs/API.md, "Wire rules")."""

from __future__ import annotations

from typing import Any


class SheratanError(Exception):
    """An answer the hub gave with an error body, or one it could not give."""

    def __init__(
        self,
        code: str,
        message: str,
        hint: str = "",
        status: int = 0,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}" + (f" ({hint})" if hint else ""))
        self.code = code
        self.message = message
        self.hint = hint
        self.status = status
        self.retry_after = retry_after


class InvalidRequest(SheratanError):
    """400: the request is wrong as the message says."""


class AuthFail(SheratanError):
    """403 `AUTH_FAIL`: no token, or the wrong one."""


class Forbidden(SheratanError):
    """403 `FORBIDDEN`: the credential's role may not do this."""


class NotFound(SheratanError):
    """404."""


class Conflict(SheratanError):
    """409: a taken name, an idempotency key used for another request, a lease not held."""


class PayloadTooLarge(SheratanError):
    """413."""


class IntegrityFailure(SheratanError):
    """422: a result whose signature does not check."""


class Backpressure(SheratanError):
    """429: the hub holds as many jobs as it may; `retry_after` says when to try again."""


class Unavailable(SheratanError):
    """503 (or the hub unreachable): try again later."""


class JobFailed(SheratanError):
    """`wait` on a job that ended failed or cancelled; `job` is its view."""

    def __init__(self, job: dict[str, Any]) -> None:
        error = job.get("error") or {}
        super().__init__(
            "JOB_" + str(job.get("status", "failed")).upper(),
            error.get("message") or f"job {job.get('job_id')} ended {job.get('status')}",
        )
        self.job = job


_BY_CODE = {
    "INVALID_REQUEST": InvalidRequest,
    "AUTH_FAIL": AuthFail,
    "FORBIDDEN": Forbidden,
    "LOCALHOST_ONLY": Forbidden,
    "NOT_FOUND": NotFound,
    "CONFLICT": Conflict,
    "IDEMPOTENCY_KEY_COLLISION": Conflict,
    "LEASE_EXPIRED": Conflict,
    "PAYLOAD_TOO_LARGE": PayloadTooLarge,
    "RESULT_INTEGRITY_FAIL": IntegrityFailure,
    "BACKPRESSURE_DROP": Backpressure,
    "UNAVAILABLE": Unavailable,
}


# The HTTP status each code is answered with (docs/API.md, "Wire rules"), for errors that
# arrive without one (a worker stream's error frame).
STATUS = {
    "AUTH_FAIL": 403, "FORBIDDEN": 403, "LOCALHOST_ONLY": 403, "PORT_MISMATCH": 421,
    "INVALID_REQUEST": 400, "PAYLOAD_TOO_LARGE": 413, "NOT_FOUND": 404, "METHOD_NOT_ALLOWED": 405,
    "IDEMPOTENCY_KEY_COLLISION": 409, "LEASE_EXPIRED": 409, "CONFLICT": 409,
    "BACKPRESSURE_DROP": 429, "RESULT_INTEGRITY_FAIL": 422, "INTERNAL": 500, "UNAVAILABLE": 503,
}


def from_response(status: int, body: object, retry_after: str | None) -> SheratanError:
    """The typed error for an answer with status `status` and JSON body `body`."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"code": "UNKNOWN", "message": f"HTTP {status}", "hint": ""}
    code = str(error.get("code", "UNKNOWN"))
    after = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
    cls = _BY_CODE.get(code, SheratanError)
    return cls(code, str(error.get("message", "")), str(error.get("hint", "")), status, after)
