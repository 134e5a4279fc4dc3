"""A client of the hub's data plane: submit jobs, read them, wait for them, cancel them, list
them page by page. Every answer that is not a success raises the contract's error as a typed
exception (`sheratan.errors`)."""

from __future__ import annotations

import time
from typing import Any, Iterator

import httpx

from . import errors

_FINISHED = ("completed", "failed", "cancelled")


class Client:
    """`Client(data_url="http://127.0.0.1:8788", token=...)`; a context manager."""

    def __init__(self, data_url: str, token: str, *, timeout: float = 30.0) -> None:
        self._http = httpx.Client(
            base_url=data_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as err:
            raise errors.Unavailable("UNAVAILABLE", f"cannot reach the hub: {err}") from err
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success:
            return body
        raise errors.from_response(response.status_code, body, response.headers.get("retry-after"))

    def submit(
        self,
        kind: str,
        payload: Any = None,
        *,
        queue: str = "default",
        **options: Any,
    ) -> dict:
        """Submits a job; the answer has `job_id` and `status` (and a `warning` when it may
        wait). Options are `POST /v1/jobs`'s other fields (`priority`, `idempotency_key`,
        `max_attempts`, `timeout_s`, `run_at`, `concurrency_key`, ...)."""
        body = {"kind": kind, "payload": payload, "queue": queue, **options}
        return self._call("POST", "/v1/jobs", json=body)

    def submit_batch(self, jobs: list[dict]) -> list[dict]:
        """Submits up to 1,000 jobs in one request; one outcome per job, in order."""
        return self._call("POST", "/v1/jobs/batch", json={"jobs": jobs})["jobs"]

    def get(self, job_id: str) -> dict:
        return self._call("GET", f"/v1/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel")

    def wait(self, job_id: str, timeout: float = 60.0, poll: float = 0.2) -> Any:
        """The job's result once it completes; `JobFailed` if it fails or is cancelled,
        `TimeoutError` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job["status"] == "completed":
                return job.get("result")
            if job["status"] in _FINISHED:
                raise errors.JobFailed(job)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout} s")
            time.sleep(poll)

    def jobs(
        self, *, queue: str | None = None, status: str | None = None, page_size: int = 100
    ) -> Iterator[dict]:
        """Every job that matches, newest first, fetched a page at a time."""
        params: dict[str, Any] = {"limit": page_size}
        if queue:
            params["queue"] = queue
        if status:
            params["status"] = status
        while True:
            page = self._call("GET", "/v1/jobs", params=params)
            yield from page["jobs"]
            if not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]

    def queues(self) -> list[dict]:
        return self._call("GET", "/v1/queues")["queues"]
