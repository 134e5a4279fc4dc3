"""A worker in pure Python, behaving as `sheratan worker` does (docs/API.md, "Data plane"):
heartbeats to the control plane, long-polls the data plane for jobs its handlers run, extends a
running job's lease three times per lease, watches running jobs for cancels, sends progress,
reports signed results (retried through hub restarts), backs off on errors the way the contract
asks (Retry-After believed, a refused token on a slow backoff), and stops gracefully on SIGTERM.

A handler takes the payload (and, if it has a second parameter, a `Job` to report progress and
see cancels through) and returns the result, JSON-serialisable. Raising fails the job: retryably,
unless the exception is `Permanent`. `async def` handlers run on the worker's event loop and are
cancelled at a cancel or at the job's `timeout_s`; plain functions run in a thread of their own,
which Python cannot kill: at a cancel or timeout `job.cancelled` is set, the job is reported (or
not, for a cancel) and the slot freed, and whatever the function returns later is discarded.

Run one with `python -m sheratan.worker module:handlers` (`sheratan/worker.py`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import inspect
import json
import logging
import math
import os
import platform
import queue
import random
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import httpx

from . import _stream, _trace, _wire, errors
from .client import Settings

log = logging.getLogger("sheratan.worker")

VERSION = "0.1.0"
# Jobs that have run this long are watched for cancels (shorter ones cost no request).
WATCH_AFTER_S = 0.5
PROGRESS_EVERY_S = 0.25
GATHER_SLOTS_S = 0.002
MESSAGE_MAX = 1024
OUTPUT_MAX = 64 * 1024


class Permanent(Exception):
    """Raised by a handler: the job fails for good, without another attempt."""


class Backoff:
    """Doubles from `base` to `cap` with ±20 % jitter; `reset` after a success."""

    def __init__(self, base: float, cap: float) -> None:
        self.base, self.cap, self.failures = base, cap, 0

    def next(self) -> float:
        delay = min(self.base * (2 ** min(self.failures, 16)), self.cap)
        self.failures += 1
        return delay * (0.8 + 0.4 * random.random())

    def reset(self) -> None:
        self.failures = 0


@dataclass
class Job:
    """What a handler may know of its job, and how it reports progress."""

    job_id: str
    kind: str
    queue: str
    attempt: int
    timeout_s: int
    cancelled: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _value: float | None = None
    _message: str | None = None
    _output: str = ""
    _dirty: bool = False

    def progress(self, value: float | None = None, message: str | None = None, output: str | None = None) -> None:
        """Reports how far the job is (0.0–1.0), what it does now, and output to append. Sent at
        most every 250 ms, the rest before the result; safe from any thread."""
        with self._lock:
            if value is not None and math.isfinite(float(value)):
                self._value = min(max(float(value), 0.0), 1.0)
            if message is not None:
                self._message = message.encode()[:MESSAGE_MAX].decode(errors="ignore")
            if output:
                # What waits is capped at one report: a handler writing faster loses the middle.
                self._output = (self._output + output)[-OUTPUT_MAX:]
                while len(self._output.encode()) > OUTPUT_MAX:
                    self._output = self._output[1024:]
            self._dirty = True

    def _take(self) -> dict[str, Any] | None:
        with self._lock:
            if not self._dirty:
                return None
            report: dict[str, Any] = {"job_id": self.job_id}
            if self._value is not None:
                report["progress"] = self._value
            if self._message is not None:
                report["message"] = self._message
            if self._output:
                report["output"] = self._output
            self._output, self._dirty = "", False
            return report


Handler = Callable[..., Any]


def _takes_job(handler: Handler) -> bool:
    try:
        params = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


def _failure(message: str, retryable: bool) -> tuple[str, Any, dict[str, Any]]:
    return "failure", None, {"message": message[:4096], "retryable": retryable}


class Worker:
    """`Worker(handlers={"kind": fn}, queues=["default"], node_id=..., control_url=...,
    data_url=..., token=...)` (or `join=`); `run()` blocks until `stop()` or SIGTERM/SIGINT,
    `await run_async()` is the same inside an event loop."""

    def __init__(
        self,
        handlers: dict[str, Handler],
        *,
        queues: list[str] | None = None,
        node_id: str | None = None,
        control_url: str | None = None,
        data_url: str | None = None,
        token: str | None = None,
        join: str | None = None,
        concurrency: int = 4,
        lease_wait: float = 10.0,
        grace: float = 30.0,
        verify: Any = True,
        otlp_endpoint: str | None = None,
        stream: bool = True,
    ) -> None:
        if not handlers:
            raise ValueError("a worker needs at least one handler")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.handlers = dict(handlers)
        self.queues = list(queues or ["default"])
        self.node_id = node_id or os.environ.get("SHERATAN_NODE_ID") or f"py-{platform.node()}-{os.getpid()}"
        self.settings = Settings.resolve(control_url, data_url, token, join, verify)
        self.concurrency = concurrency
        self.lease_wait = lease_wait
        self.grace = grace
        self.capabilities = sorted(self.handlers)
        self._takes_job = {kind: _takes_job(fn) for kind, fn in self.handlers.items()}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False
        self._running: dict[str, tuple[str, float, asyncio.Event]] = {}
        self._abandoned = False
        self._inflight = 0
        # Jobs come over the worker stream unless it is off or the hub does not serve it.
        self.use_stream = stream and os.environ.get("SHERATAN_NO_STREAM", "") in ("", "0", "false")
        self._stream: _stream.Stream | None = None
        self._reserved = 0
        self._slots: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # A span per handler run in the job's trace, exported when an OTLP endpoint is given
        # (or SHERATAN_OTLP_ENDPOINT is set).
        endpoint = otlp_endpoint or os.environ.get(_trace.ENDPOINT_ENV) or None
        self.tracer = _trace.Tracer(endpoint, "sheratan-python-worker")

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> None:
        """Runs until `stop()`, SIGTERM or SIGINT; running jobs get `grace` seconds to finish."""
        asyncio.run(self.run_async(signals=threading.current_thread() is threading.main_thread()))

    def stop(self) -> None:
        """Stops leasing; `run` returns once running jobs finished (or `grace` passed). Safe
        from any thread and from a signal handler."""
        self._stop_requested = True
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)

    async def run_async(self, signals: bool = False) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self.stop)
        args = self.settings.http_args(30.0)
        # Enough connections for every slot's requests, the lease poll, the watch and the
        # heartbeat; more only cost (httpx scans its whole pool at each request).
        limits = httpx.Limits(max_connections=self.concurrency + 4, max_keepalive_connections=self.concurrency + 4)
        # Results go out on a blocking client from a small pool of threads: httpx's asyncio
        # transport costs about twice the CPU per request (measured: 0.86 vs 0.48 ms on this
        # hub, 1.2 ms with eight in flight), and a result is the one request every job makes.
        self._reporters = concurrent.futures.ThreadPoolExecutor(
            max_workers=min(self.concurrency, 8), thread_name_prefix="sheratan-report"
        )
        with httpx.Client(**args, limits=limits) as sync_http:
            async with httpx.AsyncClient(**args, limits=limits) as http:
                self._http, self._sync_http = http, sync_http
                await self._serve(signals)
        log.info("worker %s stopped", self.node_id)

    async def _serve(self, signals: bool) -> None:
        """The loops, until the lease loop ends (a stop), then the background ones."""
        log.info(
            "worker %s started: queues %s, handlers %s, concurrency %d",
            self.node_id, self.queues, self.capabilities, self.concurrency,
        )
        background = [asyncio.create_task(self._heartbeat_loop())]
        try:
            stream = await self._open_stream() if self.use_stream else None
            if stream is not None:
                await self._stream_loop(stream)
            elif not self._stopping_now():
                # The request routes, with the watch route carrying cancels.
                background.append(asyncio.create_task(self._watch_loop()))
                await self._lease_loop()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            # Reports still retrying after the grace period give up (`_abandoned`): a stop
            # never waits on a hub that is down.
            self._abandoned = True
            self._reporters.shutdown(wait=False, cancel_futures=True)
            if signals:
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

    # -- requests ----------------------------------------------------------------------------

    def _request(
        self, plane: str, path: str, body: Any, sign: bool, extra: dict[str, str] | None = None
    ) -> tuple[str, bytes, dict[str, str]]:
        base = self.settings.data_url if plane == "data" else self.settings.control_url
        if sign:
            content, headers = _wire.signed(body, self.settings.token)
        else:
            content, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
        return base + path, content, {**headers, **(extra or {})}

    async def _call(self, plane: str, path: str, body: Any, *, sign: bool = False, wait_s: float = 0.0) -> Any:
        url, content, headers = self._request(plane, path, body, sign)
        try:
            response = await self._http.post(url, content=content, headers=headers, timeout=30.0 + wait_s)
        except httpx.TransportError as err:
            raise _wire.unreachable(err) from err
        return _wire.answer(response.status_code, response.content, response.headers.get("retry-after"))

    def _call_blocking(
        self, plane: str, path: str, body: Any, *, sign: bool = False, extra: dict[str, str] | None = None
    ) -> Any:
        """`_call` on the blocking client, from a reporter thread."""
        url, content, headers = self._request(plane, path, body, sign, extra)
        try:
            response = self._sync_http.post(url, content=content, headers=headers)
        except httpx.TransportError as err:
            raise _wire.unreachable(err) from err
        return _wire.answer(response.status_code, response.content, response.headers.get("retry-after"))

    def _report_error(self, what: str, err: errors.SheratanError) -> None:
        if err.code == "AUTH_FAIL":
            log.error("%s: %s; set SHERATAN_HUB_TOKEN (or token=) to the hub's token; retrying with backoff", what, err)
        else:
            log.warning("%s: %s", what, err)

    # -- loops -------------------------------------------------------------------------------

    def _heartbeat(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "role": "worker",
            "capabilities": self.capabilities,
            "build_id": f"sheratan-python/{VERSION}",
            "capability_hash": hashlib.sha256("\n".join(self.capabilities).encode()).hexdigest(),
            "runtime": {
                "os": platform.system().lower(),
                "arch": platform.machine(),
                "version": VERSION,
                "language": f"python {platform.python_version()}",
            },
            "load": {"inflight": self._inflight, "capacity": self.concurrency},
        }

    async def _heartbeat_loop(self) -> None:
        backoff = Backoff(0.5, 30.0)
        while True:
            try:
                answer = await self._call("control", "/v1/heartbeat", self._heartbeat())
                backoff.reset()
                # The hub's advice, ±15 % so a fleet does not beat in step.
                wait = min(max(answer.get("heartbeat_interval_s", 10), 1), 300) * (0.85 + 0.3 * random.random())
            except errors.SheratanError as err:
                self._report_error("heartbeat", err)
                wait = backoff.next()
            await asyncio.sleep(wait)

    async def _lease_loop(self) -> None:
        assert self._stopping is not None
        slots = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[Any]] = set()
        backoff, auth = Backoff(0.2, 10.0), Backoff(2.0, 60.0)
        stopping = asyncio.create_task(self._stopping.wait())
        while not self._stopping.is_set():
            # Wait for a free slot, then ask for as many jobs as there are free slots.
            acquire = asyncio.create_task(slots.acquire())
            await asyncio.wait({acquire, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not acquire.done():
                acquire.cancel()
                break
            free = 1
            # Jobs leased together tend to end together: 2 ms for the others' slots to free up
            # makes one lease call serve several jobs (+40 % jobs/s on a backlog, measured),
            # for 2 ms more from a job's end to the next one's start.
            await asyncio.sleep(GATHER_SLOTS_S)
            while not slots.locked():
                await slots.acquire()
                free += 1
            request = {
                "node_id": self.node_id,
                "queues": self.queues,
                "capabilities": self.capabilities,
                "max_jobs": min(free, 100),
                "wait_ms": int(self.lease_wait * 1000),
            }
            lease = asyncio.create_task(self._call("data", "/v1/leases", request, wait_s=self.lease_wait))
            await asyncio.wait({lease, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not lease.done():
                lease.cancel()
                for _ in range(free):
                    slots.release()
                break
            try:
                grant = lease.result()
                backoff.reset()
                auth.reset()
                for job in grant["jobs"][:free]:
                    free -= 1
                    task = asyncio.create_task(self._run_job(job, slots))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                pause = grant.get("defer_ms", 0) / 1000
            except errors.SheratanError as err:
                self._report_error("lease", err)
                pause = self._pause_after(err, backoff, auth)
            for _ in range(free):
                slots.release()
            if pause > 0:
                try:
                    await asyncio.wait_for(self._stopping.wait(), pause)
                except asyncio.TimeoutError:
                    pass
        stopping.cancel()
        await self._drain(tasks)

    def _stopping_now(self) -> bool:
        return self._stopping is not None and self._stopping.is_set()

    async def _open_stream(self) -> _stream.Stream | None:
        """The worker stream, retried while the hub is down or refuses the token; None when the
        hub does not serve it (then the request routes) or at a stop."""
        assert self._stopping is not None
        query = {
            "node_id": self.node_id,
            "queues": ",".join(self.queues),
            "capabilities": ",".join(self.capabilities),
            "max_jobs": str(min(self.concurrency, 1000)),
        }
        backoff, auth = Backoff(0.2, 10.0), Backoff(2.0, 60.0)
        while not self._stopping.is_set():
            try:
                return await _stream.Stream.open(
                    self.settings.data_url, self.settings.token, self.settings.verify, query,
                    self._on_job, self._on_ended, self._on_reconnect, self._running_leases,
                )
            except _stream.Refused as err:
                log.warning("the hub does not serve the worker stream (%s); using the request routes", err)
                return None
            except errors.SheratanError as err:
                self._report_error("worker stream", err)
                try:
                    await asyncio.wait_for(self._stopping.wait(), self._pause_after(err, backoff, auth))
                except asyncio.TimeoutError:
                    pass
        return None

    async def _stream_loop(self, stream: _stream.Stream) -> None:
        """Asks for a job for each free slot; the stream pushes them (`_on_job`), carries
        cancels (`_on_ended`), extensions, progress and results. At a stop: no more jobs, those
        pushed before the hub heard it still run, running jobs get the grace period."""
        assert self._stopping is not None
        self._stream, self._slots = stream, asyncio.Semaphore(self.concurrency)
        stopping = asyncio.create_task(self._stopping.wait())
        while True:
            acquire = asyncio.create_task(self._slots.acquire())
            await asyncio.wait({acquire, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not acquire.done():
                acquire.cancel()
                break
            n = 1
            while not self._slots.locked():
                await self._slots.acquire()
                n += 1
            self._reserved += n
            await stream.want(n)
        await stream.stop(min(self.grace, 5.0))
        for _ in range(self._reserved):
            self._slots.release()
        self._reserved = 0
        await self._drain(self._tasks)
        await stream.close()
        self._stream = None

    def _on_job(self, job: dict[str, Any]) -> None:
        assert self._slots is not None
        # Each job fills a slot asked for; one beyond them (a stop under way) runs on its own.
        slots = self._slots if self._reserved > 0 else asyncio.Semaphore(1)
        self._reserved = max(self._reserved - 1, 0)
        task = asyncio.create_task(self._run_job(job, slots))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_ended(self, lease_id: str) -> None:
        if lease_id in self._running:
            log.warning("the hub ended job %s's lease (cancelled, or taken back): stopping its handler", self._running[lease_id][0])
            self._running[lease_id][2].set()

    def _on_reconnect(self) -> None:
        # Credits belong to a connection: ask again for every slot still waiting for a job.
        if self._stream is not None and self._reserved > 0:
            asyncio.ensure_future(self._stream.want(self._reserved))

    def _running_leases(self) -> list[dict[str, str]]:
        return [{"job_id": job_id, "lease_id": lease_id} for lease_id, (job_id, _, _) in self._running.items()]

    @staticmethod
    def _pause_after(err: errors.SheratanError, backoff: Backoff, auth: Backoff) -> float:
        """A refused token or wrong port waits on the slow backoff (nothing changes until an
        operator acts); a Retry-After is believed and never undercut; the rest backs off."""
        if err.code in ("AUTH_FAIL", "PORT_MISMATCH"):
            return auth.next()
        if err.retry_after is not None:
            return max(err.retry_after, backoff.next())
        return backoff.next()

    async def _drain(self, tasks: set[asyncio.Task[Any]]) -> None:
        if not tasks:
            return
        log.info("waiting up to %.0f s for %d running jobs", self.grace, len(tasks))
        _, pending = await asyncio.wait(tasks, timeout=self.grace)
        if pending:
            log.warning("jobs still running after the grace period; stopping them (their leases will be reaped)")
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=5)

    async def _watch_loop(self) -> None:
        """Long-polls the hub over the leases of jobs running for 500 ms or more; a lease the hub
        says ended (cancelled, reaped) stops its handler, and nothing is reported for it."""
        while True:
            watched = self._watchable()
            if not watched:
                await asyncio.sleep(0.25)
                continue
            poll = asyncio.create_task(
                self._call("data", "/v1/leases/watch", {"leases": watched, "wait_ms": 25_000}, wait_s=25.0)
            )
            while not poll.done() and self._watchable() == watched:
                await asyncio.wait({poll}, timeout=0.25)
            if not poll.done():
                poll.cancel()  # the set changed: ask again with the new one
                continue
            try:
                for lease_id in poll.result()["ended"]:
                    if lease_id in self._running:
                        log.warning("the hub ended job %s's lease (cancelled, or taken back): stopping its handler", self._running[lease_id][0])
                        self._running[lease_id][2].set()
            except errors.SheratanError as err:
                if err.status in (404, 405):
                    log.info("this hub cannot tell running jobs of cancels (%s); they stop at their next lease extension", err)
                    return
                if err.code != "UNAVAILABLE":
                    log.warning("watching the running jobs' leases: %s", err)
                await asyncio.sleep(1)

    def _watchable(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return sorted(
            (
                {"job_id": job_id, "lease_id": lease_id}
                for lease_id, (job_id, started, ended) in self._running.items()
                if now - started >= WATCH_AFTER_S and not ended.is_set()
            ),
            key=lambda lease: lease["lease_id"],
        )

    # -- one job -----------------------------------------------------------------------------

    async def _run_job(self, leased: dict[str, Any], slots: asyncio.Semaphore) -> None:
        self._inflight += 1
        lease_id = leased["lease_id"]
        ended = asyncio.Event()
        self._running[lease_id] = (leased["job_id"], time.monotonic(), ended)
        try:
            supervised = await self._supervise(leased, ended)
            if supervised is not None:
                await self._report(*supervised)
        finally:
            self._running.pop(lease_id, None)
            self._inflight -= 1
            slots.release()

    async def _supervise(
        self, leased: dict[str, Any], ended: asyncio.Event
    ) -> tuple[dict[str, Any], str | None] | None:
        """Runs the handler while keeping the lease alive and sending progress; the result
        request to make and the `traceparent` to send it with, or None when the job is no
        longer ours."""
        span = self.tracer.start("sheratan.handler", leased.get("traceparent"))
        span.attr("sheratan.job_id", leased["job_id"])
        span.attr("sheratan.kind", leased["kind"])
        span.attr("sheratan.attempt", leased["attempt"])
        try:
            supervised = await self._supervised(leased, ended, span)
            if supervised is None:
                span.fail("cancelled, or the lease was lost: nothing reported")
            return supervised
        finally:
            span.end()

    async def _supervised(
        self, leased: dict[str, Any], ended: asyncio.Event, span: _trace.Span
    ) -> tuple[dict[str, Any], str | None] | None:
        timeout_s = int(leased.get("timeout_s") or 24 * 3600)
        job = Job(leased["job_id"], leased["kind"], leased["queue"], leased["attempt"], timeout_s)
        handler = asyncio.ensure_future(self._handle(leased, job))
        extend_every = self._extend_every(leased["lease_expires_at"])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        next_extend = loop.time() + extend_every
        sending = True
        ended_wait = asyncio.ensure_future(ended.wait())
        try:
            while True:
                now = loop.time()
                wake = min(next_extend, deadline, now + PROGRESS_EVERY_S)
                await asyncio.wait({handler, ended_wait}, timeout=max(wake - now, 0), return_when=asyncio.FIRST_COMPLETED)
                if ended.is_set():
                    job.cancelled.set()
                    handler.cancel()
                    return None  # cancelled or taken back: report nothing
                if handler.done():
                    outcome = handler.result()
                    break
                if loop.time() >= deadline:
                    job.cancelled.set()
                    handler.cancel()
                    outcome = _failure(
                        f"TIMEOUT: the handler ran longer than the job's timeout_s ({timeout_s} s) and was stopped", True
                    )
                    break
                if sending:
                    sending = await self._send_progress(leased, job)
                if loop.time() >= next_extend:
                    next_extend += extend_every
                    if not await self._extend(leased):
                        job.cancelled.set()
                        handler.cancel()
                        return None
        finally:
            ended_wait.cancel()
            if not handler.done():
                # Cancelled from outside (the grace period ran out at a stop): tell the handler.
                job.cancelled.set()
                handler.cancel()
        if sending:
            await self._send_progress(leased, job)
        kind, result, error = outcome
        report: dict[str, Any] = {"job_id": leased["job_id"], "lease_id": leased["lease_id"], "outcome": kind}
        if kind == "success":
            report["result"] = result
        else:
            report["error"] = error
            span.fail(error["message"] if error else "failed")
        return report, span.traceparent()

    async def _handle(self, leased: dict[str, Any], job: Job) -> tuple[str, Any, dict[str, Any] | None]:
        """The handler's outcome: ("success", result, None) or ("failure", None, error)."""
        fn = self.handlers.get(leased["kind"])
        if fn is None:
            return _failure(f"this worker has no handler for kind {leased['kind']!r}", False)
        args = (leased.get("payload"), job) if self._takes_job[leased["kind"]] else (leased.get("payload"),)
        try:
            if inspect.iscoroutinefunction(fn):
                result = await fn(*args)
            else:
                result = await _in_own_thread(fn, args)
        except asyncio.CancelledError:
            raise
        except Permanent as err:
            return _failure(str(err) or type(err).__name__, False)
        except BaseException as err:  # noqa: BLE001 — SystemExit from a library included
            return _failure(f"{type(err).__name__}: {err}", True)
        try:
            json.dumps(result, allow_nan=False)  # the hub's JSON has no NaN or Infinity
        except (TypeError, ValueError) as err:
            return _failure(f"the handler's result is not JSON: {err}", False)
        return "success", result, None

    @staticmethod
    def _extend_every(lease_expires_at: str) -> float:
        """Three extensions per lease, never more often than every third of a second."""
        return max(_seconds_until(lease_expires_at), 1.0) / 3

    async def _extend(self, leased: dict[str, Any]) -> bool:
        """False when the lease is gone (someone else may run the job now)."""
        try:
            if self._stream is not None:
                try:
                    await self._stream.extend(leased["lease_id"])
                    return True
                except errors.Unavailable:
                    pass  # between connections: by request
            await self._call("data", f"/v1/leases/{leased['lease_id']}/extend", {})
        except errors.Conflict:
            log.warning("job %s: the lease was lost; stopping the job", leased["job_id"])
            return False
        except errors.SheratanError as err:
            log.warning("job %s: extending the lease failed: %s", leased["job_id"], err)
        return True

    async def _send_progress(self, leased: dict[str, Any], job: Job) -> bool:
        """Sends what the handler reported since the last time; False once the hub says the
        lease is gone (then nothing more is sent)."""
        report = job._take()
        if report is None:
            return True
        try:
            if self._stream is not None:
                await self._stream.progress(leased["lease_id"], report)
            else:
                await self._call("data", f"/v1/leases/{leased['lease_id']}/progress", report, sign=True)
        except errors.Conflict:
            return False
        except errors.SheratanError as err:
            log.warning("job %s: sending progress failed: %s", leased["job_id"], err)
        return True

    async def _report(self, report: dict[str, Any], traceparent: str | None) -> None:
        if self._stream is not None:
            try:
                # Sent again after a reconnect until the hub answers it.
                await self._stream.report(report, traceparent)
            except errors.SheratanError as err:
                self._report_error("result", err)
            return
        await asyncio.get_running_loop().run_in_executor(self._reporters, self._report_blocking, report, traceparent)

    def _report_blocking(self, report: dict[str, Any], traceparent: str | None) -> None:
        """Results are safe to repeat: keep trying through hub restarts until the hub answers."""
        backoff = Backoff(0.2, 5.0)
        for _ in range(60):
            if self._abandoned:
                log.warning("job %s: stopping with its result unsent; the lease will be reaped and the job run again", report["job_id"])
                return
            try:
                self._call_blocking("data", "/v1/results", report, sign=True, extra=_wire.trace_headers(traceparent))
                return
            except errors.SheratanError as err:
                self._report_error("result", err)
                if not (err.code == "UNAVAILABLE" or err.status in (429, 503)):
                    return
                time.sleep(backoff.next())
        log.error("job %s: giving up on reporting the result; the lease will be reaped and the job run again", report["job_id"])


