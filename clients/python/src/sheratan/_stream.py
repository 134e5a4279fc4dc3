"""The worker stream for the Python worker (docs/API.md, "The worker stream"): one WebSocket
(`GET /v1/stream`) that brings leased jobs and the end of leases, and carries results,
extensions and progress, each answered after the hub committed it.

`Stream.open` connects once and raises `Refused` when the hub does not serve the stream (404,
400, 405: an older hub, a proxy): the worker then uses the request routes. Once open, the
stream connects again by itself after a loss: it resumes the leases the worker still runs
(first), sends again every result not yet answered (a repeat is answered `duplicate`), and
calls `on_reconnect` so the worker asks for jobs again (credits belong to a connection)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from . import _wire, errors

log = logging.getLogger("sheratan.worker")

# Codes that mean "this hub (or what is in front of it) does not serve the stream".
FALLBACK_STATUSES = (400, 404, 405)


class Refused(Exception):
    """The hub does not serve the stream: use the request routes."""


def _ws_url(data_url: str) -> str:
    parts = urlsplit(data_url)
    scheme = {"http": "ws", "https": "wss"}[parts.scheme]
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/v1/stream", "", ""))


def _ssl(url: str, verify: Any) -> ssl.SSLContext | None:
    if not url.startswith("wss:"):
        return None
    if isinstance(verify, ssl.SSLContext):
        return verify
    context = ssl.create_default_context()
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif isinstance(verify, str):
        context.load_verify_locations(cafile=verify)
    return context


def _frame_error(error: dict[str, Any]) -> errors.SheratanError:
    """An error frame as the typed exception the request route's answer would raise."""
    return errors.from_response(errors.STATUS.get(error.get("code", ""), 500), {"error": error}, None)


