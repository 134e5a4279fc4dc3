"""What the sync client, the asyncio client and the worker share: the requests of the contract
(docs/API.md) as plain descriptions, result signing, and the answer-to-error mapping. No I/O
here, so `Client` and `AsyncClient` are two thin transports over the same calls."""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from . import errors

try:
    import sniffio  # type: ignore[import-not-found]  # noqa: F401
except ImportError:
    # httpcore imports sniffio on every async request and falls back to asyncio when it is
    # missing; a failed import is not cached, so each request searched sys.path again (a third
    # of a Python worker's time, measured). None here makes that import fail at once.
    sys.modules["sniffio"] = None  # type: ignore[assignment]

CREDENTIAL_PREFIX = "shtc_"
FINISHED = ("completed", "failed", "cancelled")


@dataclass
class Call:
    """One request: which plane, method, path, and what to keep of the answer."""

    plane: str  # "control" or "data"
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    keep: Callable[[Any], Any] = lambda body: body
    # Long polls wait on the hub for this long; the transport's timeout must outlast it.
    wait_s: float = 0.0


def signing_key(token: str) -> bytes:
    """The key results and progress are signed with: the mesh token itself, or for a credential
    (`shtc_…`) the lowercase hex of HKDF-SHA256(IKM = the secret, no salt, info = `sheratan
    result signing v1`, 32 bytes), as docs/API.md ("Data plane", `POST /v1/results`) says."""
    if not token.startswith(CREDENTIAL_PREFIX):
        return token.encode()
    prk = hmac.new(bytes(32), token.encode(), hashlib.sha256).digest()
    okm = hmac.new(prk, b"sheratan result signing v1\x01", hashlib.sha256).digest()
    return okm.hex().encode()


def signed(body: Any, token: str) -> tuple[bytes, dict[str, str]]:
    """The bytes to send and the two headers that sign them."""
    raw = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    mac = hmac.new(signing_key(token), raw, hashlib.sha256).hexdigest()
    return raw, {
        "Content-Type": "application/json",
        "X-Sheratan-Content-Sha256": hashlib.sha256(raw).hexdigest(),
        "X-Sheratan-Signature": f"sha256={mac}",
    }


def answer(status: int, content: bytes, retry_after: str | None) -> Any:
    """The body of a success, or the contract's error raised as its typed exception."""
    try:
        body = json.loads(content) if content else None
    except ValueError:
        body = None
    if 200 <= status < 300:
        return body
    raise errors.from_response(status, body, retry_after)


def unreachable(err: Exception) -> errors.Unavailable:
    return errors.Unavailable("UNAVAILABLE", f"cannot reach the hub: {err}", "is it running? check the URL")


# The calls, one function each; both clients expose them under the same names.


def trace_headers(traceparent: str | None) -> dict[str, str]:
    """The W3C header that puts submitted jobs in the caller's trace (docs/API.md, "Traces")."""
    return {"traceparent": traceparent} if traceparent else {}


def submit(kind: str, payload: Any, queue: str, options: dict[str, Any], traceparent: str | None = None) -> Call:
    body = {"kind": kind, "payload": payload, "queue": queue, **options}
    return Call("data", "POST", "/v1/jobs", json=body, headers=trace_headers(traceparent))


# The most jobs one batch request may carry (the hub's limit), and the default per request of
# `submit_many` (a hundred typical jobs stay well under the 1 MiB body limit).
MAX_BATCH = 1000
MANY_BATCH = 100


def batches(jobs: list[dict[str, Any]], size: int, in_flight: int) -> list[list[dict[str, Any]]]:
    """`submit_many`'s batches, its arguments checked."""
    if not 1 <= size <= MAX_BATCH:
        raise ValueError(f"batch_size must be between 1 and {MAX_BATCH}")
    if in_flight < 1:
        raise ValueError("in_flight must be at least 1")
    return [jobs[i : i + size] for i in range(0, len(jobs), size)]


def outcomes(answers: list[list[dict[str, Any]]]) -> list[dict[str, Any] | errors.SheratanError]:
    """The batches' answers as one entry per job, in order."""
    return [item_outcome(item) for answer in answers for item in answer]


def item_outcome(item: dict[str, Any]) -> dict[str, Any] | errors.SheratanError:
    """One batch item: its answer (`code` 202 new, 200 an idempotent repeat), or the typed
    error it would have raised submitted alone."""
    code = int(item.get("code", 500))
    if 200 <= code < 300:
        return item
    return errors.from_response(code, {"error": item.get("error")}, None)


def submit_batch(jobs: list[dict[str, Any]], traceparent: str | None = None) -> Call:
    headers = trace_headers(traceparent)
    return Call("data", "POST", "/v1/jobs/batch", json={"jobs": jobs}, headers=headers, keep=lambda b: b["jobs"])


def get(job_id: str) -> Call:
    return Call("data", "GET", f"/v1/jobs/{job_id}")


def cancel(job_id: str) -> Call:
    return Call("data", "POST", f"/v1/jobs/{job_id}/cancel")


def jobs_page(params: dict[str, Any]) -> Call:
    return Call("data", "GET", "/v1/jobs", params=dict(params))


def job_filters(queue: str | None, status: str | None, kind: str | None, page_size: int) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": page_size}
    for name, value in (("queue", queue), ("status", status), ("kind", kind)):
        if value:
            params[name] = value
    return params


def queues() -> Call:
    return Call("data", "GET", "/v1/queues", keep=lambda b: b["queues"])


def nodes(role: str | None, status: str | None) -> Call:
    params = {k: v for k, v in (("role", role), ("status", status)) if v}
    return Call("control", "GET", "/v1/nodes", params=params, keep=lambda b: b["nodes"])


def results(wait: float, limit: int) -> Call:
    params = {"pending": 1, "wait_ms": int(wait * 1000), "limit": limit}
    return Call("data", "GET", "/v1/results", params=params, keep=lambda b: b["results"], wait_s=wait)


def ack(job_ids: list[str]) -> Call:
    return Call("data", "POST", "/v1/results/ack", json={"job_ids": job_ids}, keep=lambda b: b["acked"])


def whoami() -> Call:
    return Call("data", "GET", "/v1/whoami")


def outcome_of(job: dict[str, Any]) -> tuple[bool, Any]:
    """(finished, result) of a job view; raises `JobFailed` for a failed or cancelled job."""
    if job["status"] == "completed":
        return True, job.get("result")
    if job["status"] in FINISHED:
        raise errors.JobFailed(job)
    return False, None


class ProgressFollower:
    """Turns successive job views into the progress a `wait` caller has not seen yet."""

    def __init__(self, on_progress: Callable[[dict[str, Any], str], None] | None) -> None:
        self._on_progress = on_progress
        self._printed = 0
        self._last: Any = None

    def look(self, job: dict[str, Any]) -> None:
        progress = job.get("progress")
        if self._on_progress is None or not progress:
            return
        total = int(progress.get("output_bytes", 0))
        tail = progress.get("output_tail", "").encode()
        new = total - self._printed
        # `output_bytes` counts every byte ever appended, the tail keeps the last 8 KiB: the new
        # bytes are the tail's end (all of it when more came between two looks than it holds).
        fresh = (tail[-new:] if new > 0 else b"").decode(errors="replace")
        self._printed = total
        if fresh or progress != self._last:
            self._last = progress
            self._on_progress(progress, fresh)
