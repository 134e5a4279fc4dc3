"""Traces into the Python worker: a trace the submitting application started continues
through the hub (its submit, lease and result spans) into the Python handler's span, all
exported over OTLP/HTTP to a small real collector in the test; a collector that is down costs
spans, not jobs."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import sheratan
from conftest import start_hub
from sheratan._trace import TraceContext, traces_url
from test_worker import until, worker

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
APP_SPAN = "00f067aa0ba902b7"


class Collector:
    """Keeps the spans of every OTLP/JSON export request, with their service name."""

    def __init__(self) -> None:
        spans: list[dict] = []
        self.spans = spans

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 — http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                ok = self.path == "/v1/traces" and self.headers["Content-Type"] == "application/json"
                for resource in body.get("resourceSpans", []) if ok else []:
                    service = resource["resource"]["attributes"][0]["value"]["stringValue"]
                    for scope in resource["scopeSpans"]:
                        spans.extend({**s, "service": service} for s in scope["spans"])
                self.send_response(200 if ok else 400)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def named(self, name: str, trace: str = TRACE) -> dict:
        found = [s for s in self.spans if s["name"] == name and s["traceId"] == trace]
        assert len(found) == 1, f"one {name}: {self.spans}"
        return found[0]


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.server.shutdown()


def test_a_submitters_trace_continues_into_the_python_handler(collector):
    hub = start_hub({"SHERATAN_OTLP_ENDPOINT": collector.url})
    try:
        handlers = {"py.traced": lambda p: {"ok": p}, "py.fails": lambda p: 1 / 0}
        with worker(hub, handlers, otlp_endpoint=collector.url), sheratan.Client(hub.data_url, hub.token) as client:
            job = client.submit("py.traced", 7, traceparent=f"00-{TRACE}-{APP_SPAN}-01")
            assert client.wait(job["job_id"], timeout=30) == {"ok": 7}
            names = {"sheratan.submit", "sheratan.lease", "sheratan.handler", "sheratan.result"}
            until(lambda: names <= {s["name"] for s in collector.spans if s["traceId"] == TRACE}, what="four spans")
            submit, lease = collector.named("sheratan.submit"), collector.named("sheratan.lease")
            handler, result = collector.named("sheratan.handler"), collector.named("sheratan.result")
            assert submit["parentSpanId"] == APP_SPAN
            assert lease["parentSpanId"] == submit["spanId"]
            assert handler["parentSpanId"] == lease["spanId"]
            assert result["parentSpanId"] == handler["spanId"]
            assert handler["service"] == "sheratan-python-worker" and submit["service"] == "sheratan-hub"
            assert {"key": "sheratan.job_id", "value": {"stringValue": job["job_id"]}} in handler["attributes"]
            assert int(handler["endTimeUnixNano"]) >= int(handler["startTimeUnixNano"]) > 0
            # A failing handler's span says so.
            other = "5bf92f3577b34da6a3ce929d0e0e4737"
            failed = client.submit("py.fails", None, max_attempts=1, traceparent=f"00-{other}-{APP_SPAN}-01")
            with pytest.raises(sheratan.JobFailed):
                client.wait(failed["job_id"], timeout=30)
            until(lambda: any(s["name"] == "sheratan.handler" and s["traceId"] == other for s in collector.spans),
                  what="the failed handler's span")
            status = collector.named("sheratan.handler", other)["status"]
            assert status["code"] == 2 and "ZeroDivisionError" in status["message"]
    finally:
        hub.process.terminate()
        hub.process.wait(timeout=30)


def test_a_collector_that_is_down_drops_spans_and_the_jobs_run(hub):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
    with worker(hub, {"py.ok": lambda p: p}, otlp_endpoint=down) as w, sheratan.Client(hub.data_url, hub.token) as client:
        for i in range(3):
            job = client.submit("py.ok", i, traceparent=f"00-{TRACE}-{APP_SPAN}-01")
            assert client.wait(job["job_id"], timeout=30) == i
        until(lambda: w.tracer.dropped >= 3, what="three dropped spans")
        assert w.tracer.exported == 0


def test_trace_contexts_and_endpoints_are_checked():
    good = f"00-{TRACE}-{APP_SPAN}-01"
    assert TraceContext.parse(good).header() == good
    for bad in ["", good.upper(), good + "-x", f"01-{TRACE}-{APP_SPAN}-01", f"00-{'0' * 32}-{APP_SPAN}-01", "x" * 5000]:
        assert TraceContext.parse(bad) is None, bad
    assert traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert traces_url("https://c/otlp/v1/traces") == "https://c/otlp/v1/traces"
    for bad in ["ftp://c", "c:4318", "http://u:p@c:4318", "http://c:4318/?api_key=x", "http://c/#f"]:
        with pytest.raises(ValueError):
            traces_url(bad)
    # With export off a handler still passes the job's context on unchanged.
    span = sheratan._trace.Tracer(None, "t").start("x", good)
    assert span.traceparent() == good
    time.sleep(0)