def _seconds_until(rfc3339: str) -> float:
    """Seconds from now to an RFC 3339 time as the hub writes it (up to nanoseconds, `Z`), which
    `datetime.fromisoformat` before Python 3.11 does not read as it is."""
    match = re.fullmatch(r"(.{19})(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", rfc3339.strip())
    if not match:
        return 0.0
    head, fraction, zone = match.groups()
    stamp = f"{head}.{(fraction or '0')[:6]:0<6}{'+00:00' if zone == 'Z' else zone}"
    try:
        return (datetime.fromisoformat(stamp) - datetime.now(timezone.utc)).total_seconds()
    except ValueError:
        return 0.0


class _HandlerThreads:
    """Daemon threads for plain-function handlers, reused: a call takes an idle thread or
    starts one, so a handler that never returns holds only its own thread and delays no other
    job, and a busy worker does not pay a thread start per job (0.6 ms of the loop's time each,
    measured, as the new thread must get the GIL to say it runs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = 0
        self._work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()

    def run(self, call: Callable[[], None]) -> None:
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1  # that idle thread takes this call (or another queued one)
        self._work.put(call)
        if start:
            threading.Thread(target=self._serve, daemon=True, name="sheratan-handler").start()

    def _serve(self) -> None:
        while True:
            self._work.get()()
            with self._lock:
                self._idle += 1


_THREADS = _HandlerThreads()


async def _in_own_thread(fn: Handler, args: tuple[Any, ...]) -> Any:
    """Runs `fn` on a handler thread (`_HandlerThreads`) and waits for its answer."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def deliver(setter: Callable[[Any], None], value: Any) -> None:
        if not future.done():  # a cancelled or timed-out job's late answer is discarded
            setter(value)

    def target() -> None:
        try:
            value = fn(*args)
            outcome: tuple[Callable[[Any], None], Any] = (future.set_result, value)
        except BaseException as err:  # noqa: BLE001 — handed to the awaiting task
            # A future takes neither StopIteration nor non-Exception errors (SystemExit): wrap.
            if isinstance(err, StopIteration) or not isinstance(err, Exception):
                err = RuntimeError(f"{type(err).__name__}: {err}")
            outcome = (future.set_exception, err)
        try:
            loop.call_soon_threadsafe(deliver, *outcome)
        except RuntimeError:
            pass  # the worker has stopped: nobody waits for this answer any more

    _THREADS.run(target)
    return await future

