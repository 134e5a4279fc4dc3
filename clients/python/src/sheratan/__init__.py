"""Python client for the Sheratan job mesh (docs/API.md is the contract)."""

from .client import Client
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

__all__ = [
    "AuthFail",
    "Backpressure",
    "Client",
    "Conflict",
    "Forbidden",
    "IntegrityFailure",
    "InvalidRequest",
    "JobFailed",
    "NotFound",
    "PayloadTooLarge",
    "SheratanError",
    "Unavailable",
]