class Stream:
    """An open worker stream. `on_job(job)` and `on_ended(lease_id)` are called for what the
    hub pushes, `on_reconnect()` after a reconnect, `running()` names the leases to resume."""

    def __init__(
        self,
        data_url: str,
        token: str,
        verify: Any,
        query: dict[str, str],
        on_job: Callable[[dict[str, Any]], None],
        on_ended: Callable[[str], None],
        on_reconnect: Callable[[], None],
        running: Callable[[], list[dict[str, str]]],
    ) -> None:
        self._url = _ws_url(data_url)
        self._token = token
        self._ssl = _ssl(self._url, verify)
        self._query = query
        self._on_job, self._on_ended, self._on_reconnect = on_job, on_ended, on_reconnect
        self._running = running
        self._ws: ClientConnection | None = None
        self._next_id = 1
        # id -> (the frame to send again after a reconnect, or None; its answer to come)
        self._pending: dict[int, tuple[str | None, asyncio.Future[dict[str, Any]]]] = {}
        self._closing = False
        # `stop` was asked: sent again on every new connection (one asked while reconnecting
        # would be lost otherwise, and the worker would wait out its grace).
        self._stopping = False
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, *args: Any, **kwargs: Any) -> "Stream":
        stream = cls(*args, **kwargs)
        idle = await stream._connect()
        stream._task = asyncio.create_task(stream._carry(idle))
        return stream

    async def _connect(self) -> float:
        """One connection, through its welcome frame; the hub's idle timeout in seconds."""
        query = "&".join(f"{k}={v}" for k, v in self._query.items())
        try:
            ws = await connect(
                f"{self._url}?{query}",
                additional_headers={"Authorization": f"Bearer {self._token}"},
                ssl=self._ssl,
                proxy=None,  # the token goes where the URL says, never to a proxy
                max_size=64 << 20,
                ping_interval=None,  # pings are sent at the hub's idle timeout (welcome)
                open_timeout=10,
            )
        except InvalidStatus as err:
            status, body = err.response.status_code, bytes(err.response.body or b"")
            if status in FALLBACK_STATUSES:
                raise Refused(f"HTTP {status}: {body[:200]!r}") from err
            raise _wire_error(status, body) from err
        except (OSError, WebSocketException, asyncio.TimeoutError) as err:
            raise _wire.unreachable(err) from err
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if welcome.get("type") != "welcome":
            await ws.close()
            raise errors.SheratanError("INTERNAL", f"the stream's first frame is not its welcome: {welcome}")
        if welcome.get("warning"):
            log.warning("worker stream: %s", welcome["warning"])
        leases = self._running()
        if leases:
            await ws.send(json.dumps({"type": "resume", "leases": leases}))
        # Results (and a stop) asked for while these sends wait are looked for again: the loop
        # ends only after a look with nothing left to send and no await since, so whatever is
        # asked after it finds the connection.
        sent: set[int] = set()
        stop_sent = False
        while True:
            replays = [(i, r) for i, (r, _) in self._pending.items() if r is not None and i not in sent]
            stop_due = self._stopping and not stop_sent
            if not replays and not stop_due:
                break
            for frame_id, replay in replays:
                await ws.send(replay)
                sent.add(frame_id)
            if stop_due:
                await ws.send(json.dumps({"type": "stop"}))
                stop_sent = True
        self._ws = ws
        return max(welcome.get("idle_timeout_ms", 60_000), 300) / 1000

    async def _carry(self, idle: float) -> None:
        """Reads frames; after a loss connects again (100 ms doubling to 10 s)."""
        while True:
            ws = self._ws
            assert ws is not None
            pinger = asyncio.create_task(self._ping(ws, idle / 3))
            why = "the connection ended"
            try:
                async for message in ws:
                    self._deliver(json.loads(message))
            except ConnectionClosed as err:
                why = str(err)
            except ValueError as err:
                why = f"an unreadable frame: {err}"
            finally:
                pinger.cancel()
            self._ws = None
            for frame_id, (replay, answer) in list(self._pending.items()):
                if replay is None:
                    del self._pending[frame_id]
                    if not answer.done():
                        answer.set_exception(errors.Unavailable("UNAVAILABLE", f"the worker stream was lost: {why}"))
            if self._closing:
                self._stopped.set()
                return
            log.warning("worker stream lost (%s); connecting again", why)
            wait = 0.1
            while True:
                await asyncio.sleep(wait * (0.8 + 0.4 * random.random()))
                try:
                    idle = await self._connect()
                    break
                except (errors.SheratanError, Refused) as err:
                    log.warning("worker stream: connecting again failed: %s", err)
                    wait = min(wait * 2, 10.0)
            self._on_reconnect()

    @staticmethod
    async def _ping(ws: ClientConnection, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await ws.ping()
            except ConnectionClosed:
                return

    def _deliver(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "job":
            self._on_job(frame["job"])
        elif kind == "ended":
            self._on_ended(frame["lease_id"])
        elif kind == "stopped":
            self._stopped.set()
        elif "id" in frame and frame["id"] in self._pending:
            _, answer = self._pending.pop(frame["id"])
            if not answer.done():
                answer.set_result(frame)
        elif kind == "error":
            log.warning("worker stream: the hub refused a frame: %s", frame.get("error"))

    # -- what the worker sends ---------------------------------------------------------------

    async def want(self, n: int) -> None:
        await self._send_now(json.dumps({"type": "want", "n": n}))

    async def stop(self, wait: float) -> None:
        """No more jobs; returns once the hub said the last one was pushed (at most `wait` s)."""
        self._stopped.clear()
        self._stopping = True
        await self._send_now(json.dumps({"type": "stop"}))
        try:
            await asyncio.wait_for(self._stopped.wait(), wait)
        except asyncio.TimeoutError:
            pass

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=5)

    async def extend(self, lease_id: str) -> dict[str, Any]:
        return await self._call({"type": "extend", "lease_id": lease_id}, None, replay=False)

    async def progress(self, lease_id: str, report: dict[str, Any]) -> dict[str, Any]:
        return await self._call({"type": "progress", "lease_id": lease_id}, report, replay=False)

    async def report(self, report: dict[str, Any], traceparent: str | None) -> dict[str, Any]:
        """A result, sent again after a reconnect until the hub answers it."""
        line: dict[str, Any] = {"type": "result"}
        if traceparent:
            line["traceparent"] = traceparent
        return await self._call(line, report, replay=True)

    async def _call(self, line: dict[str, Any], body: Any, replay: bool) -> dict[str, Any]:
        frame_id = self._next_id
        self._next_id += 1
        line = {**line, "id": frame_id}
        text = json.dumps(line)
        if body is not None:
            raw, headers = _wire.signed(body, self._token)
            line["content_sha256"] = headers["X-Sheratan-Content-Sha256"]
            line["signature"] = headers["X-Sheratan-Signature"]
            text = json.dumps(line) + "\n" + raw.decode()
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if self._ws is None and not replay:
            raise errors.Unavailable("UNAVAILABLE", "the worker stream is connecting again")
        self._pending[frame_id] = (text if replay else None, answer)
        if self._ws is not None:
            try:
                await self._ws.send(text)
            except ConnectionClosed as err:
                if not replay:
                    self._pending.pop(frame_id, None)
                    raise errors.Unavailable("UNAVAILABLE", f"the worker stream was lost: {err}") from err
        frame = await answer
        if frame.get("type") == "error":
            raise _frame_error(frame.get("error") or {})
        return frame["answer"]

    async def _send_now(self, text: str) -> None:
        if self._ws is None:
            return  # asked again after the reconnect
        try:
            await self._ws.send(text)
        except ConnectionClosed:
            pass


def _wire_error(status: int, body: bytes) -> errors.SheratanError:
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    return errors.from_response(status, parsed, None)

