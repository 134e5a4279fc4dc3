"""Python SDK for the Sheratan job mesh (docs/API.md is the contract): `Client` and
`AsyncClient` submit and follow jobs, `Worker` runs them."""

from .client import AsyncClient, Client
from .errors import (
    AuthFail,
    Backpressure,
    Conflict,
    Forbidden,
    IntegrityFailure,
    InvalidRequest,
    JobFailed,
    NotFound,
    PayloadTooLarge,
    SheratanError,
    Unavailable,
)
from ._worker import Job, Permanent, Worker

__all__ = [
    "AsyncClient",
    "AuthFail",
    "Backpressure",
    "Client",
    "Conflict",
    "Forbidden",
    "IntegrityFailure",
    "InvalidRequest",
    "Job",
    "JobFailed",
    "NotFound",
    "PayloadTooLarge",
    "Permanent",
    "SheratanError",
    "Unavailable",
    "Worker",
]
