"""Traces (docs/API.md, "Traces"): the W3C `traceparent` a leased job carries, a span per
handler run as its child, and export over OTLP/HTTP with the JSON encoding when
`SHERATAN_OTLP_ENDPOINT` is set (as the Rust components do; no OpenTelemetry dependency).

Export never slows a job: a finished span goes into a bounded queue; one thread posts batches;
a full queue or a collector that is down drops spans and counts them (`Tracer.dropped`)."""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

log = logging.getLogger("sheratan.trace")

ENDPOINT_ENV = "SHERATAN_OTLP_ENDPOINT"
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_QUEUE = 4096
_BATCH = 512
_LINGER_S = 0.2
_WARN_EVERY_S = 60.0


@dataclass(frozen=True)
class TraceContext:
    trace_id: str
    span_id: str
    flags: int

    @staticmethod
    def parse(text: str | None) -> "TraceContext | None":
        """A well-formed version-00 `traceparent` with non-zero ids, else None (a bad value is
        never passed on)."""
        if not text:
            return None
        m = _TRACEPARENT.fullmatch(text.strip())
        if m is None or set(m[1]) == {"0"} or set(m[2]) == {"0"}:
            return None
        return TraceContext(m[1], m[2], int(m[3], 16))

    @staticmethod
    def root() -> "TraceContext":
        return TraceContext(_nonzero(16), _nonzero(8), 1)

    def child(self) -> "TraceContext":
        return TraceContext(self.trace_id, _nonzero(8), self.flags)

    def header(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"


def _nonzero(n: int) -> str:
    while True:
        value = secrets.token_hex(n)
        if set(value) != {"0"}:
            return value


@dataclass
class Span:
    """A span in progress; `end()` exports it (once)."""

    tracer: "Tracer | None"
    context: TraceContext | None
    name: str = ""
    parent: str | None = None
    start_ns: int = 0
    attributes: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    def traceparent(self) -> str | None:
        """What the next hop gets: this span's context, or (export off) the parent's as it came."""
        return self.context.header() if self.context else None

    def attr(self, key: str, value: Any) -> None:
        self.attributes[key] = _capped(str(value))

    def fail(self, why: str) -> None:
        self.error = _capped(why)

    def end(self) -> None:
        tracer, self.tracer = self.tracer, None
        if tracer is not None:
            tracer._send(self, time.time_ns())


MAX_TEXT = 256


def _capped(text: str) -> str:
    """Attribute values and failure messages are cut at 256 bytes: a queued span stays small."""
    raw = text.encode()
    return text if len(raw) <= MAX_TEXT else raw[:MAX_TEXT].decode(errors="ignore") + "…"


class Tracer:
    """`Tracer(endpoint, service)`; with no endpoint, spans only carry context."""

    def __init__(self, endpoint: str | None, service: str) -> None:
        self.service = service
        self.exported = 0
        self.dropped = 0
        self._url = traces_url(endpoint) if endpoint else None
        self._queue: queue.Queue[tuple[Span, int]] = queue.Queue(maxsize=_QUEUE)
        self._warned = 0.0
        self._counting = threading.Lock()
        if self._url:
            log.info("exporting trace spans to %s (OTLP/HTTP, JSON)", self._url)
            threading.Thread(target=self._export_loop, name="sheratan-trace", daemon=True).start()

    @staticmethod
    def from_env(service: str) -> "Tracer":
        return Tracer(os.environ.get(ENDPOINT_ENV) or None, service)

    @property
    def enabled(self) -> bool:
        return self._url is not None

    def start(self, name: str, parent: str | None) -> Span:
        """A span named `name`, child of the `traceparent` `parent` (a new trace if none)."""
        context = TraceContext.parse(parent)
        if not self.enabled:
            return Span(None, context)
        own = context.child() if context else TraceContext.root()
        exported = self if own.flags & 1 else None
        return Span(exported, own, name, context.span_id if context else None, time.time_ns())

    def _send(self, span: Span, end_ns: int) -> None:
        try:
            self._queue.put_nowait((span, end_ns))
        except queue.Full:
            with self._counting:
                self.dropped += 1

    def _export_loop(self) -> None:
        with httpx.Client(timeout=5.0) as http:
            while True:
                batch = [self._queue.get()]
                deadline = time.monotonic() + _LINGER_S
                while len(batch) < _BATCH:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        batch.append(self._queue.get(timeout=left))
                    except queue.Empty:
                        break
                self._export(http, batch)

    def _export(self, http: httpx.Client, batch: list[tuple[Span, int]]) -> None:
        assert self._url is not None
        try:
            response = http.post(self._url, content=json.dumps(self._request(batch)), headers={"Content-Type": "application/json"})
            failure = None if response.is_success else f"the collector answered {response.status_code}"
        except httpx.HTTPError as err:
            failure = f"the collector is unreachable: {err}"
        with self._counting:
            if failure is None:
                self.exported += len(batch)
                return
            self.dropped += len(batch)
        if time.monotonic() - self._warned >= _WARN_EVERY_S or self._warned == 0.0:
            self._warned = time.monotonic()
            log.warning("trace spans dropped (%d so far): %s; jobs are not affected", self.dropped, failure)

    def _request(self, batch: list[tuple[Span, int]]) -> dict[str, Any]:
        """One ExportTraceServiceRequest in OTLP's JSON encoding."""
        spans = []
        for span, end_ns in batch:
            assert span.context is not None
            item: dict[str, Any] = {
                "traceId": span.context.trace_id,
                "spanId": span.context.span_id,
                "name": span.name,
                "kind": 5,  # CONSUMER: a handler runs a job it was handed
                "startTimeUnixNano": str(span.start_ns),
                "endTimeUnixNano": str(end_ns),
                "attributes": [_attribute(k, v) for k, v in span.attributes.items()],
                "status": {"code": 1} if span.error is None else {"code": 2, "message": span.error},
            }
            if span.parent:
                item["parentSpanId"] = span.parent
            spans.append(item)
        return {
            "resourceSpans": [
                {
                    "resource": {"attributes": [_attribute("service.name", self.service)]},
                    "scopeSpans": [{"scope": {"name": "sheratan-python"}, "spans": spans}],
                }
            ]
        }


def _attribute(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def traces_url(endpoint: str) -> str:
    """The collector's OTLP/HTTP base URL → its traces URL; credentials in it are refused."""
    parts = urlsplit(endpoint.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{ENDPOINT_ENV}: not an http(s) URL with a host; e.g. http://127.0.0.1:4318")
    if parts.username or parts.password:
        raise ValueError(f"{ENDPOINT_ENV}: credentials in the URL are not accepted")
    if parts.query or parts.fragment:
        raise ValueError(f"{ENDPOINT_ENV}: a query or fragment is not accepted (keys in URLs end up in logs)")
    path = parts.path.rstrip("/")
    if not path.endswith("/v1/traces"):
        path += "/v1/traces"
    return f"{parts.scheme}://{parts.netloc}{path}"
