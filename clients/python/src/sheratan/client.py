"""Clients of the hub: submit jobs, read them, wait for them, cancel them, list them page by page,
list nodes, collect results. `Client` blocks, `AsyncClient` is the same for asyncio. Every answer
that is not a success raises the contract's error as a typed exception (`sheratan.errors`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import ssl
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterator

import httpx

from . import _wire, errors
from .join import join as join_hub

OnProgress = Callable[[dict[str, Any], str], None]


@dataclass
class Settings:
    """Where the hub is and how to reach it, from the arguments, a join string, or the
    environment as the `sheratan` CLI reads it: `SHERATAN_JOIN`; else `SHERATAN_CONTROL_URL`,
    `SHERATAN_DATA_URL` (default the local hub's 8787 and 8788), the token from
    `SHERATAN_HUB_TOKEN`, `SHERATAN_HUB_TOKEN_FILE` or the local hub's `$SHERATAN_HOME/hub_token`
    (`./.sheratan`), and `SHERATAN_CA_FILE` trusted beside the system's roots."""

    control_url: str
    data_url: str
    token: str
    verify: Any

    @classmethod
    def resolve(
        cls,
        control_url: str | None,
        data_url: str | None,
        token: str | None,
        join: str | None,
        verify: Any,
    ) -> "Settings":
        join = join or (None if (data_url or control_url or token) else os.environ.get("SHERATAN_JOIN"))
        if join:
            joined = join_hub(join)
            return cls(joined.control_url, joined.data_url, joined.token, joined.verify)
        token = token or _find_token()
        control = control_url or os.environ.get("SHERATAN_CONTROL_URL", "http://127.0.0.1:8787")
        data = data_url or os.environ.get("SHERATAN_DATA_URL", "http://127.0.0.1:8788")
        ca_file = os.environ.get("SHERATAN_CA_FILE")
        if verify is True and ca_file:
            verify = ssl.create_default_context()
            verify.load_verify_locations(cafile=ca_file)
        return cls(control.rstrip("/"), data.rstrip("/"), token, verify)

    def http_args(self, timeout: float) -> dict[str, Any]:
        return {"headers": {"Authorization": f"Bearer {self.token}"}, "timeout": timeout, "verify": self.verify}


def _find_token() -> str:
    """SHERATAN_HUB_TOKEN, else the file SHERATAN_HUB_TOKEN_FILE names, else the local hub's."""
    if os.environ.get("SHERATAN_HUB_TOKEN"):
        return os.environ["SHERATAN_HUB_TOKEN"]
    home = os.environ.get("SHERATAN_HOME", "./.sheratan")
    # A token file named but unreadable is an error, not a reason to take another hub's token.
    named = os.environ.get("SHERATAN_HUB_TOKEN_FILE")
    places = [named] if named else [os.path.join(home, "hub_token")]
    for path in places:
        try:
            with open(path) as f:
                token = f.read().strip()
        except OSError:
            continue
        if token:
            return token
    raise errors.InvalidRequest(
        "INVALID_REQUEST",
        "no token: not given, SHERATAN_HUB_TOKEN not set, and none in " + ", ".join(places),
        "pass token= (the hub's $SHERATAN_HOME/hub_token, or a credential) or join=, or set SHERATAN_HUB_TOKEN",
    )


class _Base:
    """What both clients hold: where the hub is, and how a call becomes a request."""

    def __init__(
        self,
        data_url: str | None = None,
        token: str | None = None,
        *,
        control_url: str | None = None,
        join: str | None = None,
        timeout: float = 30.0,
        verify: Any = True,
    ) -> None:
        self.settings = Settings.resolve(control_url, data_url, token, join, verify)
        self._timeout = timeout
        self._connect(self.settings.http_args(timeout))

    def _connect(self, args: dict[str, Any]) -> None:
        raise NotImplementedError

    def _request(self, call: _wire.Call) -> dict[str, Any]:
        base = self.settings.data_url if call.plane == "data" else self.settings.control_url
        return {
            "method": call.method,
            "url": base + call.path,
            "json": call.json,
            "params": call.params,
            "headers": call.headers,
            "timeout": self._timeout + call.wait_s,
        }

    @staticmethod
    def _answer(call: _wire.Call, response: httpx.Response) -> Any:
        return call.keep(_wire.answer(response.status_code, response.content, response.headers.get("retry-after")))


class Client(_Base):
    """`Client(data_url="http://127.0.0.1:8788", token=..., control_url=...)`, or
    `Client(join="sht1:…")`; a context manager."""

    def _connect(self, args: dict[str, Any]) -> None:
        self._http = httpx.Client(**args)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _do(self, call: _wire.Call) -> Any:
        try:
            response = self._http.request(**self._request(call))
        except httpx.TransportError as err:
            raise _wire.unreachable(err) from err
        return self._answer(call, response)

    def submit(
        self, kind: str, payload: Any = None, *, queue: str = "default", traceparent: str | None = None, **options: Any
    ) -> dict[str, Any]:
        """Submits a job; the answer has `job_id` and `status` (and a `warning` when it may
        wait). Options are `POST /v1/jobs`'s other fields (`priority`, `idempotency_key`,
        `max_attempts`, `timeout_s`, `run_at`, `concurrency_key`, ...); `traceparent` (W3C)
        puts the job in the caller's trace."""
        return self._do(_wire.submit(kind, payload, queue, options, traceparent))

    def submit_batch(self, jobs: list[dict[str, Any]], *, traceparent: str | None = None) -> list[dict[str, Any]]:
        """Submits up to 1,000 jobs in one request; one outcome per job, in order."""
        return self._do(_wire.submit_batch(jobs, traceparent))

    def submit_many(
        self,
        jobs: list[dict[str, Any]],
        *,
        batch_size: int = _wire.MANY_BATCH,
        in_flight: int = 4,
        traceparent: str | None = None,
    ) -> list[dict[str, Any] | errors.SheratanError]:
        """Submits any number of jobs (each `{kind, payload, queue?, ...}` as `POST /v1/jobs`
        takes it) without a round trip per job: batches of `batch_size`, `in_flight` requests
        at once over the client's keep-alive connections. One entry per job, in order: its
        answer (`job_id`, `status`, `code`), or the typed error it would have raised alone
        (`Backpressure` for a full queue, `InvalidRequest`, ...), so one bad job stops no
        other. An error of a whole request (the token, the hub down) is raised."""
        chunks = _wire.batches(jobs, batch_size, in_flight)
        with concurrent.futures.ThreadPoolExecutor(max_workers=in_flight) as pool:
            answers = list(pool.map(lambda chunk: self.submit_batch(chunk, traceparent=traceparent), chunks))
        return _wire.outcomes(answers)

    def get(self, job_id: str) -> dict[str, Any]:
        return self._do(_wire.get(job_id))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._do(_wire.cancel(job_id))

    def wait(
        self, job_id: str, timeout: float = 60.0, poll: float = 0.2, on_progress: OnProgress | None = None
    ) -> Any:
        """The job's result once it completes; `JobFailed` if it fails or is cancelled,
        `TimeoutError` after `timeout` seconds. `on_progress(progress, new_output)` is called
        whenever the job's progress changes while it runs."""
        deadline = time.monotonic() + timeout
        follower = _wire.ProgressFollower(on_progress)
        while True:
            job = self.get(job_id)
            follower.look(job)
            done, result = _wire.outcome_of(job)
            if done:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout} s")
            time.sleep(poll)

    def jobs(
        self,
        *,
        queue: str | None = None,
        status: str | None = None,
        kind: str | None = None,
        page_size: int = 100,
    ) -> Iterator[dict[str, Any]]:
        """Every job that matches, newest first, fetched a page at a time."""
        params = _wire.job_filters(queue, status, kind, page_size)
        while True:
            page = self._do(_wire.jobs_page(params))
            yield from page["jobs"]
            if not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]

    def queues(self) -> list[dict[str, Any]]:
        return self._do(_wire.queues())

    def nodes(self, *, role: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """The nodes the hub knows (control plane), with status, health and load."""
        return self._do(_wire.nodes(role, status))

    def results(self, *, wait: float = 0.0, limit: int = 100) -> list[dict[str, Any]]:
        """Finished jobs submitted with `follow_result` and not acknowledged yet (a long poll of
        up to `wait` seconds); `ack` them once handled."""
        return self._do(_wire.results(wait, limit))

    def ack(self, job_ids: list[str]) -> int:
        return self._do(_wire.ack(job_ids))

    def whoami(self) -> dict[str, Any]:
        return self._do(_wire.whoami())


class AsyncClient(_Base):
    """`Client` for asyncio: the same methods, awaited; `async with AsyncClient(...)`."""

    def _connect(self, args: dict[str, Any]) -> None:
        self._http = httpx.AsyncClient(**args)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _do(self, call: _wire.Call) -> Any:
        try:
            response = await self._http.request(**self._request(call))
        except httpx.TransportError as err:
            raise _wire.unreachable(err) from err
        return self._answer(call, response)

    async def submit(
        self, kind: str, payload: Any = None, *, queue: str = "default", traceparent: str | None = None, **options: Any
    ) -> dict[str, Any]:
        return await self._do(_wire.submit(kind, payload, queue, options, traceparent))

    async def submit_batch(self, jobs: list[dict[str, Any]], *, traceparent: str | None = None) -> list[dict[str, Any]]:
        return await self._do(_wire.submit_batch(jobs, traceparent))

    async def submit_many(
        self,
        jobs: list[dict[str, Any]],
        *,
        batch_size: int = _wire.MANY_BATCH,
        in_flight: int = 4,
        traceparent: str | None = None,
    ) -> list[dict[str, Any] | errors.SheratanError]:
        """As `Client.submit_many`, on the event loop."""
        chunks = _wire.batches(jobs, batch_size, in_flight)
        slots = asyncio.Semaphore(in_flight)

        async def one(chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
            async with slots:
                return await self.submit_batch(chunk, traceparent=traceparent)

        answers = await asyncio.gather(*(one(c) for c in chunks))
        return _wire.outcomes(list(answers))

    async def get(self, job_id: str) -> dict[str, Any]:
        return await self._do(_wire.get(job_id))

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return await self._do(_wire.cancel(job_id))

    async def wait(
        self, job_id: str, timeout: float = 60.0, poll: float = 0.2, on_progress: OnProgress | None = None
    ) -> Any:
        follower = _wire.ProgressFollower(on_progress)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            job = await self.get(job_id)
            follower.look(job)
            done, result = _wire.outcome_of(job)
            if done:
                return result
            if loop.time() >= deadline:
                raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout} s")
            await asyncio.sleep(poll)

    async def jobs(
        self,
        *,
        queue: str | None = None,
        status: str | None = None,
        kind: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[dict[str, Any]]:
        params = _wire.job_filters(queue, status, kind, page_size)
        while True:
            page = await self._do(_wire.jobs_page(params))
            for job in page["jobs"]:
                yield job
            if not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]

    async def queues(self) -> list[dict[str, Any]]:
        return await self._do(_wire.queues())

    async def nodes(self, *, role: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        return await self._do(_wire.nodes(role, status))

    async def results(self, *, wait: float = 0.0, limit: int = 100) -> list[dict[str, Any]]:
        return await self._do(_wire.results(wait, limit))

    async def ack(self, job_ids: list[str]) -> int:
        return await self._do(_wire.ack(job_ids))

    async def whoami(self) -> dict[str, Any]:
        return await self._do(_wire.whoami())
